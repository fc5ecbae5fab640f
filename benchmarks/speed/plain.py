"""The plain RepDistiller-style loop the harness is measured against: a torchvision-``datasets``-style
Dataset (PIL images through ``transforms``), a ``DataLoader``, fp32, eager, one method at a time, with
kdbench's own method objects (so only the loop and the data differ)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from methods import Batch

from kdcore.data import InMemoryData
from kdcore.steptimer import StepTimer, section
from kdcore.train import seed_for
from benchmarks.speed.setup import Setup, sync


class PlainDataset(torch.utils.data.Dataset):
    """A torchvision-``datasets``-style CIFAR over the same uint8 images (HWC numpy, PIL per sample).

    Returns ``(img, target, index)`` (RepDistiller's ``CIFAR100Instance``), plus
    ``neg_img`` when ``negatives`` (the triplet authors' ``KDTripletDataset``: a
    uniform training sample of another class, drawn at every load) and
    ``sample_idx`` when ``contrast_k`` (RepDistiller's
    ``CIFAR100InstanceSample``, mode "exact": the index, then ``k`` negatives
    from ``np.random.choice(cls_negative[target], k, replace=k > pool)``).
    """

    def __init__(self, data: InMemoryData, negatives: bool = False, contrast_k: int | None = None):
        size = data.input_shape[1]
        steps = [transforms.RandomCrop(size, padding=data.pad)] if data.pad else []
        if data.flip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
        self.transform = transforms.Compose(steps)
        self.data = data.train_images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), as torchvision
        self.targets = data.train_labels.tolist()
        self.negatives = negatives
        self.contrast_k = contrast_k
        if negatives or contrast_k:
            labels = np.asarray(self.targets)
            self.cls_negative = [np.nonzero(labels != c)[0] for c in range(data.num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def _image(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.data[index]))

    def __getitem__(self, index: int):
        target = self.targets[index]
        out = [self._image(index), target, index]
        if self.negatives:
            out.append(self._image(int(np.random.choice(self.cls_negative[target]))))
        if self.contrast_k:
            pool = self.cls_negative[target]
            neg = np.random.choice(pool, self.contrast_k, replace=self.contrast_k > len(pool))
            out.append(np.hstack((np.asarray([index]), neg)))
        return tuple(out)


def plain_needs(setup: Setup, method) -> dict[str, Any]:
    """What the plain Dataset must supply for ``method``, read off one ``prepare`` on a dummy batch.

    ``extra_index`` -> a negative image per sample; ``contrast_index`` (CRD) ->
    the index and K contrast indices per sample; any other key is drawn in the
    loop by ``prepare`` itself (in-batch sampling costs no data loading).
    """
    n = min(4, setup.data.num_train)
    y = setup.data.train_labels[:n].to(setup.device)
    index = torch.arange(n, device=setup.device)
    drawn = method.prepare(Batch(torch.empty(0), y, index), torch.Generator().manual_seed(0))
    needs = {"negatives": "extra_index" in drawn, "contrast_k": None,
             "prepare": bool(set(drawn) - {"extra_index", "contrast_index"})}
    if "contrast_index" in drawn:
        needs["contrast_k"] = int(drawn["contrast_index"].shape[1]) - 1
    return needs


def time_plain(setup: Setup, method_name: str, warmup: int, steps: int,
               timer: StepTimer | None = None) -> dict[str, Any]:
    """Seconds for ``steps`` steps (after ``warmup``) of the plain loop training ``method_name``.

    ``timer``: the loop times its own parts with it, as ``train_cohort`` does (reset after the warm-up):
    "data" is the loader's batch and its copy to the device (negatives and contrast indices included),
    "student fwd" includes the forward on the negatives.
    """
    device, options = setup.device, setup.options
    model, method = setup.build(method_name)
    teacher = setup.plain_teacher
    needs = plain_needs(setup, method)
    dataset = PlainDataset(setup.data, needs["negatives"], needs["contrast_k"])
    workers = options.workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=options.batch_size, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed_for(options.seed, "plain")),
        worker_init_fn=_seed_numpy if workers else None)
    params = list(model.parameters()) + [p for p in method.parameters() if p.requires_grad]
    r = setup.recipe
    optimizer = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    generator = torch.Generator().manual_seed(seed_for(options.seed, method_name, "method"))
    weights = {"ce": method.ce_weight(), **method.loss_weights()}
    preact = method.needs_preact
    model.train()
    method.train()
    if workers == 0:
        np.random.seed(seed_for(options.seed, "plain-numpy"))
    stamps: list[float] = []
    loss_sum = 0.0
    sync(device)
    t0 = time.perf_counter()
    it = iter(loader)
    for _ in range(warmup + steps):
        with section(timer, "data"):
            item = next(it, None)
            if item is None:
                raise RuntimeError("the dataset has fewer than warmup + steps batches")
            x, y, index = (t.to(device, non_blocking=True) for t in item[:3])
            rest = list(item[3:])
            neg_x = rest.pop(0).to(device, non_blocking=True) if needs["negatives"] else None
            contrast = rest.pop(0).to(device, non_blocking=True) if needs["contrast_k"] else None
        # RepDistiller train_distill: student forward, teacher forward under no_grad, losses, step
        with section(timer, "student fwd"):
            student_out = model.forward_kd(x, preact=preact)
        teacher_out = None
        if method.needs_teacher:
            with section(timer, "teacher fwd"), torch.no_grad():
                teacher_out = teacher.forward_kd(x, preact=preact)
        batch = Batch(x, y, index)
        if needs["prepare"]:
            with section(timer, "prepare"):
                batch.extras = method.prepare(batch, generator)
        if neg_x is not None:
            with section(timer, "student fwd"):
                batch.extras["extra_student"] = model.forward_kd(neg_x, preact=preact)
        if contrast is not None:
            batch.extras["contrast_index"] = contrast
        ce = F.cross_entropy(student_out.logits, y)
        with section(timer, "losses"):
            own = method.losses(student_out, teacher_out, batch)
        terms = {"ce": ce, **own}
        loss = sum(weights[k] * v for k, v in terms.items() if weights[k] != 0)
        optimizer.zero_grad()
        with section(timer, "backward"):
            loss.backward()
        with section(timer, "optimizer"):
            optimizer.step()
        loss_sum += loss.item()  # RepDistiller's AverageMeter update
        sync(device)
        stamps.append(time.perf_counter())
        if timer is not None and len(stamps) == warmup:
            timer.reset()
    del it  # shuts the workers down, outside the timed window
    start = stamps[warmup - 1] if warmup else t0
    return {"seconds": stamps[-1] - start, "needs": needs}


def _seed_numpy(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)
