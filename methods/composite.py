"""A composition of methods, e.g. ``crd+kd``: one CE term, every part's own terms.

The CE weight is the first part's (``crd+kd`` trains with CRD's gamma=1, as
RepDistiller's CRD+KD row: ``-r 1 -a 1 -b 0.8``); secondary parts contribute
their distillation terms with their ``combined_defaults`` applied (kd: alpha=1).
Term names must not collide; extras drawn in ``prepare`` are merged.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Batch, Distiller


class Composite(Distiller):
    name = "composite"

    def __init__(self, name: str, parts: list[Distiller]):
        nn.Module.__init__(self)
        self.name = name
        self.parts = nn.ModuleList(parts)
        self.hparams = {p.name: p.hparams for p in parts}
        self.needs_teacher = any(p.needs_teacher for p in parts)
        self.needs_features = any(p.needs_features for p in parts)
        self.needs_preact = any(p.needs_preact for p in parts)
        seen: dict[str, str] = {}
        for p in parts:
            for term in p.loss_weights():
                if term in seen or term == "ce":
                    raise ValueError(f"loss term {term!r} of {p.name} collides with {seen.get(term, 'ce')}")
                seen[term] = p.name

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
            out.update(p.losses(student, teacher, batch))
        return out
