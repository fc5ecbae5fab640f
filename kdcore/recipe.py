"""A run's recipe: the optimizer and schedule (``Recipe``) and the speed settings (``FastPaths``), read by the
training loop (``kdcore.train``), the preset loader (``kdcore.config``) and the records, without loading the loop."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Recipe", "FastPaths", "evaluated"]


@dataclass
class Recipe:
    """SGD + multi-step schedule (RepDistiller's ``adjust_learning_rate``)."""

    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epochs: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay_rate: float = 0.1
    eval_batch_size: int = 256
    # test-set evaluation after every ``eval_every``-th epoch and always after the last (of each pre-training
    # stage too): 1 is RepDistiller's every epoch; a real dataset on a CPU (10,000 test images at 28x28: 3-4 s
    # per resnet8 pass) cannot pay that for 186 runs. Entries in between carry no test_* keys.
    eval_every: int = 1

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: RepDistiller decays when the 1-based epoch exceeds a milestone."""
        steps = sum(epoch + 1 > m for m in self.lr_decay_epochs)
        return self.lr * self.lr_decay_rate**steps

    def evaluates(self, epoch: int, epochs: int) -> bool:
        """Whether the test set is evaluated after 0-based ``epoch`` of a stage of ``epochs`` epochs."""
        return (epoch + 1) % self.eval_every == 0 or epoch + 1 == epochs

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.eval_every == 1:
            # left out at its default: the recipes recorded (and the teacher cache keys hashed from them)
            # before the field existed stay what they were
            del out["eval_every"]
        return out


def evaluated(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``history`` whose epoch was evaluated on the test set (``Recipe.eval_every``)."""
    return [h for h in history if "test_top1" in h]


@dataclass
class FastPaths:
    """Speed settings, each recorded in the run record. ``auto``: on for CUDA, off on the CPU.

    amp: autocast dtype for teacher and student forward passes ("bf16", "fp32"/"off"); the loss terms are
        always computed in float32 on upcast outputs (``losses_in_float32``), as the references compute them.
    channels_last: NHWC memory format for models and batches.
    teacher_inference_mode: run the teacher under ``torch.inference_mode`` (outputs are then
        cloned once so methods may save them for backward) instead of ``no_grad``.
    compile: ``torch.compile`` each model's ``forward_kd`` (opt-in: compile time per model).
    On the CPU none is on by default, as measured on our 2-core AVX2 CPU with
    ``python -m benchmarks.speed --methods kd`` and each flag: bf16 autocast is 8x slower (no native
    bf16), an inference-mode teacher gains nothing, channels_last is neutral; so CPU runs stay in the
    reference fp32 arithmetic. None of the CUDA defaults has been measured on a GPU yet: no GPU was
    available to this project so far.
    """

    amp: str = "auto"
    channels_last: str = "auto"
    teacher_inference_mode: str = "auto"
    compile: bool = False

    def resolve(self, device: torch.device) -> dict[str, Any]:
        cuda = device.type == "cuda"

        def on(value: str, name: str) -> bool:
            if value not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be auto, on or off, got {value!r}")
            return cuda if value == "auto" else value == "on"

        if self.amp not in ("auto", "bf16", "fp32", "off"):
            raise ValueError(f"amp must be auto, bf16, fp32 or off, got {self.amp!r}")
        amp = ("bf16" if cuda else "fp32") if self.amp == "auto" else ("fp32" if self.amp == "off" else self.amp)
        return {"amp": amp, "channels_last": on(self.channels_last, "channels_last"),
                "teacher_inference_mode": on(self.teacher_inference_mode, "teacher_inference_mode"),
                "compile": bool(self.compile)}
