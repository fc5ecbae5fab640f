"""The contract between models, methods and the training loop, in one small module all three import.

``kdcore`` imports only torch: models (``kdcore.models``) build ``ModelOutput``s
and subclass ``KDModel``; methods (``methods``) read them through ``Batch``,
``BuildContext`` and ``Progress``; neither imports the other.
"""
from .contract import Batch, BuildContext, KDModel, MethodCatalogue, ModelOutput, Progress, ViewOutput

__all__ = ["Batch", "BuildContext", "KDModel", "MethodCatalogue", "ModelOutput", "Progress", "ViewOutput"]
