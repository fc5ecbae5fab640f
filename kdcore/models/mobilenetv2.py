"""MobileNetV2 for CIFAR, registered as ``MobileNetV2`` (expansion 6, width 0.5).

Reproduces RepDistiller's ``models/mobilenetv2.py`` ``mobile_half`` (same
layers, parameter count and ``state_dict`` keys); its fixed average pool is
adaptive so any input from 8x8 up works.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model, he_fan_out_init

# expansion t (None = the model's T), output channels c, repeats n, first stride s
SETTINGS = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
FEATURE_STAGES = (1, 2, 4, 6)  # stages whose outputs are features[1:], as in RepDistiller


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hid = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU(inplace=True),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(KDModel):
    def __init__(self, expand: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        cin = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, cin, 3, 2)
        self.blocks = nn.ModuleList()
        stage_channels = []
        for t, c, n, s in SETTINGS:
            cout = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, expand if t is None else t))
                cin = cout
            self.blocks.append(nn.Sequential(*layers))
            stage_channels.append(cout)
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))

        self.feature_channels = [int(32 * width_mult)] + [stage_channels[i] for i in FEATURE_STAGES]
        self.embedding_dim = self.last_channel

        he_fan_out_init(self, linear_std=0.01, linear_zero_bias=True)

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.blocks]  # not conv2, the 1x1 conv to 1280 (RepDistiller)

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        out = self.conv1(x)
        feats = [out]
        for i, stage in enumerate(self.blocks):
            out = stage(out)
            if i in FEATURE_STAGES:
                feats.append(out)
        out = self.conv2(out)
        emb = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        # Blocks end in a linear projection (no ReLU): preact features are the features.
        return ModelOutput(self.classifier(emb), feats, emb, list(feats) if preact else None,
                           classifier=self.classifier[0], embedding_map=out)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The final BN of each feature stage's last block (its linear projection: no ReLU follows)."""
        return [self.blocks[i][-1].conv[-1] for i in FEATURE_STAGES]


@register_model(name="MobileNetV2")
def mobile_half(num_classes: int = 100, **kw) -> MobileNetV2:
    """RepDistiller's mobile_half: MobileNetV2 with T=6, width multiplier 0.5."""
    return MobileNetV2(expand=6, width_mult=0.5, num_classes=num_classes, **kw)
