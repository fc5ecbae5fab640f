"""VGG with BatchNorm for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19), FC layers removed.

Reproduces RepDistiller's ``models/vgg.py`` ``vggN_bn`` (same layers, parameter
counts and ``state_dict`` keys). Five conv blocks; max-pools after blocks 0-2,
after block 3 only for inputs of height >= 64 (RepDistiller: exactly 64), and
a max-pool is skipped when the map is already 1 pixel high or wide, so inputs
from 8x8 up work; the head is a global average pool and one linear layer.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, register_model, he_fan_out_init

CFG = {
    "S": [[64], [128], [256], [512], [512]],
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], cin: int, batch_norm: bool) -> nn.Sequential:
    """conv3x3(+BN)+ReLU per width, without the final ReLU (applied in forward)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers.append(nn.Conv2d(cin, w, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.ReLU(inplace=True))
        cin = w
    return nn.Sequential(*layers[:-1])


def _maxpool(x: torch.Tensor) -> torch.Tensor:
    if min(x.shape[-2:]) < 2:
        return x
    return F.max_pool2d(x, 2, 2)


class VGG(KDModel):
    def __init__(self, cfg: list[list[int]], batch_norm: bool = True, num_classes: int = 100):
        super().__init__()
        cins = [3] + [c[-1] for c in cfg[:-1]]
        for i, (widths, cin) in enumerate(zip(cfg, cins)):
            self.add_module(f"block{i}", _block(widths, cin, batch_norm))
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)

        self.feature_channels = [c[-1] for c in cfg]
        self.embedding_dim = cfg[-1][-1]

        he_fan_out_init(self, linear_std=0.01, linear_zero_bias=True)

    def feature_modules(self) -> list[nn.Module]:
        return [getattr(self, f"block{i}") for i in range(len(self.feature_channels))]

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        pool_after_block3 = x.shape[2] >= 64
        f0 = F.relu(self.block0(x))
        feats, pres = [f0], [f0]
        out = f0
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4)):
            if i < 3 or pool_after_block3:  # pool before blocks 1, 2, 3 (and 4 for large inputs)
                out = _maxpool(out)
            pre = block(out)
            out = F.relu(pre)
            feats.append(out)
            pres.append(pre)
        emb = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return ModelOutput(self.classifier(emb), feats, emb, pres if preact else None, classifier=self.classifier,
                           embedding_map=out)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The last layer of blocks 1-4 (their final BN; the ReLU is applied in ``forward_kd``)."""
        blocks = (self.block1, self.block2, self.block3, self.block4)
        if not all(isinstance(b[-1], nn.BatchNorm2d) for b in blocks):
            raise NotImplementedError(f"{type(self).__name__} without batch norm has no BN before its stage ReLUs")
        return [b[-1] for b in blocks]


def _factory(name: str, cfg_key: str):
    def fn(num_classes: int = 100, **kw) -> VGG:
        return VGG(CFG[cfg_key], batch_norm=True, num_classes=num_classes, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"RepDistiller's {name}_bn (configuration {cfg_key!r})."
    return register_model(fn)


vgg8 = _factory("vgg8", "S")
vgg11 = _factory("vgg11", "A")
vgg13 = _factory("vgg13", "B")
vgg16 = _factory("vgg16", "D")
vgg19 = _factory("vgg19", "E")
