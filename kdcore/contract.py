"""The types models, methods and the training loop exchange.

``ModelOutput`` / ``KDModel``: what every model returns from ``forward_kd``.
``BuildContext``: what a method sees when it builds its modules.
``Batch``: one training batch as a method sees it; ``ViewOutput``: both models on another view of it.
``Progress``: where training stands, read by methods that schedule a weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["ModelOutput", "KDModel", "Progress", "Batch", "ViewOutput", "BuildContext"]


@dataclass
class ModelOutput:
    """What a model hands to a distillation method.

    features: stage feature maps, RepDistiller's ``feat[:-1]``: ``features[0]``
        is the stem output, ``features[1..L]`` the outputs of the L stages
        (post-activation), each ``(B, C_i, H_i, W_i)``.
    preact_features: the same maps taken before the last ReLU of each stage
        (RepDistiller's ``preact=True``); ``None`` unless asked for. For
        architectures without a trailing ReLU they equal ``features``.
    embedding: the pooled, flattened vector fed to the classifier
        (RepDistiller's ``feat[-1]``), ``(B, D)``.
    classifier: the model's final ``nn.Linear`` (the module that maps ``embedding`` to
        ``logits``; its current parameters, not a copy), or ``None`` where the model has
        no single linear head. A method applies it as a 1x1 convolution to a map
        (CAT-KD's class activation maps); the student's is trained, so read it from
        the output at every step. Kept by ``logits_only()`` (it is a module, not a map).
    embedding_map: the ``(B, D, H, W)`` map whose global average pool is ``embedding``
        (the classifier's input before pooling: ``features[-1]`` for most CIFAR models,
        the head conv's output for MobileNetV2 / ShuffleV2, ``relu(bn(features[-1]))``
        for WRN), or ``None`` where the model has none (fully connected heads, timm).
    """

    logits: torch.Tensor
    features: list[torch.Tensor]
    embedding: torch.Tensor
    preact_features: list[torch.Tensor] | None = None
    classifier: nn.Module | None = None
    embedding_map: torch.Tensor | None = None

    def logits_only(self) -> "ModelOutput":
        """The same output without features, embedding and embedding map (``[]`` / ``None``): what a
        method that declares ``needs_features = False`` receives, so reading them fails loudly instead
        of silently. ``classifier`` is kept."""
        return replace(self, features=[], embedding=None, preact_features=None,  # type: ignore[arg-type]
                       embedding_map=None)


class KDModel(nn.Module):
    """Base class of every model: subclasses implement ``forward_kd``; ``forward`` returns logits."""

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The BatchNorm layer right before the last ReLU of each stage, one per ``preact_features[1:]``.

        Its output is ``preact_features[i]`` itself, or is summed with a residual branch into it
        (ResNet blocks: the last block's final BN, as overhaul-distillation's ``get_bn_before_relu``).
        Methods read its affine parameters at build time (OFD's margins). Models whose stage
        outputs do not come from one such BN (ShuffleNets, timm) do not declare it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not declare preact_bns(): the BatchNorm before each stage's "
            "final ReLU is not known for this architecture")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kd(x).logits

    def feature_modules(self) -> list[nn.Module]:
        """The modules that compute the stage features, RepDistiller's ``get_feat_modules()``: the stem and the
        stages, not the classifier nor what sits between the last stage and the pooling (wrn's final BN,
        MobileNetV2's and ShuffleV2's last 1x1 conv). A two-stage method (ab, fsp) trains them first."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its feature modules "
                                  f"(RepDistiller's get_feat_modules), which two-stage methods (ab, fsp) train")


@dataclass(frozen=True)
class Progress:
    """Where training stands when a method computes its terms and weights.

    epoch: completed epochs plus the fraction of the current one, ``e + step / steps_per_epoch``
        (0-based: 0.0 at the first step, 1.0 at the first step of the second epoch).
    epochs: the total number of epochs of the run.

    Derived from the epoch and step counters at every step, never stored, so a resumed run
    sees exactly the progress an uninterrupted one does. Before training it is ``Progress(0.0, 1)``.
    """

    epoch: float = 0.0
    epochs: int = 1

    @property
    def fraction(self) -> float:
        """``epoch / epochs``: 0 at the start, towards 1 at the end."""
        return self.epoch / self.epochs if self.epochs else 0.0

    @classmethod
    def at(cls, epoch: int, step: int, steps_per_epoch: int, epochs: int) -> "Progress":
        """Progress at 0-based ``step`` of 0-based ``epoch``."""
        return cls(epoch + step / max(int(steps_per_epoch), 1), int(epochs))


@dataclass
class ViewOutput:
    """The student and the teacher on another view of the batch's images (MLKD's strong augmentation).

    The images of a view are drawn once per step for every cohort member with the same seed (from a
    generator seeded by the run's seed, the view's name, the epoch and the step), so the teacher runs
    on them once and every member that asked for the view gets the same ``teacher``. The student's
    forward on the view is its own (a separate call: its own BatchNorm batch, as MLKD's code does).
    ``teacher`` is None for a method that does not need the teacher.
    """

    student: ModelOutput
    teacher: ModelOutput | None


@dataclass
class Batch:
    """One training batch as a method sees it.

    x, y, index are shared by every student of a cohort; ``extras`` is this
    method's own: what ``prepare`` returned, plus ``"extra_student"`` (the
    student's ``ModelOutput`` on the samples named by ``"extra_index"``) when
    the method asked for extra samples. ``progress``: as the method's ``progress``.
    ``views``: ``{name: ViewOutput}`` for each view the method declares (``Distiller.views``).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    views: dict[str, ViewOutput] = field(default_factory=dict)


@dataclass
class BuildContext:
    """What a method may look at when it builds its modules.

    student / teacher: ``ModelOutput`` of a probe forward (batch of 2, the
    dataset's input size, eval mode, no grad), so adapters can be sized from
    real shapes (RepDistiller sizes its ConvReg / Embed modules the same way).
    train_labels: labels of the whole training set, CPU int64, indexed by the
    dataset index the harness passes in ``Batch.index``.
    student_model / teacher_model: the models themselves (``KDModel``), to read
    at build time: the teacher's BN statistics or classifier weights, the
    student's layout. The teacher is frozen (eval mode, no gradients). Both are
    READ-ONLY: a method must not change them, put them in train mode or keep
    them as attributes (they would become its submodules: its state_dict,
    its ``train()``); copy what it needs into its own buffers or modules
    (``build_method`` refuses a method that holds either model). ``None`` where
    no model exists (the vanilla teacher run has no teacher; some unit tests
    build from probe outputs alone).
    """

    student: ModelOutput | None
    teacher: ModelOutput | None
    num_classes: int
    train_labels: torch.Tensor
    student_model: nn.Module | None = None
    teacher_model: nn.Module | None = None

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())


class MethodCatalogue(Protocol):
    """What the reports read from the method registry, handed to them by whoever holds the registry.

    ``reports`` never imports ``methods`` (a report reads records; loading every method file to draw a
    table would tie the two together): the application passes ``methods.CATALOGUE``, and a report built
    without one says where it could not look (colours of unregistered names, the protocol comparison of
    method hyperparameters).
    """

    def names(self) -> list[str]:
        """Every name a grid may run that must own a colour: methods, ``<method>+kd``, ``<method>+<modifier>``."""
        ...

    def reference_hparams(self, method: str, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The resolved hyperparameters of ``method`` (every part of a composition) under ``overrides``."""
        ...

