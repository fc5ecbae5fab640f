"""kdcore: the library kdbench stands on.

Importing ``kdcore`` loads only the contract (``kdcore.contract``: ``ModelOutput``, ``KDModel``,
``Batch``, ``BuildContext``, ``Progress``, ``ViewOutput``, ``MethodCatalogue``); the rest is imported
by name: ``kdcore.distiller`` (the method base class), ``kdcore.models`` (the model zoo),
``kdcore.data`` (datasets), ``kdcore.recipe`` and ``kdcore.train`` (the one training loop),
``kdcore.records``/``kdcore.recorder`` (run records), ``kdcore.curves`` (TensorBoard),
``kdcore.config`` (presets, ``kdcore/presets/*.toml``).

Layers point one way: ``kdcore`` imports nothing of ours above it; ``methods`` (the registry of
distillation methods) and ``reports`` (records -> tables and figures) import ``kdcore`` only; the
application ``benchmarks`` (CLI, grid, teachers, DDP, scale-out, speed, API) imports all three
(``tests/test_layers.py``).
"""
from .contract import Batch, BuildContext, KDModel, MethodCatalogue, ModelOutput, Progress, ViewOutput

__all__ = ["Batch", "BuildContext", "KDModel", "MethodCatalogue", "ModelOutput", "Progress", "ViewOutput"]
