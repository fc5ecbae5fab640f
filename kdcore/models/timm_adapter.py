"""Wrap any timm model in the ``KDModel`` interface (``create_model("timm:<name>")``).

features: timm's ``forward_intermediates`` list (stem/stage outputs as in the
model's ``feature_info``), or, for models without it, the outputs of the
``feature_info`` modules captured with forward hooks during ``forward_features``;
embedding: ``forward_head(x, pre_logits=True)``; logits: the classifier applied
to the embedding; classifier: ``get_classifier()`` when it is an ``nn.Linear``, else
``None``; embedding_map: ``None`` (timm heads may normalise or pool tokens). timm exposes
no pre-ReLU maps, so ``preact_features`` equals ``features``.
"""
from __future__ import annotations

import torch
from torch import nn

from kdcore import KDModel, ModelOutput

__all__ = ["TimmKDModel", "create_timm_model"]


class TimmKDModel(KDModel):
    def __init__(self, model: nn.Module, use_hooks: bool = False):
        super().__init__()
        self.model = model
        info = getattr(model, "feature_info", None)
        if not info:
            raise TypeError(f"timm model {type(model).__name__} has no feature_info; cannot expose stage features")
        self.feature_channels = [int(fi["num_chs"]) for fi in info]
        self.embedding_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.use_hooks = use_hooks or not hasattr(model, "forward_intermediates")
        self._captured: dict[int, torch.Tensor] | None = None
        if self.use_hooks:
            if not hasattr(model, "forward_features"):
                raise TypeError(f"timm model {type(model).__name__} has neither forward_intermediates nor forward_features")
            for i, fi in enumerate(info):
                try:
                    module = model.get_submodule(fi["module"])
                except AttributeError as e:
                    raise TypeError(
                        f"timm model {type(model).__name__}: feature_info module {fi['module']!r} not found; "
                        "cannot hook its stage features"
                    ) from e
                module.register_forward_hook(self._make_hook(i))

    def _make_hook(self, index: int):
        def hook(_module, _inputs, output):
            if self._captured is not None:
                self._captured[index] = output
        return hook

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.use_hooks:
            final, feats = self.model.forward_intermediates(x)
            return final, list(feats)
        self._captured = {}
        try:
            final = self.model.forward_features(x)
            feats = [self._captured[i] for i in sorted(self._captured)]
        finally:
            self._captured = None
        return final, feats

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        final, feats = self._features(x)
        emb = self.model.forward_head(final, pre_logits=True)
        classifier = self.model.get_classifier() if hasattr(self.model, "get_classifier") else None
        if isinstance(classifier, nn.Module):
            logits = classifier(emb)
        else:  # e.g. distilled heads returning a tuple: let timm run its own head
            logits = self.model.forward_head(final)
        emb = torch.flatten(emb, 1)
        # the classifier field is the head only when it is a plain Linear; timm's pre-pool map is not
        # reliably what the embedding pools (head norms, tokens): no embedding_map
        head = classifier if isinstance(classifier, nn.Linear) else None
        return ModelOutput(logits, feats, emb, list(feats) if preact else None, classifier=head)


def create_timm_model(name: str, num_classes: int = 100, pretrained: bool = False, use_hooks: bool = False, **kw) -> TimmKDModel:
    """Build timm model ``name`` (no download unless ``pretrained=True``) wrapped as a ``KDModel``.

    ``use_hooks=True`` forces the forward-hook feature path even when the model
    has ``forward_intermediates``.
    """
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kw)
    return TimmKDModel(model, use_hooks=use_hooks)
