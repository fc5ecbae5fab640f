"""ImageNet-layout ResNet-50 adapted to CIFAR (3x3 stride-1 stem, no max-pool).

Reproduces RepDistiller's ``models/resnetv2.py`` ``ResNet50`` (registered as
``ResNet50``; same layers, parameter count and ``state_dict`` keys).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model, he_fan_out_init
from .resnet import last_block_bn, run_stages


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    if stride == 1 and cin == cout:
        return nn.Sequential()  # identity, kept as an empty Sequential for key compatibility
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward_both(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(y)) + self.shortcut(x)
        return F.relu(pre), pre

    def forward(self, x):
        return self.forward_both(x)[0]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward_both(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        pre = self.bn3(self.conv3(y)) + self.shortcut(x)
        return F.relu(pre), pre

    def forward(self, x):
        return self.forward_both(x)[0]


class ResNetV2(KDModel):
    """Stem conv3x3(64) + 4 stages (64, 128, 256, 512 planes; strides 1, 2, 2, 2) + pool + linear."""

    def __init__(self, block, num_blocks: list[int], num_classes: int = 100, zero_init_residual: bool = False):
        super().__init__()
        self._cin = 64
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_stage(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_stage(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_stage(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_stage(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

        self.feature_channels = [64] + [p * block.expansion for p in (64, 128, 256, 512)]
        self.embedding_dim = 512 * block.expansion

        he_fan_out_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_stage(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for i in range(n):
            blocks.append(block(self._cin, planes, stride if i == 0 else 1))
            self._cin = planes * block.expansion
        return nn.Sequential(*blocks)

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))
        out, feats, pres = run_stages(f0, (self.layer1, self.layer2, self.layer3, self.layer4))
        emb = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.linear(emb), feats, emb, pres if preact else None, classifier=self.linear,
                           embedding_map=out)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The last block's final BN of each stage (bn2 / bn3), summed with the shortcut before the ReLU."""
        return [last_block_bn(stage) for stage in (self.layer1, self.layer2, self.layer3, self.layer4)]


@register_model
def ResNet50(num_classes: int = 100, **kw) -> ResNetV2:
    """RepDistiller's ResNet50: Bottleneck blocks [3, 4, 6, 3]."""
    return ResNetV2(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kw)
