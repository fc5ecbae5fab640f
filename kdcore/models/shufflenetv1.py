"""ShuffleNet V1 for CIFAR, registered as ``ShuffleV1`` (groups 3, widths 240/480/960).

Reproduces RepDistiller's ``models/ShuffleNetv1.py`` (same layers, parameter
count and ``state_dict`` keys); its fixed 4x4 average pool is adaptive so any
input from 8x8 up works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model
from .resnet import run_stages


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Bottleneck(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates an avg-pooled shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = cout // 4
        self.g1 = 1 if cin == 24 else groups  # the first 1x1 after the 24-channel stem is not grouped
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward_both(self, x):
        y = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.stride == 2:
            pre = torch.cat([y, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            pre = y + x
        return F.relu(pre), pre

    def forward(self, x):
        return self.forward_both(x)[0]


class ShuffleNetV1(KDModel):
    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3, num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for k, (cout, n) in enumerate(zip(out_planes, num_blocks), start=1):
            # the first (stride-2) block produces cout - cin channels and concatenates the cin shortcut
            blocks = [Bottleneck(cin, cout - cin, 2, groups)]
            blocks += [Bottleneck(cout, cout, 1, groups) for _ in range(n - 1)]
            self.add_module(f"layer{k}", nn.Sequential(*blocks))
            cin = cout
        self.linear = nn.Linear(out_planes[-1], num_classes)

        self.feature_channels = [24, *out_planes]
        self.embedding_dim = out_planes[-1]

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3]

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))
        out, feats, pres = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        emb = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.linear(emb), feats, emb, pres if preact else None, classifier=self.linear,
                           embedding_map=out)


@register_model
def ShuffleV1(num_classes: int = 100, **kw) -> ShuffleNetV1:
    """RepDistiller's ShuffleV1."""
    return ShuffleNetV1(num_classes=num_classes, **kw)
