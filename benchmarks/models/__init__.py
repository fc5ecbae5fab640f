"""The model zoo: RepDistiller's CIFAR models, the seed paper's networks (``oki``), plus any timm model
(``timm:<name>``).

Importing this package registers every built-in model; build one with
``create_model(name, num_classes=...)``.
"""
from .registry import KDModel, ModelOutput, UnknownModelError, create_model, list_models, register_model
from . import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401  (registration)
from . import oki  # noqa: F401,E402  (registration: the seed paper's networks)

__all__ = ["ModelOutput", "KDModel", "register_model", "create_model", "list_models", "UnknownModelError"]
