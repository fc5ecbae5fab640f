"""The interface every distillation method implements, compositions, and the registry.

A method is an ``nn.Module`` subclass of ``Distiller``, registered by name with
``@register_method``. It declares what it needs from the harness (feature maps,
dataset indices, extra samples), the valid range of each hyperparameter,
whether its loss couples the samples of a batch, owns its trainable modules
(their parameters join the student's optimizer) and returns *unweighted* named
loss terms; the harness multiplies each term by ``loss_weights()[term]``, sums,
and logs both. Cross-entropy on the labels is the term ``"ce"``, computed by the
harness so a composed method (``crd+kd``) has exactly one. ``self.progress``
(``Progress``: fractional epoch and total) is current whenever the harness calls
``prepare``, ``losses`` or ``loss_weights``, so a weight can follow a schedule.
``losses`` and ``stage_losses`` run with autocast off and receive float32 outputs (cast up when the
forwards ran under bf16 autocast), so a method computes its formula in float32, as the references do.

The training loop never looks at a method's name: everything it does for a
method follows from these declarations.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from kdcore import Batch, BuildContext, ModelOutput, Progress, ViewOutput

from kdcore.distiller import Distiller, PairNotSupported, Stage
from kdcore.hparams import Choice, HyperparameterError, Range, resolve_hparams

__all__ = [
    "Batch",
    "BuildContext",
    "ModelOutput",
    "Progress",
    "ViewOutput",
    "Distiller",
    "Composite",
    "CATALOGUE",
    "Stage",
    "PairNotSupported",
    "Range",
    "Choice",
    "register_method",
    "list_methods",
    "list_modifiers",
    "modifiable_by",
    "modified_methods",
    "method_views",
    "method_stages",
    "method_class",
    "method_needs",
    "build_method",
    "batch_coupling",
    "method_defaults",
    "validate_method",
    "check_override_keys",
    "resolve_hparams",
    "UnknownMethodError",
    "HyperparameterError",
]


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Composite(Distiller):
    """A composition of methods, e.g. ``crd+kd``: one CE term, every part's own terms.

    The CE weight is the first part's (``crd+kd`` trains with CRD's gamma=1, as
    RepDistiller's CRD+KD row: ``-r 1 -a 1 -b 0.8``); secondary parts contribute
    their distillation terms with their ``combined_defaults`` applied (kd: alpha=1).
    Term names must not collide; extras drawn in ``prepare`` are merged. A
    declaration holds when any part's holds (``needs_*``, ``couples_batch``).
    """

    name = "composite"

    def __init__(self, name: str, parts: list[Distiller]):
        nn.Module.__init__(self)
        self.name = name
        self.parts = nn.ModuleList(parts)
        self.hparams = {p.name: p.hparams for p in parts}
        self.progress = Progress()
        for need in ("needs_teacher", "needs_features", "needs_preact", "couples_batch"):
            setattr(self, need, any(getattr(p, need) for p in parts))
        self.views = tuple(sorted({v for p in parts for v in p.views}))
        self.logit_transform = None
        seen: dict[str, str] = {}
        for p in parts:
            for term in p.loss_weights():
                if term in seen or term == "ce":
                    raise ValueError(f"loss term {term!r} of {p.name} collides with {seen.get(term, 'ce')}")
                seen[term] = p.name

    def set_progress(self, progress: Progress) -> None:
        self.progress = progress
        for p in self.parts:
            p.set_progress(progress)

    def ce_weight(self) -> float:
        return self.parts[0].ce_weight()

    def loss_weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            out.update(p.loss_weights())
        return out

    def prepare(self, batch: Batch, generator: torch.Generator) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        for p in self.parts:
            drawn = p.prepare(batch, generator)
            clash = extras.keys() & drawn.keys()
            if clash:
                raise ValueError(f"{self.name}: parts both draw {sorted(clash)}; they cannot be combined")
            extras.update(drawn)
        return extras

    def losses(self, student, teacher, batch):
        out: dict[str, torch.Tensor] = {}
        for p in self.parts:
            if p.needs_features or not self.needs_features:
                out.update(p.losses(student, teacher, batch))
            else:  # each part gets what it declared
                out.update(p.losses(_logits_only(student), _logits_only(teacher), batch))
        return out


def _logits_only(out: ModelOutput | None) -> ModelOutput | None:
    return None if out is None else out.logits_only()


# --- registry ---------------------------------------------------------------
_METHODS: dict[str, type[Distiller]] = {}


def register_method(name: str):
    """Class decorator: ``@register_method("kd") class KD(Distiller): ...``.

    Refuses a class whose ``ranges`` do not cover exactly its ``defaults``.
    """

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        if "+" in name or name in _METHODS:
            raise ValueError(f"cannot register method {name!r}")
        if set(cls.ranges) != set(cls.defaults):
            missing, extra = sorted(set(cls.defaults) - set(cls.ranges)), sorted(set(cls.ranges) - set(cls.defaults))
            raise ValueError(f"method {name!r}: ranges must declare every hyperparameter of defaults "
                             f"(missing {missing}, not in defaults {extra})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    """The methods that run on their own (modifiers such as ``ls`` are listed by ``list_modifiers``)."""
    return sorted(n for n, cls in _METHODS.items() if not cls.modifier)


def list_modifiers() -> list[str]:
    return sorted(n for n, cls in _METHODS.items() if cls.modifier)


def modifiable_by(modifier: str) -> list[str]:
    """The methods that declare how ``modifier`` changes them (``modifier_rules``): ``ls`` -> kd, dkd, ..."""
    return [m for m in list_methods() if modifier in _METHODS[m].modifier_rules]


def modified_methods() -> list[str]:
    """Every method written with every modifier it declares: ``ctkd+ls``, ``dkd+ls``, ``kd+ls``, ..."""
    return [f"{m}+{mod}" for mod in list_modifiers() for m in modifiable_by(mod)]


def method_class(name: str) -> type[Distiller]:
    try:
        return _METHODS[name]
    except KeyError:
        mods = list_modifiers()
        raise UnknownMethodError(
            f"unknown method {name!r}; known methods: {', '.join(list_methods())} "
            f"(combine with '+', e.g. crd+kd{'; modifiers: ' + ', '.join(mods) + ', e.g. kd+' + mods[0] if mods else ''})"
        ) from None


def _parts(name: str) -> list[str]:
    parts = [p.strip() for p in name.split("+")]
    if not all(parts):
        raise UnknownMethodError(f"bad method name {name!r}: expected e.g. 'kd' or 'crd+kd'")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise UnknownMethodError(f"bad method name {name!r}: it names {', '.join(twice)} twice (each part once, "
                                 f"e.g. 'crd+kd')")
    for p in parts:
        method_class(p)
    if len(parts) > 1 and "vanilla" in parts:
        raise UnknownMethodError("'vanilla' (the student alone) cannot be combined with other methods")
    staged = [p for p in parts if _METHODS[p].has_stages]
    if len(parts) > 1 and staged:
        raise UnknownMethodError(f"{staged[0]!r} trains in stages (a pre-training stage, then the main one) and "
                                 f"cannot be combined with other methods")
    for i, p in enumerate(parts):
        if not _METHODS[p].modifier:
            continue
        supported = modifiable_by(p)
        if i == 0:
            raise UnknownMethodError(f"{p!r} modifies another method: write it after one, e.g. "
                                     f"{supported[0] if supported else 'kd'}+{p} (it applies to {', '.join(supported)})")
        if not any(p in _METHODS[q].modifier_rules for q in parts if q != p):
            raise UnknownMethodError(f"{p!r} applies to {', '.join(supported)}; "
                                     f"{'+'.join(q for q in parts if q != p)} has none of them")
    return parts


def method_needs(name: str, need: str) -> bool:
    """Whether method ``name`` has the declaration ``need`` (``"needs_teacher"``, ``"couples_batch"``, ...)
    without building it: a composition (``crd+kd``) has it when any part has, as ``Composite`` sets it."""
    return any(getattr(method_class(part), need) for part in _parts(name))


def method_views(name: str) -> tuple[str, ...]:
    """The other views of the batch method ``name`` trains on (any part's), without building it."""
    return tuple(sorted({v for part in _parts(name) for v in method_class(part).views}))


def method_stages(name: str, resolved: dict[str, dict[str, Any]]) -> list[Stage]:
    """The pre-training stages of method ``name`` with its resolved hyperparameters (``validate_method``)."""
    parts = _parts(name)
    return method_class(parts[0]).stages_for(resolved[parts[0]]) if len(parts) == 1 else []


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
    ``check_override_keys`` checks them against the registry. Every value is
    checked against its type and declared range.
    """
    resolved = method_defaults(name)
    for part, hp in resolved.items():
        hp.update(resolve_hparams(part, hp, (overrides or {}).get(part, {})))
        method_class(part).check_hparams(hp)
    for mod in [p for p in resolved if method_class(p).modifier]:  # kd+ls: ls sets kd's T and weight
        for part, hp in resolved.items():
            rule = method_class(part).modifier_rules.get(mod)
            if rule is not None:
                resolved[part] = method_class(mod).adjust_partner(rule, hp, resolved[mod])
                method_class(part).check_hparams(resolved[part])
    return resolved


def batch_coupling(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> str | None:
    """Why method ``name`` with these overrides couples the samples of a batch (each coupling part's
    ``coupling``, joined by ``; ``), or None when its loss is a per-sample mean."""
    why = [f"{part}: {note}" for part, hp in validate_method(name, overrides).items()
           if (note := method_class(part).coupling(hp))]
    return "; ".join(why) or None


def check_override_keys(overrides: dict[str, dict[str, Any]]) -> None:
    """Every override names a registered method and one of its hyperparameters, with a valid value."""
    for part, kv in overrides.items():
        cls = method_class(part)
        cls.check_hparams(resolve_hparams(part, cls.defaults, kv))


def build_method(
    name: str, ctx: BuildContext, overrides: dict[str, dict[str, Any]] | None = None
) -> Distiller:
    """Build method ``name`` (``"kd"``, ``"crd+kd"``) with its resolved hyperparameters."""
    resolved = validate_method(name, overrides)
    parts = [method_class(p)(ctx, **hp) for p, hp in resolved.items()]
    for mod in [p for p in parts if p.modifier]:
        for part in parts:
            if mod.name in part.modifier_rules:
                mod.modify(part)
    method = parts[0] if len(parts) == 1 else Composite(name, parts)
    models = [m for m in (ctx.student_model, ctx.teacher_model) if m is not None]
    for sub in method.modules():
        if any(sub is m for m in models):
            raise TypeError(f"method {name} keeps the {'teacher' if sub is ctx.teacher_model else 'student'} "
                            "model as a submodule; models are read-only at build time: copy what you need")
    return method


class _Catalogue:
    """The registry as the reports read it (``kdcore.MethodCatalogue``): the application hands
    ``methods.CATALOGUE`` to ``reports.build_report``."""

    def names(self) -> list[str]:
        names = set(list_methods())
        names |= {f"{m}+kd" for m in list_methods() if m not in ("kd", "vanilla")}
        return sorted(names | set(modified_methods()))

    def reference_hparams(self, method: str, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return validate_method(method, overrides)


CATALOGUE = _Catalogue()

