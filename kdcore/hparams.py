"""Hyperparameters: their declared ranges, type coercion and checks, before any work starts.

A method declares, beside ``defaults``, the valid values of each hyperparameter
in ``ranges``::

    defaults = {"T": 4.0, "gamma": 0.1, "alpha": 0.9, "negatives": "dataset"}
    ranges = {"T": Range(gt=0), "gamma": Range(ge=0), "alpha": Range(ge=0),
              "negatives": Choice("dataset", "batch")}

``validate_method`` (called by the runner before any teacher trains) checks the
type of every value against its default and its range, so ``--set kd.T=-1``
fails with ``kd.T must be > 0, got -1.0`` and exit 2.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["HyperparameterError", "Range", "Choice", "resolve_hparams", "check_ranges"]


class HyperparameterError(ValueError):
    pass


def _num(v: float) -> str:
    return repr(int(v)) if float(v).is_integer() else repr(v)


@dataclass(frozen=True)
class Range:
    """A number's bounds: ``Range(gt=0)`` (> 0), ``Range(ge=0)``, ``Range(ge=0, le=1)``, ``Range()`` (any finite number).

    For a list value every element must be in range.
    """

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def holds(self, v: Any) -> bool:
        """``v`` (or each element of a list) is a finite number within the bounds: ``inf`` passes no
        "> 0" here (a run given it would only fail at its first step, after its teacher's training)."""
        if isinstance(v, (list, tuple)):
            return all(self.holds(e) for e in v)
        return (_finite(v) and (self.gt is None or v > self.gt) and (self.ge is None or v >= self.ge)
                and (self.lt is None or v < self.lt) and (self.le is None or v <= self.le))

    def describe(self) -> str:
        if self.ge is not None and self.le is not None and self.gt is None and self.lt is None:
            return f"in [{_num(self.ge)}, {_num(self.le)}]"
        parts = [f"{op} {_num(b)}" for op, b in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                 if b is not None]
        return " and ".join(parts) or "any finite number"

    def error(self, key: str, v: Any) -> str:
        if not all(_finite(e) for e in (v if isinstance(v, (list, tuple)) else [v])):
            bounds = self.describe()
            return f"{key} must be a finite number{'' if bounds == 'any finite number' else ' ' + bounds}, got {v!r}"
        return f"{key} must be {self.describe()}, got {v!r}"


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


@dataclass(frozen=True, init=False)
class Choice:
    """One of the given names: ``Choice("dataset", "batch")``."""

    names: tuple[str, ...]

    def __init__(self, *names: str):
        object.__setattr__(self, "names", tuple(names))

    def holds(self, v: Any) -> bool:
        return v in self.names

    def describe(self) -> str:
        return f"one of {', '.join(self.names)}"

    def error(self, key: str, v: Any) -> str:
        return f"{key} must be {self.describe()}, got {v!r}"


def check_ranges(method: str, ranges: dict[str, Range | Choice], hparams: dict[str, Any]) -> None:
    """Raise HyperparameterError for the first value outside its declared range."""
    for key, spec in ranges.items():
        if key in hparams and not spec.holds(hparams[key]):
            raise HyperparameterError(spec.error(f"{method}.{key}", hparams[key]))


def resolve_hparams(method: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``, each value coerced to its default's type."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if key not in defaults:
            raise HyperparameterError(
                f"unknown hyperparameter {method}.{key}; {method} has: {', '.join(sorted(defaults)) or '(none)'}"
            )
        out[key] = _coerce(method, key, defaults[key], value)
    return out


def _coerce(method: str, key: str, default: Any, value: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
    else:
        return value
    raise HyperparameterError(
        f"{method}.{key} must be {'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__} "
        f"(default {default!r}), got {value!r}"
    )
