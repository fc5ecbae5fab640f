"""ShuffleNet V2 (1x) for CIFAR, registered as ``ShuffleV2`` (widths 116/232/464, head 1024).

Reproduces RepDistiller's ``models/ShuffleNetv2.py`` (same layers, parameter
count and ``state_dict`` keys); its fixed 4x4 average pool is adaptive so any
input from 8x8 up works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model
from .resnet import run_stages
from .shufflenetv1 import channel_shuffle

CONFIGS = {  # net size: (stage widths + head width, blocks per stage)
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class BasicBlock(nn.Module):
    """Split channels in half; 1x1 - depthwise 3x3 - 1x1 on one half; concat; shuffle."""

    def __init__(self, channels: int, split_ratio: float = 0.5):
        super().__init__()
        self.split_ratio = split_ratio
        c = int(channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward_both(self, x):
        """Return (output, preact); as in RepDistiller, preact is the unshuffled concat."""
        c = int(x.shape[1] * self.split_ratio)
        keep, y = x[:, :c], x[:, c:]
        y = F.relu(self.bn1(self.conv1(y)))
        y = self.bn2(self.conv2(y))
        y_pre = self.bn3(self.conv3(y))
        out = channel_shuffle(torch.cat([keep, F.relu(y_pre)], 1), 2)
        return out, torch.cat([keep, y_pre], 1)

    def forward(self, x):
        return self.forward_both(x)[0]


class DownBlock(nn.Module):
    """Stride-2 unit: two branches of cout/2 channels each, concatenated and shuffled."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        # left: depthwise 3x3 s2 - 1x1
        self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 - depthwise 3x3 s2 - 1x1
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(KDModel):
    def __init__(self, net_size: float = 1, num_classes: int = 100):
        super().__init__()
        widths, num_blocks = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for k, (cout, n) in enumerate(zip(widths[:3], num_blocks), start=1):
            blocks = [DownBlock(cin, cout)] + [BasicBlock(cout) for _ in range(n)]
            self.add_module(f"layer{k}", nn.Sequential(*blocks))
            cin = cout
        self.conv2 = nn.Conv2d(widths[2], widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

        self.feature_channels = [24, *widths[:3]]
        self.embedding_dim = widths[3]

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3]  # not conv2/bn2

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))
        out, feats, pres = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        head = F.relu(self.bn2(self.conv2(out)))
        emb = torch.flatten(F.adaptive_avg_pool2d(head, 1), 1)
        return ModelOutput(self.linear(emb), feats, emb, pres if preact else None, classifier=self.linear,
                           embedding_map=head)


@register_model
def ShuffleV2(num_classes: int = 100, **kw) -> ShuffleNetV2:
    """RepDistiller's ShuffleV2 (net size 1)."""
    return ShuffleNetV2(net_size=1, num_classes=num_classes, **kw)
