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
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from kdcore import Batch, BuildContext, ModelOutput, Progress, ViewOutput

from .hparams import Choice, HyperparameterError, Range, check_ranges, resolve_hparams

__all__ = [
    "Batch",
    "BuildContext",
    "ModelOutput",
    "Progress",
    "ViewOutput",
    "Distiller",
    "Composite",
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


@dataclass(frozen=True)
class Stage:
    """A training stage before the main one (RepDistiller's ``init_epochs`` of ab, ft, fsp).

    For ``epochs`` epochs of the shared batch stream the harness trains only the modules the method
    names (``Distiller.stage_modules``: in train mode, the rest of the student and the method in eval
    mode) with their own SGD (the recipe's momentum and weight decay, constant ``lr``; None: the
    recipe's lr) on the sum of ``Distiller.stage_losses`` (no cross-entropy), then the main training
    starts with the recipe's schedule from its first epoch. A run's epochs are its stages' plus the
    recipe's; a cohort's other members are not affected (they see the same batches either way).
    """

    name: str
    epochs: int
    lr: float | None = None


class PairNotSupported(ValueError):
    """Raised when a method is built for a teacher/student pair its reference cannot handle (FSP needs equal
    channel counts at every stage, as RepDistiller's ``FSP`` checks): the run fails with this one line."""


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Distiller(nn.Module):
    """Base class of all methods.

    Subclasses set ``name`` (via ``@register_method``), ``defaults`` (every
    hyperparameter, loss weights included, with their source in the module
    docstring), ``ranges`` (the valid values of every hyperparameter in
    ``defaults``: ``Range(gt=0)``, ``Range(ge=0)``, ``Choice("a", "b")``, ...)
    and implement ``loss_weights`` and ``losses``.

    Declarations the harness reads:
      needs_teacher   run the teacher on the batch (False only for ``vanilla``)
      needs_features  the method reads ``features`` / ``embedding`` /
                      ``preact_features``; without it, ``losses`` receives
                      ``ModelOutput.logits_only()`` (those fields empty) and the
                      teacher's maps are released right after its forward
      needs_preact    ask the models for pre-activation features
      couples_batch   the loss relates the samples of a batch (relations,
                      in-batch negatives, memory banks updated per batch), so
                      data-parallel training on slices is only approximate;
                      ``coupling_note`` says how in one line, ``coupling(hp)``
                      decides for given hyperparameters
      views           the other views of each batch it trains on (``("strong",)``: MLKD's
                      RandAugment view); the harness runs the student and, once per cohort,
                      the teacher on each and hands them over as ``batch.views[name]``
      ce_weight_key   the hyperparameter that weights the ``"ce"`` term
      combined_defaults  overrides applied when this method is a secondary
                      part of a composition (``crd+kd`` gives kd alpha=1)
      modifier        this "method" modifies the other parts of a composition instead of
                      adding terms (``ls``: ``kd+ls``); it is never run alone
      has_stages      the method trains in stages (``stages()`` is not empty): it cannot be
                      part of a composition
      modifier_rules  how a modifier changes this method's hyperparameters, per modifier name:
                      ``{"ls": {"T": "base_temp", "alpha": "kd_weight"}}`` (see ``methods/ls.py``);
                      a method without an entry cannot be modified by it
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    ranges: ClassVar[dict[str, Range | Choice]] = {}
    combined_defaults: ClassVar[dict[str, Any]] = {}
    ce_weight_key: ClassVar[str] = "gamma"
    needs_teacher: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False
    needs_preact: ClassVar[bool] = False
    couples_batch: ClassVar[bool] = False
    coupling_note: ClassVar[str] = ""
    views: ClassVar[tuple[str, ...]] = ()
    has_stages: ClassVar[bool] = False
    modifier: ClassVar[bool] = False
    modifier_rules: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, ctx: BuildContext, **hparams: Any):
        super().__init__()
        self.hparams: dict[str, Any] = resolve_hparams(self.name, self.defaults, hparams)
        self.check_hparams(self.hparams)
        self.progress = Progress()
        # set by a modifier (``ls``) on the parts it modifies: what the method applies to logits where its
        # reference code applies the modifier's transform (``soft_logits``)
        self.logit_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any]) -> None:
        """Check every value against ``ranges``; raise HyperparameterError.

        Called by ``validate_method`` before any work starts, and again on
        construction. Override (calling ``super()``) for checks a range cannot
        state (a relation between two values).
        """
        check_ranges(cls.name, cls.ranges, hparams)

    @classmethod
    def coupling(cls, hparams: dict[str, Any]) -> str | None:
        """Why the loss with these hyperparameters relates samples across the batch; None when it does not.

        Default: ``coupling_note`` when ``couples_batch``. Override when it depends on a value
        (triplet couples only with ``negatives="batch"``).
        """
        if not cls.couples_batch:
            return None
        return cls.coupling_note or "its loss relates the samples of each batch"

    def __getattr__(self, item: str):
        # read-only convenience: self.T, self.beta, ... read the hyperparameters
        hp = self.__dict__.get("hparams")
        if hp is not None and item in hp:
            return hp[item]
        return super().__getattr__(item)

    # --- what the harness calls -------------------------------------------
    def set_progress(self, progress: Progress) -> None:
        """Called by the harness before every step's ``prepare`` / ``losses`` / ``loss_weights``."""
        self.progress = progress

    def ce_weight(self) -> float:
        return float(self.hparams[self.ce_weight_key]) if self.ce_weight_key else 0.0

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The method's parameters that train with the student in the main stage (default: every one that
        requires grad; a method whose module trains only in a pre-training stage leaves it out)."""
        return [p for p in self.parameters() if p.requires_grad]

    # --- stages (``has_stages = True``) -------------------------------------------------
    @classmethod
    def stages_for(cls, hparams: dict[str, Any]) -> list[Stage]:
        """The pre-training stages with these hyperparameters, in order, before the main training (none by
        default); known before the method is built, so the runner can count epochs."""
        return []

    def stages(self) -> list[Stage]:
        return self.stages_for(self.hparams)

    def stage_modules(self, stage: str, student: nn.Module) -> list[nn.Module]:
        """The modules that train in ``stage`` (the method's own and/or the student's, e.g.
        ``student.feature_modules()``); ``student`` is lent for this call only: do not keep it."""
        raise NotImplementedError(f"{self.name} declares stage {stage!r} but no stage_modules")

    def stage_losses(self, stage: str, student: ModelOutput, teacher: ModelOutput | None,
                     batch: Batch) -> dict[str, torch.Tensor]:
        """The named terms of ``stage``'s loss; the harness trains on their sum (no cross-entropy)."""
        raise NotImplementedError(f"{self.name} declares stage {stage!r} but no stage_losses")

    def soft_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` as this method's soft terms should see them: unchanged, or transformed by a modifier
        of its composition (``kd+ls``: z-scored per sample). Call it where the reference code does."""
        return logits if self.logit_transform is None else self.logit_transform(logits)

    # --- modifiers (``modifier = True``) implement these two -------------------------------
    @classmethod
    def adjust_partner(cls, rule: dict[str, str], partner_hp: dict[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
        """A modifier's change to a partner's resolved hyperparameters, following the partner's ``rule``."""
        return partner_hp

    def modify(self, partner: "Distiller") -> None:
        """A modifier's change to a built partner (``ls`` sets its ``logit_transform``)."""

    def loss_weights(self) -> dict[str, float]:
        """Weight of each term ``losses`` returns (the ``"ce"`` term excluded); may follow ``self.progress``."""
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
        """Parameters of the method's own modules that train (in any stage)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


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
