"""The interface every distillation method implements, and the registry.

A method is an ``nn.Module`` subclass of ``Distiller``, registered by name with
``@register_method``. It declares what it needs from the harness (feature maps,
dataset indices, extra samples), owns its trainable modules (their parameters
join the student's optimizer) and returns *unweighted* named loss terms; the
harness multiplies each term by ``loss_weights()[term]``, sums, and logs both.
Cross-entropy on the labels is the term ``"ce"``, computed by the harness so a
composed method (``crd+kd``) has exactly one.

The training loop never looks at a method's name: everything it does for a
method follows from these declarations.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from benchmarks.models.registry import ModelOutput

__all__ = [
    "Batch",
    "BuildContext",
    "Distiller",
    "register_method",
    "list_methods",
    "method_class",
    "method_needs",
    "build_method",
    "method_defaults",
    "validate_method",
    "UnknownMethodError",
    "HyperparameterError",
]


@dataclass
class BuildContext:
    """What a method may look at when it builds its modules.

    student / teacher: ``ModelOutput`` of a probe forward (batch of 2, the
    dataset's input size, eval mode, no grad), so adapters can be sized from
    real shapes (RepDistiller sizes its ConvReg / Embed modules the same way).
    train_labels: labels of the whole training set, CPU int64, indexed by the
    dataset index the harness passes in ``Batch.index``.
    """

    student: ModelOutput
    teacher: ModelOutput | None
    num_classes: int
    train_labels: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())


@dataclass
class Batch:
    """One training batch as a method sees it.

    x, y, index are shared by every student of a cohort; ``extras`` is this
    method's own: what ``prepare`` returned, plus ``"extra_student"`` (the
    student's ``ModelOutput`` on the samples named by ``"extra_index"``) when
    the method asked for extra samples.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class HyperparameterError(ValueError):
    pass


class Distiller(nn.Module):
    """Base class of all methods.

    Subclasses set ``name`` (via ``@register_method``), ``defaults`` (every
    hyperparameter, loss weights included, with their source in the module
    docstring) and implement ``loss_weights`` and ``losses``.

    Declarations the harness reads:
      needs_teacher   run the teacher on the batch (False only for ``vanilla``)
      needs_features  pass stage features / embeddings (else only logits are
                      guaranteed to be meaningful)
      needs_preact    ask the models for pre-activation features
      ce_weight_key   the hyperparameter that weights the ``"ce"`` term
      combined_defaults  overrides applied when this method is a secondary
                      part of a composition (``crd+kd`` gives kd alpha=1)
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    combined_defaults: ClassVar[dict[str, Any]] = {}
    ce_weight_key: ClassVar[str] = "gamma"
    needs_teacher: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False
    needs_preact: ClassVar[bool] = False

    def __init__(self, ctx: BuildContext, **hparams: Any):
        super().__init__()
        self.hparams: dict[str, Any] = resolve_hparams(self.name, self.defaults, hparams)
        self.check_hparams(self.hparams)

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any]) -> None:
        """Reject values the type check cannot (a bad choice, a negative margin): raise HyperparameterError.

        Called by ``validate_method`` before any work starts, and again on construction.
        """

    def __getattr__(self, item: str):
        # read-only convenience: self.T, self.beta, ... read the hyperparameters
        hp = self.__dict__.get("hparams")
        if hp is not None and item in hp:
            return hp[item]
        return super().__getattr__(item)

    # --- what the harness calls -------------------------------------------
    def ce_weight(self) -> float:
        return float(self.hparams[self.ce_weight_key]) if self.ce_weight_key else 0.0

    def loss_weights(self) -> dict[str, float]:
        """Weight of each term ``losses`` returns (the ``"ce"`` term excluded)."""
        return {}

    def prepare(self, batch: Batch, generator: torch.Generator) -> dict[str, Any]:
        """Draw what this method needs before the forward pass (negatives, ...).

        Use only ``generator`` for randomness (it is this run's own, so a
        cohort of methods draws exactly what solo runs draw). Return
        ``{"extra_index": LongTensor}`` to have the harness run the student on
        those training samples (augmented) and hand the result back as
        ``batch.extras["extra_student"]``.
        """
        return {}

    def losses(
        self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch
    ) -> dict[str, torch.Tensor]:
        return {}

    def extra_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# --- registry ---------------------------------------------------------------
_METHODS: dict[str, type[Distiller]] = {}


def register_method(name: str):
    """Class decorator: ``@register_method("kd") class KD(Distiller): ...``."""

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        if "+" in name or name in _METHODS:
            raise ValueError(f"cannot register method {name!r}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Distiller]:
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; known methods: {', '.join(list_methods())} "
            f"(combine with '+', e.g. crd+kd)"
        ) from None


def _parts(name: str) -> list[str]:
    parts = [p.strip() for p in name.split("+")]
    if not all(parts) or len(set(parts)) != len(parts):
        raise UnknownMethodError(f"bad method name {name!r}: expected e.g. 'kd' or 'crd+kd'")
    for p in parts:
        method_class(p)
    if len(parts) > 1 and "vanilla" in parts:
        raise UnknownMethodError("'vanilla' (the student alone) cannot be combined with other methods")
    return parts


def method_needs(name: str, need: str) -> bool:
    """Whether method ``name`` has the declaration ``need`` (``"needs_teacher"``, ...) without building it:
    a composition (``crd+kd``) has it when any part has, as ``Composite`` sets it on its instance."""
    return any(getattr(method_class(part), need) for part in _parts(name))


def method_defaults(name: str) -> dict[str, dict[str, Any]]:
    """Resolved default hyperparameters of ``name``, per part: ``{"crd": {...}, "kd": {...}}``."""
    out = {}
    for i, part in enumerate(_parts(name)):
        cls = method_class(part)
        hp = copy.deepcopy(cls.defaults)
        if i > 0:
            hp.update(cls.combined_defaults)
        out[part] = hp
    return out


def validate_method(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Check ``name`` and the overrides that apply to it; return the resolved hyperparameters.

    ``overrides`` maps a method name to ``{key: value}`` (from ``--set
    triplet.margin=2``). Keys for methods that are not part of ``name`` are
    ignored here (a grid applies one set of overrides to all its methods);
    ``check_override_keys`` checks them against the registry.
    """
    resolved = method_defaults(name)
    for part, hp in resolved.items():
        hp.update(resolve_hparams(part, hp, (overrides or {}).get(part, {})))
        method_class(part).check_hparams(hp)
    return resolved


def check_override_keys(overrides: dict[str, dict[str, Any]]) -> None:
    """Every override names a registered method and one of its hyperparameters."""
    for part, kv in overrides.items():
        cls = method_class(part)
        cls.check_hparams(resolve_hparams(part, cls.defaults, kv))


def resolve_hparams(method: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
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


def build_method(
    name: str, ctx: BuildContext, overrides: dict[str, dict[str, Any]] | None = None
) -> Distiller:
    """Build method ``name`` (``"kd"``, ``"crd+kd"``) with its resolved hyperparameters."""
    resolved = validate_method(name, overrides)
    parts = [method_class(p)(ctx, **hp) for p, hp in resolved.items()]
    if len(parts) == 1:
        return parts[0]
    from .composite import Composite

    return Composite(name, parts)
