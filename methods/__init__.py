"""The registry: ``build_method("crd+kd", ctx)``, ``list_methods()``.

Adding a method is one file in this folder: subclass ``Distiller`` and decorate
it with ``@register_method("name")`` (docs/guides/method.md). Every module of
this package is imported here (sorted by name), which registers its methods.
Importing ``methods`` loads torch, ``kdcore`` (the model/method contract) and
the method files, never ``benchmarks`` or a model file.
"""
from .base import (  # noqa: F401
    CATALOGUE,
    Batch,
    BuildContext,
    Choice,
    Composite,
    Distiller,
    HyperparameterError,
    ModelOutput,
    Progress,
    ViewOutput,
    Range,
    Stage,
    PairNotSupported,
    UnknownMethodError,
    batch_coupling,
    build_method,
    check_override_keys,
    list_methods,
    list_modifiers,
    modifiable_by,
    modified_methods,
    method_views,
    method_stages,
    method_class,
    method_defaults,
    method_needs,
    register_method,
    validate_method,
)

import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

# registration happens on import: every module of this folder is a method file, except the
# interface (base) and the hyperparameter checks it uses (hparams)
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if _module not in ("base", "hparams"):
        _importlib.import_module(f"{__name__}.{_module}")
