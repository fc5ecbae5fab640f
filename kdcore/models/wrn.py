"""Wide ResNets for CIFAR (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Reproduces RepDistiller's ``models/wrn.py`` (pre-activation WRN-d-k of
Zagoruyko & Komodakis, dropout 0; same layers, parameter counts and
``state_dict`` keys); the fixed 8x8 average pool is adaptive.

Deliberate deviation, BN running statistics only: the pre-activation maps
(``preact=True``) are the outputs of the BNs the forward applies anyway
(``block2.layer[0].bn1``, ``block3.layer[0].bn1``, the head's ``bn1``), each
computed once. RepDistiller's ``forward(preact=True)`` (``models/wrn.py``)
applies these three BNs a second time to the stage outputs after the forward,
and mdistiller's ``models/cifar/wrn.py`` does so in EVERY forward (its
``preact_feats`` are always computed). In train mode that second call updates
their running mean/var again with the same batch (effective momentum 0.19
instead of 0.1): in RepDistiller for a wrn student of ``abound`` only, in
mdistiller for a wrn student of every method (kd, dkd, reviewkd, cat-kd, ...;
the teacher is in eval mode in both). Values and gradients are the same; the
running statistics, hence a wrn student's eval-mode outputs, differ slightly
from those codes'.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model, he_fan_out_init


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ 1x1 shortcut when shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = cin == cout
        # RepDistiller's key name; in its blocks cin == cout implies stride 1.
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward_both(self, x):
        """Return (output, bn1(x)); the second is the pre-ReLU input activation."""
        pre = self.bn1(x)
        act = F.relu(pre)
        y = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        y = self.conv2(y)
        # The shortcut of a shape-changing block sees the activated input.
        shortcut = x if self.equal_in_out else self.convShortcut(act)
        return shortcut + y, pre

    def forward(self, x):
        return self.forward_both(x)[0]


class NetworkBlock(nn.Module):
    """A stage of ``n`` blocks (wrapper kept for RepDistiller's ``blockK.layer.i`` keys)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop_rate) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(KDModel):
    """conv3x3(16) + 3 stages (16k, 32k, 64k; strides 1, 2, 2) + BN-ReLU + pool + fc."""

    def __init__(self, depth: int, widen_factor: int = 1, num_classes: int = 100, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)

        self.feature_channels = list(ch)
        self.embedding_dim = ch[3]

        he_fan_out_init(self, linear_zero_bias=True)

    def feature_modules(self) -> list[nn.Module]:
        return [self.conv1, self.block1, self.block2, self.block3]  # not the final bn1 (RepDistiller)

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        # Features are the raw (pre-activation) stage outputs, as in RepDistiller; the
        # preact variant of stage i is the BN that the next block / the head applies
        # to it before its ReLU (computed once here, not re-applied afterwards: each BN
        # updates its running statistics once per forward; see the module docstring).
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        out, f1_pre = self.block2.layer[0].forward_both(f1)
        f2 = self.block2.layer[1:](out)
        out, f2_pre = self.block3.layer[0].forward_both(f2)
        f3 = self.block3.layer[1:](out)
        f3_pre = self.bn1(f3)
        head = F.relu(f3_pre)
        emb = torch.flatten(F.adaptive_avg_pool2d(head, 1), 1)
        pres = [f0, f1_pre, f2_pre, f3_pre] if preact else None
        return ModelOutput(self.fc(emb), [f0, f1, f2, f3], emb, pres, classifier=self.fc, embedding_map=head)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The BNs whose outputs are ``preact_features[1:]``: the next stage's first bn1, the head's bn1."""
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]


def _factory(name: str, depth: int, widen: int):
    def fn(num_classes: int = 100, **kw) -> WideResNet:
        return WideResNet(depth, widen, num_classes=num_classes, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"RepDistiller's {name}: WRN-{depth}-{widen}."
    return register_model(fn)


wrn_16_1 = _factory("wrn_16_1", 16, 1)
wrn_16_2 = _factory("wrn_16_2", 16, 2)
wrn_40_1 = _factory("wrn_40_1", 40, 1)
wrn_40_2 = _factory("wrn_40_2", 40, 2)
