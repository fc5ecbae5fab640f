"""kdbench inside your own training loop: ``Distillation`` (docs/library.md, "Using kdbench as a library").

``Distillation(method, teacher, student, num_classes=...)`` builds any registered method, compositions
(``crd+kd``) and modifiers (``kd+ls``) included, for a teacher and a student given as zoo names
(``kdcore.models.create_model``), ``timm:<name>``, or ``nn.Module``s: a ``KDModel`` (``forward_kd(x,
preact) -> ModelOutput``), or, for a method that reads logits only, any classifier ``module(x) -> logits``
(wrapped in ``LogitsModel``). ``.parameters()`` are the method's own trainable parameters (regressors,
embeddings): put them in your optimizer with the student's. ``.loss(x, y, index)`` runs the frozen teacher and
the student on a batch and returns the weighted total, to ``backward()``, and the named unweighted terms
(``"ce"`` and the method's); the total is computed by the harness's own code (``compute_terms``,
``weigh_terms``), so it equals ``StudentRun.step``'s for the same inputs, bit for bit.

A method that trains on other views of each batch (mlkd: a strongly augmented one) gets them from your
loop: ``loss(x, y, views={"strong": x_strong})``, the same samples augmented as that view. A method with
pre-training stages (ab, ft, fsp) names them in ``stages``; your loop trains each first, for its epochs,
with its own optimizer over ``stage_parameters(name)`` on ``stage_loss(x, y, stage=name)``, as the harness
does (``StudentRun.stage_step``: the same code, the same total).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from kdcore import Batch, BuildContext, KDModel, ModelOutput, Progress
from methods import Distiller, Stage, build_method, method_needs, validate_method

from benchmarks.grid import probe
from kdcore.models import create_model
from kdcore.train import (compute_stage_terms, compute_terms, freeze, seed_for, stage_modes, unique_trainable,
                     weigh_terms)

__all__ = ["Distillation", "LogitsModel"]


class LogitsModel(KDModel):
    """A plain classifier (``module(x) -> logits``) as a ``KDModel`` whose ``ModelOutput`` has logits only
    (no features, no embedding): enough for the methods that declare ``needs_features = False`` (kd, dkd,
    ...). ``Distillation`` wraps a plain module in it for those methods; the module's parameters are its own."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        return ModelOutput(self.module(x), [], None)  # type: ignore[arg-type]  (as ModelOutput.logits_only())


class _NoTrainLabels(BuildContext):
    """A BuildContext without the training set's labels: the method that reads them gets a one-line error."""

    method = ""

    @property
    def train_labels(self) -> torch.Tensor:
        raise ValueError(f"{self.method} reads the training set's labels: pass train_labels= (the label of every "
                         f"training sample, by dataset index) to Distillation and each batch's index to loss()")

    @train_labels.setter
    def train_labels(self, value) -> None:  # BuildContext.__init__ sets it (to None)
        pass


class _NoIndex(Batch):
    """A Batch without dataset indices: the method that reads them gets a one-line error."""

    method = ""

    @property
    def index(self) -> torch.Tensor:
        raise ValueError(f"{self.method} reads each sample's dataset index: call loss(x, y, index) with the "
                         f"batch's indices into train_labels")

    @index.setter
    def index(self, value) -> None:  # Batch.__init__ sets it (to None)
        pass


def _as_kd_model(model: Any, role: str, method: str, logits_only: bool) -> KDModel:
    """``model`` as the harness runs it: a KDModel as is, a plain classifier wrapped for a logits-only method."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{role} must be a model name (resnet8x4, timm:resnet18) or an nn.Module, "
                        f"got {type(model).__name__}")
    if callable(getattr(model, "forward_kd", None)):
        return model  # type: ignore[return-value]
    if logits_only:
        return LogitsModel(model)
    raise TypeError(f"{role} {type(model).__name__} is a plain nn.Module, but {method} reads feature maps: "
                    f"subclass kdcore.KDModel and implement forward_kd(x, preact=False) -> "
                    f"ModelOutput(logits, features, embedding) (docs/models.md)")


class Distillation:
    """Method ``method`` for ``teacher`` -> ``student``, to call on each batch of your own loop.

    teacher, student: a zoo name or ``timm:<name>`` (built with ``num_classes``), or an ``nn.Module``. The
        teacher is frozen here (eval mode, ``requires_grad=False``; run under ``no_grad`` in eval mode at
        every call); ``None`` for ``vanilla``, which needs none. ``self.teacher`` / ``self.student`` are the
        models as given or built (load your teacher's weights into ``self.teacher`` if you passed a name).
    num_classes: the classes of the dataset.
    train_labels: the label of every training sample, by dataset index (int64); only methods that read them
        need it (crd's memory banks, triplet's and pair's dataset negatives), and then ``loss`` needs ``index``.
    input_shape: one input's (C, H, W), for the eval-mode probe forward that sizes the method's modules.
    overrides: hyperparameters per part, ``{"kd": {"T": 2.0}}`` (as ``--set kd.T=2``), checked against the
        method's ranges.
    fetch: ``fetch(index) -> images`` (augmented, normalised, on the models' device) for the methods that
        run the student on extra training samples (triplet and pair with ``negatives="dataset"``).
    seed: seeds the method's own generator for per-batch draws (crd's negatives), as the harness's
        ``seed_for(seed, method, "method")``. The modules the method builds draw from torch's global RNG.

    The models stay where they are: build on the device you train on, or call ``.to(device)``. The
    method's state (crd's memory banks) is ``self.method.state_dict()``.
    """

    def __init__(self, method: str, teacher: nn.Module | str | None, student: nn.Module | str, *,
                 num_classes: int, train_labels: torch.Tensor | None = None,
                 input_shape: tuple[int, ...] = (3, 32, 32),
                 overrides: dict[str, dict[str, Any]] | None = None,
                 fetch: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0):
        validate_method(method, overrides)  # UnknownMethodError names the known ones
        logits_only = not (method_needs(method, "needs_features") or method_needs(method, "needs_preact"))
        uses_teacher = method_needs(method, "needs_teacher")
        if teacher is None and uses_teacher:
            raise ValueError(f"{method} needs a teacher")
        self.student = create_model(student, num_classes=num_classes) if isinstance(student, str) else student
        self.teacher = create_model(teacher, num_classes=num_classes) if isinstance(teacher, str) else teacher
        self._student = _as_kd_model(self.student, "student", method, logits_only)
        self._teacher = None if teacher is None else freeze(
            _as_kd_model(self.teacher, "teacher", method, logits_only))
        self.fetch = fetch
        params = next(iter(self._student.parameters()), None)
        device = params.device if params is not None else torch.device("cpu")
        student_probe = probe(self._student, input_shape, device, True)
        teacher_probe = None if self._teacher is None else probe(self._teacher, input_shape, device, True)
        if train_labels is None:
            ctx: BuildContext = _NoTrainLabels(student_probe, teacher_probe, num_classes, None,  # type: ignore[arg-type]
                                               student_model=self._student, teacher_model=self._teacher)
            ctx.method = method  # type: ignore[attr-defined]
        else:
            ctx = BuildContext(student_probe, teacher_probe, num_classes,
                               torch.as_tensor(train_labels, dtype=torch.long).cpu(),
                               student_model=self._student, teacher_model=self._teacher)
        self.method: Distiller = build_method(method, ctx, overrides).to(device)
        self.generator = torch.Generator().manual_seed(seed_for(seed, self.method.name, "method"))

    def to(self, device: torch.device | str) -> "Distillation":
        """Move the teacher, the student and the method's modules to ``device``."""
        for module in (self._teacher, self._student, self.method):
            if module is not None:
                module.to(device)
        return self

    def parameters(self) -> list[nn.Parameter]:
        """The method's own trainable parameters (empty for kd): train them with the student's."""
        return self.method.trainable_parameters()

    @property
    def stages(self) -> list[Stage]:
        """The pre-training stages to train before the main loss, in order (ab, ft, fsp: ``init``; none for
        most methods): each its ``epochs``, with an SGD of its ``lr`` (None: your main lr) and your main
        momentum and weight decay over ``stage_parameters(name)``, on ``stage_loss``."""
        return self.method.stages()

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """What pre-training stage ``stage`` trains: the student's modules and the method's that it names."""
        return unique_trainable(self.method.stage_modules(self._check_stage(stage), self._student))

    def stage_loss(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, *,
                   stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Pre-training stage ``stage``'s loss on batch ``(x, y)``: the sum of its terms (no cross-entropy),
        and the terms (detached). It puts the student and the method in eval mode and the stage's modules in
        train mode (RepDistiller's ``init``), as the harness does for a stage's epochs: call
        ``student.train()`` when the main training starts."""
        method = self.method
        stage_modes(self._student, method, self._check_stage(stage))
        method.set_progress(Progress(0.0, method.progress.epochs))
        batch = self._batch(x, y, index)
        _, terms = compute_stage_terms(self._student, method, stage, x, self._teacher_out(x), batch)
        return sum(terms.values()), {k: v.detach() for k, v in terms.items()}

    def _check_stage(self, stage: str) -> str:
        names = [st.name for st in self.stages]
        if stage not in names:
            raise ValueError(f"{self.method.name} has no stage {stage!r}; its stages: {names or 'none'}")
        return stage

    def _batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> Batch:
        """The batch the method reads; without ``index``, one that names what is missing when it is read."""
        if index is None:
            batch: Batch = _NoIndex(x, y, None, progress=self.method.progress)  # type: ignore[arg-type]
            batch.method = self.method.name  # type: ignore[attr-defined]
            return batch
        return Batch(x, y, index, progress=self.method.progress)

    def weights(self) -> dict[str, float]:
        """The weight of each term at the current progress: ``{"ce": ..., "kd": ...}``."""
        return {"ce": self.method.ce_weight(), **self.method.loss_weights()}

    def loss(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, *,
             views: dict[str, torch.Tensor] | None = None, epoch: float | None = None,
             epochs: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total loss on batch ``(x, y)`` and the unweighted terms, ``{"ce": ..., "kd": ...}``
        (detached; ``total`` is the sum of ``weights()[k] * terms[k]`` over the nonzero weights).

        index: each sample's index into ``train_labels``, for the methods that read it (crd).
        views: ``{name: images}`` for each view the method trains on (``self.method.views``; mlkd: ``"strong"``),
            the samples of ``x`` augmented as that view (kdbench's own: ``kdcore.data.augment.VIEWS``); the
            teacher runs on each, as on ``x``.
        epoch, epochs: where training stands, ``epoch`` fractional (``e + i / len(loader)``), for methods
            whose weights follow it (dkd's warm-up, ctkd's temperature schedule); pass both or neither
            (then the last ones given stay, at first ``Progress(0.0, 1)``).
        The method's modules follow the student's train/eval mode; the student runs with autograd, as
        your loop runs it.
        """
        if (epoch is None) != (epochs is None):
            raise ValueError("pass epoch and epochs together (epoch: fractional, e + i / len(loader))")
        method = self.method
        if epoch is not None:
            method.set_progress(Progress(float(epoch), int(epochs)))  # type: ignore[arg-type]
        method.train(self._student.training)
        batch = self._batch(x, y, index)
        missing = [name for name in method.views if name not in (views or {})]
        if missing:
            raise ValueError(f"{method.name} also trains on the view(s) {', '.join(missing)} of each batch: pass "
                             f"loss(x, y, views={{{missing[0]!r}: images}}), the samples of x augmented as that view "
                             f"(kdbench's: kdcore.data.augment.VIEWS)")
        teacher_out = self._teacher_out(x)
        view_inputs = {name: (views[name], self._teacher_out(views[name])) for name in method.views}  # type: ignore[index]
        batch.extras = method.prepare(batch, self.generator)
        extra_x = None
        if batch.extras.get("extra_index") is not None:
            if self.fetch is None:
                raise ValueError(f"{method.name} runs the student on extra training samples drawn by dataset "
                                 f"index: pass fetch=<function index -> augmented images> to Distillation")
            extra_x = self.fetch(batch.extras["extra_index"])
        _, terms = compute_terms(self._student, method, x, y, teacher_out, batch, extra_x, view_inputs)
        total, _ = weigh_terms(method, terms)
        return total, {k: v.detach() for k, v in terms.items()}

    def _teacher_out(self, x: torch.Tensor) -> ModelOutput | None:
        """The frozen teacher's output on ``x`` as the method reads it (eval mode, no_grad; logits only for a
        logits-only method), or None for a method without a teacher."""
        method = self.method
        if not method.needs_teacher:
            return None
        self._teacher.eval()  # type: ignore[union-attr]
        with torch.no_grad():
            out = self._teacher.forward_kd(x, preact=method.needs_preact)  # type: ignore[union-attr]
        return out if method.needs_features else out.logits_only()
