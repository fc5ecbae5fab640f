"""Teachers: trained by the suite when missing, cached, reused by every grid; or imported.

Cache key = hash of (dataset description, architecture, teacher recipe, seed):
``<teacher_dir>/<dataset>/<arch>__s<seed>__<key>.pt`` holds the weights and
``.json`` beside it the accuracy and the recipe. A teacher trained for one
grid is found by every other grid with the same dataset and recipe.

``--teacher-ckpt ARCH=PATH`` imports an external checkpoint instead (e.g.
RepDistiller's ``ckpt_epoch_240.pth``, ``{"model": state_dict, ...}``);
parameter names are matched directly, or, failing that, in order when every
shape agrees (RepDistiller's module names differ from ours in places).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoints import atomic_torch_save
from .config import fingerprint
from .locks import FileLock
from .models import create_model
from .records import read_json, write_json
from .train import Recipe, StudentRun, evaluate, freeze, seed_for, train_cohort


class TeacherError(RuntimeError):
    pass


IMPORTED = "imported-"  # prefix of an imported teacher's key: "imported-" + its weights' sha256[:12]


def teacher_key(data_desc: dict, arch: str, recipe: Recipe, seed: int) -> str:
    return fingerprint({"data": data_desc, "arch": arch, "recipe": recipe.as_dict(), "seed": seed})


def teacher_path(teacher_dir: Path, data_desc: dict, arch: str, recipe: Recipe, seed: int) -> Path:
    safe = arch.replace(":", "_").replace("/", "_")
    key = teacher_key(data_desc, arch, recipe, seed)
    return Path(teacher_dir) / data_desc["name"] / f"{safe}__s{seed}__{key}.pt"


def load_state_dict_loose(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by name; if names differ, by order when every shape matches; else one clear error."""
    own = model.state_dict()
    if set(own) == set(state):
        wrong = [k for k in own if own[k].shape != state[k].shape]
        if wrong:
            raise TeacherError(f"{source}: shapes differ from {type(model).__name__} at {wrong[0]} "
                               f"({tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}); "
                               f"check the architecture name and the class count")
        model.load_state_dict(state)
        return
    own_items = [(k, v) for k, v in own.items() if not k.endswith("num_batches_tracked")]
    theirs = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(own_items) == len(theirs) and all(a.shape == b.shape for (_, a), (_, b) in zip(own_items, theirs)):
        model.load_state_dict({k: v for (k, _), (_, v) in zip(own_items, theirs)}, strict=False)
        return
    raise TeacherError(f"{source}: the checkpoint does not fit {type(model).__name__} "
                       f"({len(theirs)} tensors vs {len(own_items)} expected, or shapes differ); "
                       f"check the architecture name and the class count")


def import_teacher(arch: str, path: str | Path, num_classes: int) -> torch.nn.Module:
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path} not found; check --teacher-ckpt {arch}=PATH")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TeacherError(f"teacher checkpoint {path} is unreadable ({type(e).__name__}); "
                           f"re-download or re-train it") from None
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise TeacherError(f"teacher checkpoint {path} holds no state dict")
    model = create_model(arch, num_classes=num_classes)
    load_state_dict_loose(model, state, str(path))
    return model


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: the same weights give the same hash."""
    import hashlib
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def inspect_teacher_checkpoint(arch: str, path: str | Path, num_classes: int) -> dict[str, Any]:
    model = import_teacher(arch, path, num_classes)
    sha = weights_fingerprint(model.state_dict())
    return {"source": "imported", "path": str(path), "file": Path(path).name, "weights_sha": sha,
            "key": IMPORTED + sha[:12]}


def teacher_identity(arch, data_desc, recipe, seed, teacher_dir, num_classes, ckpt=None) -> str:
    if ckpt is not None:
        return inspect_teacher_checkpoint(arch, ckpt, num_classes)["key"]
    return teacher_key(data_desc, arch, recipe, seed)


def get_teacher(
    arch: str,
    data,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    teacher_dir: Path,
    ckpt: str | Path | None = None,
    log: Callable[[str], None] = print,
    fast: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A frozen teacher on ``device`` and its info (key, accuracy, where it came from)."""
    if ckpt is not None:
        model = import_teacher(arch, ckpt, data.num_classes).to(device)
        top1, top5 = evaluate(model, data, device)
        info = {"arch": arch, **inspect_teacher_checkpoint(arch, ckpt, data.num_classes), "top1": top1, "top5": top5}
        log(f"teacher {arch}: imported {ckpt}, test top-1 {top1:.2f}")
        return freeze(model), info
    path = teacher_path(teacher_dir, data.describe(), arch, recipe, seed)
    # one process trains a teacher; the others wait here, then find it in the cache
    with FileLock(path.with_name(path.name + ".lock")):
        return _cached_or_trained(arch, data, recipe, seed, device, path, log, fast)


def _cached_or_trained(arch, data, recipe, seed, device, path: Path, log, fast) -> tuple[torch.nn.Module, dict]:
    desc = data.describe()
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        try:
            model = create_model(arch, num_classes=data.num_classes)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            info = read_json(meta_path)
            info["source"] = "cache"
            log(f"teacher {arch}: cached {path} (test top-1 {info['top1']:.2f})")
            return freeze(model.to(device)), info
        except Exception as e:  # a truncated or stale cache entry is retrained, not trusted
            log(f"teacher {arch}: cache entry {path} unreadable ({type(e).__name__}); retraining")
    log(f"teacher {arch}: training ({recipe.epochs} epochs, seed {seed}) -> {path}")
    from methods import BuildContext, build_method

    torch.manual_seed(seed_for(seed, "init", arch))
    model = create_model(arch, num_classes=data.num_classes).to(device)
    method = build_method("vanilla", BuildContext(None, None, data.num_classes, data.train_labels))  # type: ignore[arg-type]
    run = StudentRun(f"teacher:{arch}", model, method, recipe, seed)
    train_cohort([run], data, device, data_generator=torch.Generator().manual_seed(seed_for(seed, "data")),
                 fast=fast)
    if run.error is not None:
        raise TeacherError(f"teacher {arch} failed to train: {run.error}")
    last = run.history[-1]
    info = {"arch": arch, "key": teacher_key(desc, arch, recipe, seed), "seed": seed, "epochs": recipe.epochs,
            "recipe": recipe.as_dict(), "data": desc, "top1": last["test_top1"], "top5": last["test_top5"],
            "top1_best": max(h["test_top1"] for h in run.history), "time_s": run.time_s,
            "path": str(path), "source": "trained", "fast_paths": fast}
    atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    write_json(meta_path, info)
    log(f"teacher {arch}: test top-1 {info['top1']:.2f} after {recipe.epochs} epochs ({run.time_s:.0f}s)")
    return freeze(model), info
