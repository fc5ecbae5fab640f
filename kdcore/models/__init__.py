"""The model zoo: RepDistiller's CIFAR models, the seed paper's networks (``oki``), plus any timm model
(``timm:<name>``).

Adding a model is one file in this folder: a factory decorated with ``@register_model`` (docs: "Adding a
model"). Every module of this package is imported here (sorted by name), which registers its models, as
``methods`` does for methods; build one with ``create_model(name, num_classes=...)``.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .registry import KDModel, ModelOutput, UnknownModelError, create_model, list_models, register_model

__all__ = ["ModelOutput", "KDModel", "register_model", "create_model", "list_models", "UnknownModelError"]

# registration happens on import: every module of this folder is a model file, except the registry and
# the timm wrapper it uses
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _module not in ("registry", "timm_adapter"):
        _importlib.import_module(f"{__name__}.{_module}")
