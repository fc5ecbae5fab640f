"""The networks of the seed paper's code (Oki, Abe, Miyao, Kurita 2020, "Triplet Loss for Knowledge
Distillation"; github.com/i13abe/Triplet-Loss-for-Knowledge-Distillation), in the uniform interface.

Two versions live in that repository:

``oki2020_teacher`` / ``oki2020_student``: ``network.py`` ``Net_teacher`` / ``Net_student`` (the code of
    the paper, commit 2c13e23). Teacher: five 3x3 convs 32-32-64-64-128, each ReLU *then* BN, 2x2
    max-pool after the 1st, 2nd and 5th; linear 2048-512-128-10 with ReLU and dropout 0.5 after the
    first two. Student: three 3x3 convs 32-32-64, each ReLU then 2x2 max-pool, no BN; linear
    1024-128-10 (its ``dropout`` module is defined but never used, so it is absent here).
``oki2022_net``: ``utils/networks.py`` ``Net`` (the later code): three 3x3 convs 16-32-64, each BN +
    ReLU + 2x2 max-pool, adaptive average pool to 4x4, linear 1024-128-classes.
``tv_resnet34`` / ``tv_resnet34_imagenet``: the later code's teacher, torchvision's ``resnet34`` with
    a new final layer for the class count (``teacher.py``: ``resnet34(pretrained=True)``, then
    ``model.fc = nn.Linear(512, classes)``). ``tv_resnet34`` starts from scratch and says so once;
    ``tv_resnet34_imagenet`` starts from the user's torchvision ImageNet weights file (see
    ``imagenet_weights_file``): every tensor but the 1000-class ``fc`` is loaded, ``fc`` is new.

Parameter names equal the authors' (``conv1``, ``batchnorm1``, ``fc1``...; ``features.0``,
``classifier.0``...; torchvision's for resnet34), so their saved ``state_dict`` files import with
``--teacher-ckpt ARCH=PATH`` as they are (e.g. ``teacher.py``'s ``teacher_param.pth`` as
``tv_resnet34``). Initialisation is PyTorch's default, as the authors' (they call no init).

The uniform interface (``forward_kd``):
  features: one map per conv block (after its pooling where it has one); ``features[0]`` (the
      "stem") is the first block. oki2020_teacher: 5 maps, 32@16 32@8 64@8 64@8 128@4 at 32x32;
      oki2020_student: 32@16 32@8 64@4; oki2022_net: 16@16 32@8 64@4. resnet34: the stem's ReLU
      output (before the max-pool, as timm's ``act1``), then layer1..layer4.
  preact_features: the maps before each block's last ReLU. The 2020 teacher's blocks end with BN
      (ReLU comes before it), so there is no trailing ReLU and they equal ``features``. For the
      blocks that end ReLU -> max-pool (2020 student) or BN -> ReLU -> max-pool (2022 Net) the pool is
      taken first: max-pool commutes with ReLU (both monotone), so ``relu(pool(pre))`` is exactly
      the authors' ``pool(relu(pre))`` and ``pool(pre)`` is its pre-activation. resnet34: the
      residual sum of each layer's last block before its ReLU (RepDistiller's convention).
  embedding: the vector the last linear layer reads: the 128-d hidden layer after its ReLU (for
      the 2020 teacher before its dropout: logits = fc3(dropout(embedding))); resnet34: the
      512-d average-pooled vector.

Input sizes: at 32x32 the 2020 networks compute exactly the authors' function. Their
``x.view(-1, 128*4*4)`` needs 32x32 input; here an adaptive average pool to 4x4 comes before the
flatten (the identity at 32x32, where the map is already 4x4; the 2022 ``Net`` has the same pool),
so the digits (8x8, 16x16) and MNIST (28x28) run too. Gray datasets arrive as 3 equal channels
(``kdcore.data``), so every network keeps 3 input channels.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torchvision.models import resnet34
import torch.nn.functional as F
from torch import nn

from .registry import KDModel, ModelOutput, UnknownModelError, register_model

__all__ = ["OkiTeacher2020", "OkiStudent2020", "OkiNet2022", "TorchvisionResNet34", "imagenet_weights_file"]

IMAGENET_FILE = "resnet34-b627a593.pth"  # torchvision's ResNet34_Weights.IMAGENET1K_V1 file name
WEIGHTS_ENV = "KDBENCH_RESNET34_WEIGHTS"
_said: set[str] = set()


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        print(message, file=sys.stderr, flush=True)


class OkiTeacher2020(KDModel):
    """``network.py`` ``Net_teacher``: conv -> ReLU -> BN (x5, pools after 1, 2, 5), MLP 2048-512-128-n."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        widths = [3, 32, 32, 64, 64, 128]
        for i in range(1, 6):
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1))
        self.fc1 = nn.Linear(128 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, 128)
        self.fc3 = nn.Linear(128, num_classes)
        for i in range(1, 6):
            setattr(self, f"batchnorm{i}", nn.BatchNorm2d(widths[i]))
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(p=0.5)
        self.pooled_after = (1, 2, 5)
        self.feature_channels = widths[1:]
        self.embedding_dim = 128

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        feats = []
        for i in range(1, 6):
            x = getattr(self, f"batchnorm{i}")(F.relu(getattr(self, f"conv{i}")(x)))
            if i in self.pooled_after:
                x = self.pool(x)
            feats.append(x)
        flat = torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)
        h = self.dropout(F.relu(self.fc1(flat)))
        emb = F.relu(self.fc2(h))
        logits = self.fc3(self.dropout(emb))
        return ModelOutput(logits, feats, emb, list(feats) if preact else None, classifier=self.fc3)


class OkiStudent2020(KDModel):
    """``network.py`` ``Net_student``: conv -> ReLU -> max-pool (x3, no BN), linear 1024-128-n."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.pool = nn.MaxPool2d(2, 2)
        self.feature_channels = [32, 32, 64]
        self.embedding_dim = 128

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        feats, pres = [], []
        for conv in (self.conv1, self.conv2, self.conv3):
            pre = self.pool(conv(x))  # = the pre-ReLU map of pool(relu(conv(x)))
            x = F.relu(pre)
            pres.append(pre)
            feats.append(x)
        flat = torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)
        emb = F.relu(self.fc1(flat))
        return ModelOutput(self.fc2(emb), feats, emb, pres if preact else None, classifier=self.fc2)


class OkiNet2022(KDModel):
    """``utils/networks.py`` ``Net``: (conv -> BN -> ReLU -> max-pool) x3 with 16-32-64, avg-pool 4x4, 1024-128-n."""

    def __init__(self, num_classes: int = 10, input_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = input_channels
        for cout in (16, 32, 64):
            layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=False), nn.MaxPool2d(kernel_size=2, stride=2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(nn.Linear(64 * 4 * 4, 128), nn.ReLU(inplace=False),
                                        nn.Linear(128, num_classes))
        self.feature_channels = [16, 32, 64]
        self.embedding_dim = 128

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        feats, pres = [], []
        for b in range(3):
            conv, bn, _, pool = self.features[4 * b:4 * b + 4]
            pre = pool(bn(conv(x)))  # = the pre-ReLU map of pool(relu(bn(conv(x))))
            x = F.relu(pre)
            pres.append(pre)
            feats.append(x)
        flat = torch.flatten(self.avgpool(x), 1)
        emb = F.relu(self.classifier[0](flat))
        return ModelOutput(self.classifier[2](emb), feats, emb, pres if preact else None,
                           classifier=self.classifier[2])


def imagenet_weights_file() -> Path | None:
    """The user's torchvision ResNet-34 ImageNet weights: ``$KDBENCH_RESNET34_WEIGHTS``, else torchvision's
    own cache (``<torch hub dir>/checkpoints/resnet34-b627a593.pth``, where ``resnet34(weights=...)``
    keeps it; ``$TORCH_HOME`` moves it). None when neither exists: nothing is downloaded."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    return cached if cached.is_file() else None


class ImageNetWeightsMissing(UnknownModelError):
    """The model cannot be built here (its weights file is absent): reported as bad input, one line."""


class TorchvisionResNet34(KDModel):
    """torchvision's ``resnet34(num_classes=n)`` (its modules and ``state_dict`` keys) with stage features."""

    def __init__(self, num_classes: int = 10, imagenet_weights: str | Path | None = None):
        super().__init__()
        net = resnet34(weights=None, num_classes=num_classes)
        for name, module in net.named_children():  # the same names, so torchvision state dicts load as they are
            setattr(self, name, module)
        self.feature_channels = [64, 64, 128, 256, 512]
        self.embedding_dim = 512
        if imagenet_weights is not None:
            self.load_imagenet(imagenet_weights)

    def load_imagenet(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ImageNetWeightsMissing(f"tv_resnet34_imagenet: no ImageNet weights file at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        dropped = {k: tuple(v.shape) for k, v in state.items() if k.startswith("fc.")}
        body = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(body, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"tv_resnet34_imagenet: {path} is not a torchvision resnet34 state dict "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        _say_once(f"imagenet:{path}", f"tv_resnet34_imagenet: ImageNet weights from {path}; its "
                  f"{dropped.get('fc.weight', ('?',))[0]}-class fc layer is dropped and a new "
                  f"{self.fc.out_features}-class fc starts from PyTorch's default init")

    @staticmethod
    def _layer(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in layer[:-1]:
            x = block(x)
        last = layer[-1]
        identity = x if last.downsample is None else last.downsample(x)
        out = last.bn2(last.conv2(F.relu(last.bn1(last.conv1(x)))))
        pre = out + identity
        return F.relu(pre), pre

    def forward_kd(self, x: torch.Tensor, preact: bool = False) -> ModelOutput:
        pre = self.bn1(self.conv1(x))
        x = F.relu(pre)
        feats, pres = [x], [pre]
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x, pre = self._layer(layer, x)
            feats.append(x)
            pres.append(pre)
        emb = torch.flatten(self.avgpool(x), 1)
        return ModelOutput(self.fc(emb), feats, emb, pres if preact else None, classifier=self.fc, embedding_map=x)

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The last block's bn2 of each stage, summed with the shortcut before the ReLU."""
        return [layer[-1].bn2 for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]


@register_model
def oki2020_teacher(num_classes: int = 10, **kw) -> OkiTeacher2020:
    """Oki et al. 2020 ``network.py`` ``Net_teacher`` (1.26 M parameters at 10 classes)."""
    return OkiTeacher2020(num_classes=num_classes, **kw)


@register_model
def oki2020_student(num_classes: int = 10, **kw) -> OkiStudent2020:
    """Oki et al. 2020 ``network.py`` ``Net_student`` (0.16 M parameters at 10 classes)."""
    return OkiStudent2020(num_classes=num_classes, **kw)


@register_model
def oki2022_net(num_classes: int = 10, **kw) -> OkiNet2022:
    """Oki et al.'s later ``utils/networks.py`` ``Net`` (the student of ``student.py``)."""
    return OkiNet2022(num_classes=num_classes, **kw)


@register_model
def tv_resnet34(num_classes: int = 10, **kw) -> TorchvisionResNet34:
    """torchvision's resnet34 with a ``num_classes`` fc, from scratch (says so once per process)."""
    _say_once("scratch", "tv_resnet34: torchvision's resnet34 from scratch (random init); the authors' "
              "teacher.py starts from ImageNet weights: for that use tv_resnet34_imagenet with the "
              f"weights file in ${WEIGHTS_ENV} or torchvision's cache")
    return TorchvisionResNet34(num_classes=num_classes, **kw)


@register_model
def tv_resnet34_imagenet(num_classes: int = 10, **kw) -> TorchvisionResNet34:
    """torchvision's resnet34 started from the user's ImageNet weights file, fc replaced (``imagenet_weights_file``)."""
    path = imagenet_weights_file()
    if path is None or not path.is_file():
        where = path or Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
        raise ImageNetWeightsMissing(
            f"tv_resnet34_imagenet: no ImageNet weights file at {where} (nothing is downloaded here); put "
            f"torchvision's {IMAGENET_FILE} there or set {WEIGHTS_ENV}=PATH, or use tv_resnet34 to train "
            f"the teacher from scratch")
    return TorchvisionResNet34(num_classes=num_classes, imagenet_weights=path, **kw)
