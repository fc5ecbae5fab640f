"""The registry: ``build_method("crd+kd", ctx)``, ``list_methods()``.

Adding a method is one file in this folder: subclass ``Distiller``, decorate
it with ``@register_method("name")``, import it below (README, "Adding a method").
Importing ``methods`` loads torch, ``kdcore`` (the model/method contract) and
the method files, never ``benchmarks`` or a model file.
"""
from .base import (  # noqa: F401
    Batch,
    BuildContext,
    Choice,
    Composite,
    Distiller,
    HyperparameterError,
    ModelOutput,
    Progress,
    Range,
    UnknownMethodError,
    batch_coupling,
    build_method,
    check_override_keys,
    list_methods,
    method_class,
    method_defaults,
    method_needs,
    register_method,
    validate_method,
)

# one import per method file; registration happens on import
from . import vanilla, kd, fitnet, at, rkd, crd, triplet, pair  # noqa: F401,E402
