"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

Reproduces RepDistiller's ``models/resnet.py`` (3-stage ResNet after He et al.;
same layers, parameter counts and ``state_dict`` keys); the fixed 8x8 average
pool is adaptive so any input from 8x8 up works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model, he_fan_out_init


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus shortcut; ``forward_both`` returns (relu(sum), sum)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward_both(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        pre = y + (x if self.downsample is None else self.downsample(x))
        return F.relu(pre), pre

    def forward(self, x):
        return self.forward_both(x)[0]


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4) bottleneck; ``forward_both`` returns (relu(sum), sum)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward_both(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        pre = y + (x if self.downsample is None else self.downsample(x))
        return F.relu(pre), pre

    def forward(self, x):
        return self.forward_both(x)[0]


def run_stage(stage: nn.Sequential, x: torch.Tensor):
    """Run a stage of blocks; return (output, pre-activation of its last block)."""
    for block in stage[:-1]:
        x = block(x)
    return stage[-1].forward_both(x)


def last_block_bn(stage: nn.Sequential) -> nn.BatchNorm2d:
    """The BN that ends the residual branch of a stage's last block (bn3 of a bottleneck, else bn2)."""
    block = stage[-1]
    return block.bn3 if hasattr(block, "bn3") else block.bn2


def run_stages(stem_out: torch.Tensor, stages) -> tuple[torch.Tensor, list, list]:
    """Run stages after the stem; return (last output, [stem, stage outputs...], [stem, pre-activations...])."""
    feats, pres, out = [stem_out], [stem_out], stem_out
    for stage in stages:
        out, pre = run_stage(stage, out)
        feats.append(out)
        pres.append(pre)
    return out, feats, pres


class CifarResNet(KDModel):
    """Stem conv3x3 + 3 stages (strides 1, 2, 2) + global average pool + fc."""

    def __init__(self, depth: int, widths: list[int], block: str = "basicblock", num_classes: int = 100):
        super().__init__()
        if block.lower() == "basicblock":
            block_cls, per_block = BasicBlock, 2
        elif block.lower() == "bottleneck":
            block_cls, per_block = Bottleneck, 3
        else:
            raise ValueError(f"block must be 'basicblock' or 'bottleneck', got {block!r}")
        if (depth - 2) % (3 * per_block) != 0:
            raise ValueError(f"depth {depth} must be {3 * per_block}n+2 for {block}")
        n = (depth - 2) // (3 * per_block)

        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self._cin = widths[0]
        self.layer1 = self._make_stage(block_cls, widths[1], n, 1)
        self.layer2 = self._make_stage(block_cls, widths[2], n, 2)
        self.layer3 = self._make_stage(block_cls, widths[3], n, 2)
        self.fc = nn.Linear(widths[3] * block_cls.expansion, num_classes)

        self.feature_channels = [widths[0]] + [w * block_cls.expansion for w in widths[1:]]
        self.embedding_dim = widths[3] * block_cls.expansion

        he_fan_out_init(self)

    def _make_stage(self, block_cls, planes: int, n: int, stride: int) -> nn.Sequential:
        cout = planes * block_cls.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            downsample = nn.Sequential(
                nn.Conv2d(self._cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        blocks = [block_cls(self._cin, planes, stride, downsample)]
        blocks += [block_cls(cout, planes) for _ in range(n - 1)]
        self._cin = cout
        return nn.Sequential(*blocks)

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3]

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))
        out, feats, pres = run_stages(f0, (self.layer1, self.layer2, self.layer3))
        emb = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.fc(emb), feats, emb, pres if preact else None, classifier=self.fc, embedding_map=out)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The last block's final BN of each stage (bn2 / bn3), summed with the shortcut before the ReLU."""
        return [last_block_bn(stage) for stage in (self.layer1, self.layer2, self.layer3)]


def _factory(name: str, depth: int, widths: list[int]):
    def fn(num_classes: int = 100, **kw) -> CifarResNet:
        return CifarResNet(depth, widths, "basicblock", num_classes=num_classes, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"RepDistiller's {name}: depth {depth}, widths {widths}."
    return register_model(fn)


resnet8 = _factory("resnet8", 8, [16, 16, 32, 64])
resnet14 = _factory("resnet14", 14, [16, 16, 32, 64])
resnet20 = _factory("resnet20", 20, [16, 16, 32, 64])
resnet32 = _factory("resnet32", 32, [16, 16, 32, 64])
resnet44 = _factory("resnet44", 44, [16, 16, 32, 64])
resnet56 = _factory("resnet56", 56, [16, 16, 32, 64])
resnet110 = _factory("resnet110", 110, [16, 16, 32, 64])
resnet8x4 = _factory("resnet8x4", 8, [32, 64, 128, 256])
resnet32x4 = _factory("resnet32x4", 32, [32, 64, 128, 256])
