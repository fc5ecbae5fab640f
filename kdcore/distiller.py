"""The method contract: ``Distiller``, the base class every distillation method subclasses, and ``Stage``, a
pre-training stage a method declares. The training loop (``kdcore.train``) reads methods only through
this class; the registry, compositions and the method files live in ``methods``, which imports this
module, never the reverse."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from kdcore.contract import Batch, BuildContext, ModelOutput, Progress
from kdcore.hparams import Choice, Range, check_ranges, resolve_hparams

__all__ = ["Distiller", "Stage", "PairNotSupported"]


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
