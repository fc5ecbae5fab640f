"""reviewkd: Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021.

The student's stage outputs and its pooled embedding are fused from the deepest upward by
attention-based fusion (ABF) modules into maps of the teacher's shapes ("review": a shallow
student stage also sees what the deeper ones carry), and each fused map is pulled towards the
teacher's map of the same level by the hierarchical context loss (HCL). As the official code
computes it (dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py`` ``ABF``, ``ReviewKD``,
``hcl`` and ``CIFAR-100/train.py``; megvii-research/mdistiller ``mdistiller/distillers/ReviewKD.py``
computes the same):

    student levels  s_1 .. s_n, s_{n+1}: the stage outputs ``features[1..]`` (post-ReLU: the
                    official student is called with ``is_feat=True`` and no ``preact``; mdistiller
                    ``STU_PREACT = False``), then the embedding as a (B, D, 1, 1) map
    teacher levels  t_1 .. t_n, t_{n+1}: the PRE-ReLU stage outputs ``preact_features[1..]``
                    (``teacher(images, is_feat=True, preact=True)``, ``feat[1:]``), then the
                    teacher's embedding as a (B, D_t, 1, 1) map (its ``avgpool`` output)
    ABF_k           c1 = BN(conv1x1(C_s_k -> M, no bias))(s_k)
                    if k <= n (every level but the embedding):
                        r = nearest-upsample(res_{k+1}) to c1's (H, W)
                        a = sigmoid(conv1x1(2M -> 2, with bias)(cat[c1, r]))    (B, 2, H, W)
                        c1 = c1 * a[:, 0] + r * a[:, 1]
                    if c1's size != t_k's size: c1 = nearest-resize(c1) to t_k's (H, W)
                    res_k = c1;  out_k = BN(conv3x3(M -> C_t_k, padding 1, no bias))(c1)
                    run from k = n+1 (the embedding, no fusion) down to k = 1
    M               = min(512, D_s): the student's embedding width
                    (``mid_channel = min(512, in_channels[-1])``)
    HCL(o, t)       with h the height of o:  w = 1, W = 1,  L = mse(o, t);
                    for l in (4, 2, 1), skipping l >= h:
                        w = w / 2;  W = W + w;  L = L + w * mse(avgpool_l(o), avgpool_l(t))
                    HCL = L / W     (mse: mean over every element; avgpool_l: adaptive, to l x l)
    reviewkd        = sum over the levels k = 1 .. n+1 of HCL(out_k, t_k.detach())
    loss            = gamma * CE(s, y) + min(epoch / warmup, 1) * weight * reviewkd

The conv1 and conv2 weights start from ``kaiming_uniform_(a=1)``; the attention conv and the BNs
keep PyTorch's defaults. The ABFs are owned by this method (their parameters join the student's
optimizer, as the official ``ReviewKD`` wraps the student and mdistiller's
``get_learnable_parameters`` adds ``abfs``); their BatchNorms follow the method's train/eval mode.
The embedding level's BatchNorms normalise over the batch alone (a 1x1 map), so, as in both codes,
a training batch of one sample is an error (PyTorch's "Expected more than 1 value per channel").

Sizes come from the probe, never from a table: ABF_k's input channels and resize source are the
student level's, its output channels and output size the teacher level's, M the student's
embedding width. For every cifar100 pair this reproduces the official ``build_review_kd`` tables
(``in_channels``, ``out_channels``, ``shapes``, ``out_shapes``; tested); for a pair with unequal
stage counts (none among the cifar100 pairs, whose student and teacher both have 3 or both 4
stages) the deepest min(n_s, n_t) stages are paired (``at``'s ``stage_align="last"``) with the
embeddings on top, the shallowest stages of the deeper model left out. The official code has no
rule for that case (its ``zip``s would pair mismatched shapes); the rule is ours. Non-square maps
are resized to (H, W) where the official code resizes to (H, H); the same for every CIFAR model.

Warm-up ``epoch``: the official ``train.py`` passes its 0-based loop epoch (weight 0 in the first
epoch, 1/20 in the second, 1 from the 21st), mdistiller's trainer the 1-based epoch (1/20 in
the first epoch, 1 from the 20th). kdbench's ``progress.epoch`` is the 0-based fractional epoch
``e + step / steps_per_epoch``; ``warmup_epoch = "one_based"`` (default) uses floor(epoch) + 1,
mdistiller's weight at every step; ``"zero_based"`` uses floor(epoch), the official script's.
The default is mdistiller's because a zero weight drops the term in kdbench's harness (no
gradient at all reaches the ABFs in the first epoch; in the official code their zero gradient
still receives weight decay and momentum), and because the benchmark's DKD warm-up is mdistiller's.

Terms: ``reviewkd`` (weight ``ramp * weight``); CE is the harness's ``ce`` term, weighted by
``gamma``.

Defaults:
  gamma = 1.0            official ``train.py`` ``--ce-loss-weight`` 1.0; mdistiller
                         ``cfg.py`` ``REVIEWKD.CE_WEIGHT = 1.0``
  weight = 5.0           official ``script/reviewKD.sh`` ``--kd-loss-weight 5.0`` (5 of its 8
                         pairs; ``train.py``'s own default is 1.0); mdistiller
                         ``configs/cifar100/reviewkd.yaml`` ``REVIEWKD_WEIGHT: 5.0`` (its one
                         CIFAR-100 config, resnet32x4 -> resnet8x4; ``cfg.py`` default 1.0)
  warmup = 20.0          official ``train.py`` ``--kd-warm-up 20.0``; mdistiller
                         ``REVIEWKD.WARMUP_EPOCHS = 20``
  warmup_epoch = "one_based"   mdistiller's trainer (see above; "zero_based": official train.py)
  max_mid_channel = 512  the ``512`` of ``min(512, in_channels[-1])`` in both codes (mdistiller's
                         ``REVIEWKD.MAX_MID_CHANNEL = 512``, which its code reads but never uses)
  student_maps = "features"    post-ReLU student stages (official; mdistiller ``STU_PREACT =
                         False``); "preact" takes the student's pre-ReLU stages too
The official script's other per-pair weights (resnet32x4 -> ShuffleV2 8.0, resnet56 -> resnet20
0.6, resnet110 -> resnet32 1.0) are data in ``kdcore/presets/cifar100.toml``
(``[method_by_pair."T:S".reviewkd]``), not defaults here.

Teacher mode: the teacher runs in eval mode (BN on running statistics), frozen and shared by the
cohort, as in mdistiller (whose ``Distiller.train`` puts the teacher in eval mode). The official
``train.py`` never calls ``teacher.eval()`` (``util/misc.py`` ``load_teacher_weight`` only loads the
weights and sets ``requires_grad = False``; ``test()`` switches only the student), so there the
teacher's BatchNorms normalise each training batch by its own statistics (and update their running
statistics, which nothing reads): its target maps t_k are those of a train-mode teacher. This is a
deviation from the official script, not from mdistiller.

Deviations: the teacher's eval mode (above); the unequal-stage pairing rule and the (H, W)
resizing above; the fused map is resized to the student level's own size where the official code
resizes to its configured ``shapes[k]``, which equals that size in every official configuration;
``warmup`` is a float (as the official's, mdistiller's is an int). The official training recipe
(batch 128, lr 0.1, or 0.02 for ShuffleNet / MobileNet students, Nesterov SGD) is not this
method's: kdbench trains every method with the preset's recipe (mdistiller's reviewkd.yaml uses
that same RepDistiller recipe).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .at import paired_stages
from .base import BuildContext, Choice, Distiller, Range, register_method
from .dkd import warmup_ramp  # DKD's ramp, with the epoch base the trainer used

_EPOCH_BASES = {"one_based": 1, "zero_based": 0}
HCL_LEVELS = (4, 2, 1)


def hcl(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """The hierarchical context loss, summed over the paired maps (each pair of equal shape)."""
    total = None
    for fs, ft in zip(student_maps, teacher_maps):
        h = fs.shape[2]
        level_loss = F.mse_loss(fs, ft, reduction="mean")
        w, w_sum = 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= h:
                continue
            w /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(fs, (size, size)), F.adaptive_avg_pool2d(ft, (size, size)))
            level_loss = level_loss + pooled * w
            w_sum += w
        level_loss = level_loss / w_sum
        total = level_loss if total is None else total + level_loss
    return total


class ABF(nn.Module):
    """Attention-based fusion: one student level -> one teacher-shaped map (and the residual passed up)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None,
                out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(output in the teacher level's shape, the fused map to hand to the next shallower level)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the residual of the deeper level")
            residual = F.interpolate(residual, size=tuple(x.shape[2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding.reshape(embedding.shape[0], -1, 1, 1)


@register_method("reviewkd")
class ReviewKD(Distiller):
    defaults = {"gamma": 1.0, "weight": 5.0, "warmup": 20.0, "warmup_epoch": "one_based",
                "max_mid_channel": 512, "student_maps": "features"}
    ranges = {"gamma": Range(ge=0), "weight": Range(ge=0), "warmup": Range(gt=0),
              "warmup_epoch": Choice(*_EPOCH_BASES), "max_mid_channel": Range(ge=1),
              "student_maps": Choice("features", "preact")}
    needs_features = True
    needs_preact = True

    def __init__(self, ctx: BuildContext, **hparams):
        super().__init__(ctx, **hparams)
        if ctx.teacher is None:
            raise ValueError("reviewkd needs a teacher")
        n_s, n_t = len(ctx.student.features) - 1, len(ctx.teacher.features) - 1
        if min(n_s, n_t) < 1:
            raise ValueError("reviewkd needs at least one stage feature map (features[1:]) in both models")
        self.pairs = paired_stages(n_s, n_t, "last")  # shallow to deep
        s_levels = self._student_levels(ctx.student)
        t_levels = self._teacher_levels(ctx.teacher)
        for s, t in zip(s_levels, t_levels):
            if s.dim() != 4 or t.dim() != 4:
                raise ValueError(f"reviewkd needs 4-D stage maps, got student {tuple(s.shape)} "
                                 f"and teacher {tuple(t.shape)}")
        mid = min(self.max_mid_channel, int(ctx.student.embedding.shape[1]))
        last = len(s_levels) - 1
        # built shallow to deep (the official construction order), run deep to shallow
        abfs = [ABF(int(s.shape[1]), mid, int(t.shape[1]), fuse=k < last)
                for k, (s, t) in enumerate(zip(s_levels, t_levels))]
        self.abfs = nn.ModuleList(abfs[::-1])
        self.out_sizes = [tuple(int(v) for v in t.shape[2:]) for t in t_levels][::-1]

    # levels, shallow to deep: the paired stages, then the embedding as a 1x1 map
    def _student_levels(self, out) -> list[torch.Tensor]:
        maps = out.features if self.student_maps == "features" else out.preact_features
        if maps is None:
            raise ValueError("reviewkd with student_maps='preact' needs the student's preact_features")
        return [maps[i_s] for i_s, _ in self.pairs] + [_as_map(out.embedding)]

    def _teacher_levels(self, out) -> list[torch.Tensor]:
        if out.preact_features is None:
            raise ValueError("reviewkd needs the teacher's preact_features (needs_preact)")
        return [out.preact_features[i_t] for _, i_t in self.pairs] + [_as_map(out.embedding)]

    def fuse(self, student_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The ABF outputs, shallow to deep, from the student levels (shallow to deep)."""
        outs, residual = [], None
        for abf, x, size in zip(self.abfs, student_levels[::-1], self.out_sizes):
            out, residual = abf(x, residual, size)
            outs.append(out)
        return outs[::-1]

    def loss_weights(self):
        ramp = warmup_ramp(self.progress.epoch, self.warmup, _EPOCH_BASES[self.warmup_epoch])
        return {"reviewkd": ramp * self.weight}

    def losses(self, student, teacher, batch):
        fused = self.fuse(self._student_levels(student))
        targets = [t.detach() for t in self._teacher_levels(teacher)]
        return {"reviewkd": hcl(fused, targets)}
