"""Model registry and the uniform feature interface every model exposes.

timm-style: ``@register_model`` on a factory function, ``create_model(name,
num_classes=...)`` to build one. Every model returned by ``create_model`` is a
``KDModel``: ``model(x)`` gives logits, ``model.forward_kd(x, preact=False)``
gives a ``ModelOutput`` with the logits, the stage feature maps and the pooled
embedding, in the same layout as RepDistiller's ``is_feat=True`` lists, so that
a method written against RepDistiller's indices (``hint_layer=2``,
``feat[1:-1]``, ``feat[-1]``) reads the same tensors here. ``ModelOutput`` and
``KDModel`` are defined in ``kdcore`` (the contract methods import too) and
re-exported here.
"""
from __future__ import annotations

import re

from typing import Callable

from torch import nn

from kdcore import KDModel, ModelOutput  # the model/method contract, re-exported here

from .timm_adapter import create_timm_model

__all__ = [
    "ModelOutput",
    "KDModel",
    "register_model",
    "create_model",
    "list_models",
    "UnknownModelError",
    "he_fan_out_init",
]


def he_fan_out_init(model: nn.Module, linear_std: float | None = None, linear_zero_bias: bool = False) -> None:
    """RepDistiller's initialisation, shared by its model files.

    Conv weights ~ N(0, 2 / fan_out) (He, fan-out mode) and conv biases 0; BN weight 1, bias 0;
    Linear weights ~ N(0, linear_std) when given (vgg, MobileNetV2: 0.01), else PyTorch's default;
    Linear biases 0 when ``linear_zero_bias``. Modules are visited in ``model.modules()`` order, so
    the random draws are the reference's.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if linear_zero_bias:
                nn.init.zeros_(m.bias)


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a plain line reads better
        return str(self.args[0])


_MODELS: dict[str, Callable[..., KDModel]] = {}


def register_model(fn: Callable[..., KDModel] | None = None, *, name: str | None = None):
    """Register a factory ``fn(num_classes=..., **kw) -> KDModel`` under ``name`` (default: its __name__)."""

    def wrap(f):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def list_models() -> list[str]:
    """Names of the built-in models (any ``timm:<name>`` works too)."""
    return sorted(_MODELS, key=str.lower)


def create_model(name: str, num_classes: int = 100, **kwargs) -> KDModel:
    """Build model ``name``; ``timm:<timm name>`` wraps any timm model in the same interface."""
    if name.startswith("timm:"):
        return create_timm_model(name[len("timm:"):], num_classes=num_classes, **kwargs)
    try:
        factory = _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} "
            f"(or timm:<name> for any timm model)"
        ) from None
    return factory(num_classes=num_classes, **kwargs)


_FAMILY_ALIASES = {"shuffle": "shufflenet", "wide": "wrn", "wideresnet": "wrn"}


def model_family(name: str) -> str:
    """Architecture family of a model name, for "same-architecture" vs "cross-architecture" pairs.

    The leading alphabetic stem of the name, lower-cased, with a version suffix dropped
    (``MobileNetV2`` and ``timm:mobilenetv3_large_100`` -> ``mobilenet``) and ``timm:`` ignored:
    ``resnet8``, ``resnet32x4``, ``ResNet50``, ``timm:resnet18``, ``timm:resnet10t`` -> ``resnet``;
    ``wrn_40_2`` (and timm's ``wide_resnet50_2``) -> ``wrn``; ``vgg13`` -> ``vgg``;
    ``ShuffleV1``/``ShuffleV2`` -> ``shufflenet``; ``timm:efficientnet_b0`` -> ``efficientnet``.
    A name without a leading letter is its own family.
    """
    base = name[len("timm:"):] if name.startswith("timm:") else name
    m = re.match(r"[A-Za-z]+", base)
    if not m:
        return base
    stem = m.group(0).lower()
    if stem.endswith("v") and len(stem) > 1 and base[len(stem):][:1].isdigit():
        stem = stem[:-1]  # MobileNetV2 -> mobilenet, ShuffleV1 -> shuffle
    return _FAMILY_ALIASES.get(stem, stem)
