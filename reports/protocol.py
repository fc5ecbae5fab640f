"""The published protocol, and how a run's protocol differs from it.

The published CIFAR-100 numbers (``reports/data/cifar100_published.csv``) were made under
RepDistiller's protocol: the ``cifar100`` preset (240 epochs, batch 64, lr 0.05 or 0.01 for
MobileNetV2/ShuffleV1/V2 students, x0.1 at 150/180/210, momentum 0.9, wd 5e-4), CIFAR-100's full
50,000-image training set with RepDistiller's augmentation (random crop 32, padding 4, horizontal
flip), and each method's registered default hyperparameters with the preset's per-pair values.

A run's protocol is read from its record (``dataset``, ``config.train``, ``config.data``,
``config.method``); a field the record lacks counts as a difference ("not recorded"): a number is
compared with a published one only when every field is known to match.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kdcore.config import load_preset, method_overrides, student_recipe, teacher_recipe
from kdcore import MethodCatalogue

__all__ = ["Diff", "REFERENCE_PRESET", "REFERENCE_DATA", "reference_recipe", "run_differences",
           "teacher_differences", "fmt_value", "NOT_RECORDED"]

REFERENCE_PRESET = "cifar100"
# CIFAR-100 as RepDistiller loads it: all 50,000 training images, crop 32 with padding 4, flip
REFERENCE_DATA = {"num_train": 50000, "num_test": 10000, "input_shape": [3, 32, 32], "pad": 4, "flip": True}
# the recipe fields that change what a run computes (eval_batch_size does not)
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_decay_epochs", "lr_decay_rate")
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Diff:
    """One way a run differs from the published protocol: ``key`` = ``ours`` here, ``ref`` there."""

    key: str  # "train.epochs", "data.num_train", "dataset", "method.kd.T", "teacher.train.epochs"
    ours: str
    ref: str


@lru_cache(maxsize=None)
def _preset() -> dict:
    return load_preset(REFERENCE_PRESET)


def reference_recipe(model: str, teacher: bool = False) -> dict[str, Any]:
    """The published training recipe of a student (or, with ``teacher``, a teacher) model."""
    r = (teacher_recipe if teacher else student_recipe)(_preset(), model).as_dict()
    return {k: r[k] for k in RECIPE_FIELDS}


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _compare(prefix: str, ours: dict, ref: dict) -> list[Diff]:
    if not ours and ref:  # the whole section is missing: one line, not one per field
        return [Diff(prefix.rstrip("."), NOT_RECORDED, ", ".join(f"{k}={fmt_value(v)}" for k, v in ref.items()))]
    out = []
    for k, want in ref.items():
        if k not in ours or ours[k] is None:
            out.append(Diff(f"{prefix}{k}", NOT_RECORDED, fmt_value(want)))
        elif not _same(ours[k], want):
            out.append(Diff(f"{prefix}{k}", fmt_value(ours[k]), fmt_value(want)))
    return out


def _data_differences(dataset: Any, data: Any) -> list[Diff]:
    out = []
    if dataset is None:
        out.append(Diff("dataset", NOT_RECORDED, REFERENCE_PRESET))
    elif str(dataset) != REFERENCE_PRESET:
        out.append(Diff("dataset", str(dataset), REFERENCE_PRESET))
    out += _compare("data.", data if isinstance(data, dict) else {}, REFERENCE_DATA)
    return out


def _method_differences(method: str, pair: str | None, resolved: Any, catalogue: MethodCatalogue | None) -> list[Diff]:
    """The run's resolved hyperparameters against the published ones: the method's registered defaults
    with the reference preset's values for this pair (``[method]``, ``[method_by_pair]``: DKD's beta of
    each pair, from mdistiller's configs). Without the registry (``catalogue``) they are not compared."""
    if catalogue is None:
        return [Diff(f"method.{method}", "not compared", "registered defaults (the report was built without "
                     "the method registry)")]
    try:
        reference = catalogue.reference_hparams(method, method_overrides(_preset(), pair or ""))
    except Exception:  # a method this checkout does not have: nothing to compare with
        return [Diff(f"method.{method}", "not in this registry", "registered defaults")]
    resolved = resolved if isinstance(resolved, dict) else {}
    out = []
    for part, hp in reference.items():
        out += _compare(f"method.{part}.", resolved.get(part) if isinstance(resolved.get(part), dict) else {}, hp)
    return out


def run_differences(method: str, student: str, dataset: Any, config: Any, pair: str | None = None,
                    catalogue: MethodCatalogue | None = None) -> list[Diff]:
    """Every way one student run's protocol (from its record) differs from the published one."""
    config = config if isinstance(config, dict) else {}
    out = _data_differences(dataset, config.get("data"))
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    out += _compare("train.", train, reference_recipe(student))
    out += _method_differences(method, pair, config.get("method"), catalogue)
    return out


def teacher_differences(teacher: str, info: Any, dataset: Any, config: Any,
                        grid_config: dict | None = None) -> list[Diff]:
    """How the teacher of one run differs from the published protocol.

    A teacher trained by kdbench is checked against the published teacher recipe: its own
    ``recipe`` when the record's ``teacher_info`` carries it, else the grid's recorded
    ``train``/``teacher_train`` sections. An imported teacher's training is not ours to check:
    only its evaluation data is.
    """
    info = info if isinstance(info, dict) else {}
    config = config if isinstance(config, dict) else {}
    out = _data_differences(dataset, config.get("data"))
    if info.get("source") == "imported":
        return out
    recipe = info.get("recipe")
    if not isinstance(recipe, dict):
        recipe = None
        gc = grid_config or {}
        if isinstance(gc.get("train"), dict):
            try:
                recipe = teacher_recipe(gc, teacher).as_dict()
            except Exception:
                recipe = None
    out += _compare("teacher.train.", recipe or {}, reference_recipe(teacher, teacher=True))
    return out
