"""tiny_cnn: a three-block CNN in kdbench's model contract (``kdcore.contract``), registered by name.

Each block is conv3x3 -> BN -> ReLU -> 2x2 max-pool (16, 32, 64 channels), then a global average pool
and one linear classifier. ``forward_kd`` returns a ``ModelOutput``: ``features`` one map per block,
``preact_features`` the same maps before the block's ReLU (pooled first: max-pool commutes with ReLU),
``embedding`` the pooled vector the classifier reads, ``embedding_map`` the map it pools, ``classifier``
the final ``nn.Linear``. ``feature_modules`` and ``preact_bns`` let the two-stage methods (ab, fsp) and
ofd run on it. Any input from 8x8 up works (the digits are 8x8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdcore.models import KDModel, ModelOutput, register_model


class TinyCNN(KDModel):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        channels = [width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList()
        cin = 3  # kdbench's datasets give 3 channels (gray images repeated)
        for cout in channels:
            self.blocks.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        features, pres = [], []
        for block in self.blocks:
            pre = F.max_pool2d(block(x), 2, ceil_mode=True)  # ceil: 8 -> 4 -> 2 -> 1
            x = F.relu(pre)
            pres.append(pre)
            features.append(x)
        embedding = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return ModelOutput(self.fc(embedding), features, embedding, pres if preact else None,
                           classifier=self.fc, embedding_map=x)

    def feature_modules(self) -> list[nn.Module]:
        return list(self.blocks)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        return [block[1] for block in self.blocks[1:]]  # one per preact_features[1:]


@register_model
def tiny_cnn(num_classes: int = 10, **kw) -> TinyCNN:
    """A three-block CNN (about 25k parameters at 10 classes): ``--pairs resnet8:tiny_cnn``."""
    return TinyCNN(num_classes=num_classes, **kw)
