"""Teachers: trained by the suite when missing, cached, reused by every grid; or imported.

Cache key = hash of (dataset description, architecture, teacher recipe, seed):
``<teacher_dir>/<dataset>/<arch>__s<seed>__<key>.pt`` holds the weights and
``.json`` beside it the accuracy and the recipe. A teacher trained for one
grid is found by every other grid with the same dataset and recipe. One process
trains a teacher (a lock, ``.pt.lock``, beside it; the others wait, then read the
cache). While it trains it checkpoints every ``checkpoint_every``-th epoch to
``<arch>__s<seed>__<key>.ckpt.pt`` through a student run's checkpoint (``recorder.RunCheckpoint``: the
students' format, run state, data-stream RNG, the key, checked on resume), so a killed teacher
resumes after its last checkpointed epoch, bitwise equal on the CPU to an
uninterrupted one; the checkpoint is removed once the teacher file is written.

Importing the field's teachers. ``--teacher-ckpt ARCH=PATH`` uses an external
checkpoint for one grid; ``python -m benchmarks.teachers import DIR --dataset
cifar100`` imports a whole folder laid out as RepDistiller's ``save/models/``
(``<arch>_vanilla/ckpt_epoch_240.pth``, what ``scripts/fetch_pretrained_teachers.sh``
downloads) or mdistiller's extracted ``cifar_teachers.tar`` (same layout), and
every architecture found becomes the teacher of that dataset for every grid
(``<teacher_dir>/<dataset>/imported/<arch>.pt`` + ``.json``). Each imported
teacher's test accuracy is measured and printed beside the published one.

What the loader accepts, and why (``read_teacher_checkpoint``):

* RepDistiller's ``train_teacher.py`` and mdistiller write
  ``{"model": state_dict, "optimizer": optimizer.state_dict(), "epoch": ..,
  "accuracy"/"best_acc": ..}``. The optimizer's learning rate is a
  ``numpy.float64`` (``adjust_learning_rate`` computes it with numpy), which
  plain ``torch.load(weights_only=True)`` refuses. We stay on
  ``weights_only=True`` and allow exactly numpy's scalar constructor (under
  both ``numpy.core`` (files written with numpy 1.x) and ``numpy._core``
  (numpy 2.x) names), ``numpy.dtype`` and the scalar dtype classes; never a
  full unpickle, so a file that would run code is refused, not executed.
* ``{"state_dict": ...}`` and bare state dicts; a DataParallel ``module.``
  prefix is stripped.
* tensors saved on a GPU (CUDA-tagged storages) load on a CPU-only machine
  (``map_location="cpu"``); torch 1.x files, zip or legacy (pre-1.6) format.

The zoo's parameter names and order equal RepDistiller's (and mdistiller's) for
all 22 of their CIFAR models (checked against their ``models/``), so its checkpoints match by
name; ``load_state_dict_loose`` documents the by-order fallback for others.
"""
from __future__ import annotations

import csv
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from methods import BuildContext, build_method

from kdcore import checkpoints
from kdcore.config import ConfigError, OneLineParser, check_given, fingerprint, pick_device
from kdcore.data import DataError, dataset_loader, load_dataset
from benchmarks.locks import FileLock
from kdcore.models import create_model, list_models
from kdcore.text import plural
from kdcore.recorder import RunCheckpoint
from kdcore.records import read_json, write_json
from kdcore.train import StudentRun, evaluate, freeze, seed_for, train_cohort
from kdcore.recipe import FastPaths, Recipe, evaluated

# a teacher measured more than this many points below its published top-1 gets a warning
# (RepDistiller issue #29: a downloaded resnet110 tested at 70.3 instead of 74.3)
WARN_BELOW_PUBLISHED = 1.0
PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "reports" / "data"
NBT = "num_batches_tracked"


IMPORTED = "imported-"  # prefix of an imported teacher's key: "imported-" + its weights' sha256[:12]


class TeacherError(RuntimeError):
    pass


def check_against_reference(arch: str, info: dict[str, Any], reference: Mapping[str, Any] | None,
                            dataset: str) -> None:
    """A teacher (trained, cached or imported: ``info``) under the preset's ``[teacher_reference]`` range stops
    the grid before its students train: a weak teacher is a defect to find, not a number to print."""
    if not reference or info.get("top1") is None or info["top1"] >= reference["min_top1"]:
        return
    raise TeacherError(
        f"teacher {arch} reached {info['top1']:.2f}% test top-1 on {dataset}, under the "
        f"{reference['min_top1']:g}-{reference['max_top1']:g}% published for comparable networks "
        f"({reference['source']}): train it longer (--set teacher_train.epochs=N) or give a better one "
        f"(--teacher-ckpt {arch}=PATH); --set teacher_reference.min_top1=0 accepts it")


# how a teacher's init and batch stream are seeded (``_cached_or_trained``); part of its key, so a teacher
# trained under another scheme is never taken for this one's. 2: its own labels ("teacher", ...): under 1 it
# shared seed_for(seed, "data") and seed_for(seed, "init", arch) with the students of the same seed, so
# student seed 0 trained on the teacher's very batches (and, for a same-architecture pair, from its init)
TEACHER_SEEDING = 2


def teacher_key(data_desc: dict, arch: str, recipe: Recipe, seed: int, amp: str = "fp32") -> str:
    """The trained teacher's identity. ``amp``: the autocast it trains under (the fast paths'); a bf16 teacher
    (the CUDA default) is another teacher than an fp32 one, and an fp32 one keeps the key it always had."""
    return fingerprint({"data": data_desc, "arch": arch, "recipe": recipe.as_dict(), "seed": seed,
                        "seeding": TEACHER_SEEDING, **({"amp": amp} if amp != "fp32" else {})})


def teacher_path(teacher_dir: Path, data_desc: dict, arch: str, recipe: Recipe, seed: int, amp: str = "fp32") -> Path:
    key = teacher_key(data_desc, arch, recipe, seed, amp)
    return Path(teacher_dir) / data_desc["name"] / f"{_safe(arch)}__s{seed}__{key}.pt"


def imported_teacher_path(teacher_dir: Path, dataset_name: str, arch: str) -> Path:
    """Where ``import`` stores the teacher of ``arch`` for ``dataset_name`` (``.json`` beside it)."""
    return Path(teacher_dir) / dataset_name / "imported" / f"{_safe(arch)}.pt"


def _safe(arch: str) -> str:
    return arch.replace(":", "_").replace("/", "_")


# ---------------------------------------------------------------------------------------------
# reading a checkpoint file

EXTERNAL_CHECKPOINT = ("a PyTorch checkpoint of the model's weights (torch.save of its state_dict, or of a dict "
                       "holding it as 'model' or 'state_dict')")
KDBENCH_TEACHER = "the teacher's weights as kdbench saves them"


def _numpy_safe_globals() -> list:
    """The numpy globals a RepDistiller/mdistiller checkpoint pickles, and nothing else.

    A ``numpy.float64`` pickles as ``multiarray.scalar(numpy.dtype("f8"), raw bytes)``; the dtype
    is rebuilt by ``numpy.dtype`` and then has its state set, which ``weights_only`` allows only
    for allowlisted classes (``numpy.dtypes.Float64DType`` ...). numpy 1.x names the scalar
    constructor ``numpy.core.multiarray.scalar``, numpy 2.x ``numpy._core.multiarray.scalar``;
    both names map to the installed function (numpy.core itself is never imported).
    """
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover  (numpy 1.x)
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list = [(multiarray.scalar, "numpy.core.multiarray.scalar"),
                     (multiarray.scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
        if hasattr(dtypes, name):
            allowed.append(getattr(dtypes, name))
    return allowed


def _refused_global(message: str) -> str | None:
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"got <class '([\w.]+)'>", message)
    return m.group(1) if m else None


def read_teacher_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a teacher checkpoint file, read safely (see the module docstring).

    ``torch.load(path, map_location="cpu", weights_only=True)`` with exactly the numpy scalar
    globals allowed; the weights are ``ckpt["model"]`` (RepDistiller, mdistiller),
    ``ckpt["state_dict"]`` or the dict itself; a DataParallel ``module.`` prefix is stripped.
    Anything else raises ``TeacherError`` saying what was found and what to do.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise TeacherError(f"teacher checkpoint {path} is a folder; pass the checkpoint file in it, e.g. "
                           f"{path / 'ckpt_epoch_240.pth'} (--teacher-ckpt ARCH=PATH)")
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path} not found; check the path (--teacher-ckpt ARCH=PATH)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        refused = _refused_global(msg)
        if refused:
            raise TeacherError(
                f"teacher checkpoint {path} holds pickled Python objects ({refused}) besides tensors, plain "
                f"containers and numpy scalars; kdbench refused to unpickle it (nothing in it was run). "
                f"If you trust the file, re-save just its weights: torch.save(<the model>.state_dict(), "
                f"'teacher.pth')") from None
        raise TeacherError(f"teacher checkpoint {path} is unreadable: expected {EXTERNAL_CHECKPOINT}, found "
                           f"{checkpoints.what_is_there(path)}; re-download or re-save it, or pass another file") \
            from None
    return _extract_state_dict(ckpt, path)


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        return f"a dict with keys {keys[:8]}{' ...' if len(keys) > 8 else ''}"
    return f"a {type(obj).__name__}"


def _extract_state_dict(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(ckpt, dict):
        raise TeacherError(f"teacher checkpoint {path} holds {_describe(ckpt)}, not a state dict; save "
                           f"model.state_dict() (or {{'model': model.state_dict()}}) and pass that file")
    for entry in ("model", "state_dict"):
        if isinstance(ckpt.get(entry), dict):
            state, where = ckpt[entry], f"its {entry!r} entry"
            break
    else:
        if not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise TeacherError(f"teacher checkpoint {path} holds {_describe(ckpt)} and no 'model' or "
                               f"'state_dict' entry: no model weights found; pass the file that holds them")
        state, where = ckpt, "it"
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not state or bad:
        raise TeacherError(f"teacher checkpoint {path}: {where} is not a state dict "
                           f"({'empty' if not state else f'{bad[0]!r} is a {type(state[bad[0]]).__name__}'}); "
                           f"pass a file holding model.state_dict()")
    if all(str(k).startswith("module.") for k in state):  # saved from nn.DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


# ---------------------------------------------------------------------------------------------
# fitting a state dict into a model

def _natural(name: str) -> list:
    """Sort key that orders ``layer2`` before ``layer10`` (digits compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split(name: str) -> tuple[str, str]:
    module, _, leaf = name.rpartition(".")
    return module, leaf


def load_state_dict_loose(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: by name, or by order when that pairing is unambiguous.

    By name: the names equal the model's (``num_batches_tracked`` buffers may be missing, as in
    files from torch < 0.4.1; the model's own are kept). Every shape must agree.

    By order, when the names differ: tensors are paired position by position
    (``num_batches_tracked`` aside; those follow their module). The pairing is accepted only if

    1. the counts agree and at every position the shape and the leaf name (``weight``, ``bias``,
       ``running_mean``, ``running_var``) agree, and module boundaries fall at the same positions
       (a BN's four tensors go to one BN);
    2. it is unambiguous: among tensors of the same shape and leaf, the file's order and the
       names' order tell the same story. For any two such tensors, the one whose name sorts first
       (digits as numbers) in the file must pair with the one whose name sorts first in the model.
       Order alone cannot tell two same-shape BN layers apart; when the file's order and its own
       names disagree about which comes first, the file may come from a model whose modules were
       registered in another order, and pairing by position would put weights in the wrong
       places. Then ``TeacherError`` names the two tensors; nothing is guessed.

    What no rule on names and shapes can catch: a file whose names *and* order both follow another
    module order looks exactly like a correct one. Measuring the teacher is the check for that
    (``import`` prints measured against published top-1; a mis-loaded BN teacher tests near chance).
    """
    own = model.state_dict()
    name = type(model).__name__
    core_own = {k for k in own if not k.endswith(NBT)}
    core_theirs = {k for k in state if not k.endswith(NBT)}
    if core_own == core_theirs:
        wrong = [k for k in own if k in core_own and own[k].shape != state[k].shape]  # model order: one message
        if wrong:
            k = wrong[0]
            raise TeacherError(f"{source}: shapes differ from {name} at {k} ({tuple(state[k].shape)} vs "
                               f"{tuple(own[k].shape)}); check the architecture name and the class count")
        model.load_state_dict({k: state.get(k, own[k]) for k in own})
        return
    model.load_state_dict(_pair_by_order(own, state, source, name))


def _pair_by_order(own: dict, state: dict, source: str, name: str) -> dict[str, torch.Tensor]:
    ours = [(k, v) for k, v in own.items() if not k.endswith(NBT)]
    theirs = [(k, v) for k, v in state.items() if not k.endswith(NBT)]
    unfit = (f"{source}: the checkpoint does not fit {name}: names differ, and matching by order fails "
             f"({len(theirs)} tensors vs {len(ours)} expected")
    if len(ours) != len(theirs):
        raise TeacherError(unfit + "); check the architecture name and the class count")
    for i, ((ko, vo), (kt, vt)) in enumerate(zip(ours, theirs)):
        if vo.shape != vt.shape or _split(ko)[1] != _split(kt)[1]:
            raise TeacherError(unfit + f"; at position {i} {kt} {tuple(vt.shape)} vs {ko} {tuple(vo.shape)}); "
                                       f"check the architecture name and the class count")
        if i and ((_split(ko)[0] == _split(ours[i - 1][0])[0]) != (_split(kt)[0] == _split(theirs[i - 1][0])[0])):
            raise TeacherError(unfit + f"; modules split differently at {kt} vs {ko}); "
                                       f"check the architecture name")
    groups: dict[tuple, list[int]] = {}
    for i, (k, v) in enumerate(ours):
        groups.setdefault((tuple(v.shape), _split(k)[1]), []).append(i)
    for (shape, _), idx in groups.items():
        nat_t = [_natural(theirs[i][0]) for i in idx]
        nat_o = [_natural(ours[i][0]) for i in idx]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if (nat_t[a] < nat_t[b]) != (nat_o[a] < nat_o[b]):
                    ta, tb = theirs[idx[a]][0], theirs[idx[b]][0]
                    oa, ob = ours[idx[a]][0], ours[idx[b]][0]
                    raise TeacherError(
                        f"{source}: names differ from {name} and matching by order is ambiguous: {ta} and "
                        f"{tb} have the same shape {shape}; by position they would load into {oa} and {ob}, "
                        f"but their names sort the other way round, so the file's order cannot be trusted. "
                        f"Rename the checkpoint's keys to kdbench's (RepDistiller's) names")
    out = dict(own)
    modules: dict[str, str] = {}
    for (ko, _), (kt, vt) in zip(ours, theirs):
        out[ko] = vt
        modules[_split(kt)[0]] = _split(ko)[0]
    for kt, vt in state.items():  # BN step counters follow their module
        if kt.endswith(NBT) and _split(kt)[0] in modules:
            ko = f"{modules[_split(kt)[0]]}.{NBT}".lstrip(".")
            if ko in own:
                out[ko] = vt
    return out


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 hex digest of a model's weights: an imported teacher's identity.

    Over the sorted keys, each key's dtype, shape and the raw bytes of its CPU contiguous tensor,
    so the same weights saved in any format (RepDistiller dict, ``module.`` prefix, bare, legacy)
    give the same digest. ``num_batches_tracked`` (a BN step counter that does not change what the
    model computes, and that files from torch < 0.4.1 lack) is left out.
    """
    h = hashlib.sha256()
    for k in sorted(state_dict):
        if k.endswith(NBT):
            continue
        t = state_dict[k].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0{len(raw)}\0".encode())
        h.update(raw)
    return h.hexdigest()


def _fit_checkpoint(arch: str, path: str | Path, num_classes: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    path = Path(path).expanduser()
    state = read_teacher_checkpoint(path)
    model = create_model(arch, num_classes=num_classes)
    load_state_dict_loose(model, state, str(path))
    sha = weights_fingerprint(model.state_dict())
    info = {"source": "imported", "path": str(path), "file": path.name, "weights_sha": sha,
            "key": IMPORTED + sha[:12]}
    return model, info


def inspect_teacher_checkpoint(arch: str, path: str | Path, num_classes: int) -> dict[str, Any]:
    """Load ``path`` and fit it into ``create_model(arch, num_classes)``; no evaluation.

    Returns ``{"source": "imported", "path", "file", "weights_sha", "key": "imported-<sha[:12]>"}``;
    raises ``TeacherError`` on any problem (for the runner's checks before training).
    """
    return _fit_checkpoint(arch, path, num_classes)[1]


def import_teacher(arch: str, path: str | Path, num_classes: int) -> torch.nn.Module:
    """The model of ``arch`` with the weights of checkpoint ``path`` (``TeacherError`` if they do not fit)."""
    return _fit_checkpoint(arch, path, num_classes)[0]


# ---------------------------------------------------------------------------------------------
# the teacher a grid uses

def teacher_inputs(data_desc: dict) -> dict:
    """How test images reach a teacher (besides its weights, what its measured accuracy depends on)."""
    return {"input_shape": data_desc.get("input_shape"), "mean": data_desc.get("mean"), "std": data_desc.get("std"),
            "normalize": data_desc.get("normalize", True), "num_classes": data_desc.get("num_classes")}


def _read_imported(teacher_dir: Path, data_desc: dict, arch: str) -> tuple[Path, dict] | None:
    """The teacher imported for ``data_desc``'s dataset (its file and .json), or None; a TeacherError when it
    was imported for other inputs (image size, normalisation: its measured accuracy does not hold)."""
    name = data_desc["name"]
    path = imported_teacher_path(teacher_dir, name, arch)
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        return None
    try:
        meta = read_json(meta_path)
    except Exception as e:
        raise TeacherError(f"imported teacher {meta_path} is unreadable ({type(e).__name__}); re-import it or remove "
                           f"it: python -m benchmarks.teachers forget {arch} --dataset {name}") from None
    imported, now = meta.get("inputs"), teacher_inputs(data_desc)
    if imported is not None and imported != now:  # imports made before "inputs" was recorded: not checked
        diff = ", ".join(f"{k} {imported.get(k)} (here {v})" for k, v in now.items() if imported.get(k) != v)
        raise TeacherError(f"teacher {arch} was imported for {name} with {diff}: its test top-1 does not hold "
                           f"for this grid's inputs; run with the import's data options, or remove it to train "
                           f"one (python -m benchmarks.teachers forget {arch} --dataset {name})")
    return path, meta


@dataclass(frozen=True)
class TeacherSource:
    """Where ``get_teacher`` will take a teacher from: ``kind`` "file" (``--teacher-ckpt``: ``path``), "store"
    (imported with ``python -m benchmarks.teachers import``: the stored ``path``, imported from ``origin``),
    "cache" (trained by kdbench earlier: the cache file ``path``) or "train" (``epochs`` epochs, into ``path``)."""
    kind: str
    path: Path
    epochs: int | None = None
    origin: str | None = None

    def describe(self) -> str:
        if self.kind == "file":
            return f"imported from {self.path}"
        if self.kind == "store":
            return f"imported via the teacher store ({self.path}" + (f", from {self.origin})" if self.origin else ")")
        if self.kind == "cache":
            return f"cached in {self.path} (trained by kdbench earlier)"
        return f"to be trained by kdbench ({plural(self.epochs or 0, 'epoch')}) into {self.path}"


def teacher_source(arch: str, data_desc: dict, recipe: Recipe, seed: int, teacher_dir: Path,
                   ckpt: str | Path | None = None, amp: str = "fp32") -> TeacherSource:
    """Where ``get_teacher`` will take ``arch``'s teacher from, in its order, without reading any weights; a
    cache entry counts when its weights and its ``.json`` (written last: a complete entry) are there."""
    if ckpt is not None:
        return TeacherSource("file", Path(ckpt))
    found = _read_imported(teacher_dir, data_desc, arch)
    if found is not None:
        return TeacherSource("store", found[0], origin=found[1].get("path"))
    path = teacher_path(teacher_dir, data_desc, arch, recipe, seed, amp)
    if path.exists() and path.with_suffix(".json").exists():
        return TeacherSource("cache", path)
    return TeacherSource("train", path, recipe.epochs)


def teacher_available(teacher_dir: Path, data_desc: dict, arch: str, recipe: Recipe, seed: int,
                      amp: str = "fp32") -> bool:
    """Whether ``get_teacher`` finds the teacher without training it: imported for the dataset, or cached."""
    return teacher_source(arch, data_desc, recipe, seed, teacher_dir, amp=amp).kind != "train"


def teacher_identity(arch: str, data_desc: dict, recipe: Recipe, seed: int, teacher_dir: Path, num_classes: int,
                     ckpt: str | Path | None = None, amp: str = "fp32") -> str:
    """The ``key`` ``get_teacher`` would report, without evaluating (or training) anything."""
    if ckpt is not None:
        return inspect_teacher_checkpoint(arch, ckpt, num_classes)["key"]
    found = _read_imported(teacher_dir, data_desc, arch)
    if found is not None:
        return found[1]["key"]
    return teacher_key(data_desc, arch, recipe, seed, amp)


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
    checkpoint_every: int = 1,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A frozen teacher on ``device`` and its info (key, accuracy, where it came from).

    ``ckpt`` given: that checkpoint (evaluated here). Else the teacher imported for this dataset
    (``python -m benchmarks.teachers import``) if there is one, else the trained cache, training
    the teacher if it is missing (resuming a killed training; checkpoints every ``checkpoint_every``
    epochs, 0: never).
    """
    if ckpt is not None:
        model, info = _fit_checkpoint(arch, ckpt, data.num_classes)
        model = model.to(device)
        top1, top5 = evaluate(model, data, device)
        info.update(arch=arch, top1=top1, top5=top5)
        log(f"teacher {arch}: imported {ckpt}, test top-1 {top1:.2f}")
        return freeze(model), info
    found = _read_imported(teacher_dir, data.describe(), arch)
    if found is not None:
        return _load_imported(arch, data, device, *found, log)
    fast = fast if fast is not None else FastPaths().resolve(device)  # train_cohort's own default
    path = teacher_path(teacher_dir, data.describe(), arch, recipe, seed, fast["amp"])
    # one process trains a teacher; the others wait here, then find it in the cache
    with FileLock(path.with_name(path.name + ".lock")):
        return _cached_or_trained(arch, data, recipe, seed, device, path, log, fast, checkpoint_every)


def _load_imported(arch, data, device, path: Path, meta: dict, log) -> tuple[torch.nn.Module, dict]:
    redo = (f"re-import it (python -m benchmarks.teachers import ...) or remove it "
            f"(python -m benchmarks.teachers forget {arch} --dataset {data.describe()['name']})")
    try:
        state = checkpoints.load_file(path, KDBENCH_TEACHER, weights_only=True)
    except checkpoints.UnreadableCheckpoint as e:
        raise TeacherError(f"imported teacher {e}; {redo}") from None
    try:
        model = create_model(arch, num_classes=data.num_classes)
        model.load_state_dict(state)
    except Exception as e:
        raise TeacherError(f"imported teacher {path} does not fit {arch} ({type(e).__name__}); {redo}") from None
    if weights_fingerprint(model.state_dict()) != meta.get("weights_sha"):
        raise TeacherError(f"imported teacher {path} does not hold the weights its .json names "
                           f"(sha256 differs); {redo}")
    info = {**meta, "arch": arch, "source": "imported"}
    log(f"teacher {arch}: imported {meta.get('path')} (stored {path}), test top-1 {info['top1']:.2f}")
    return freeze(model.to(device)), info


def teacher_checkpoint_path(path: Path) -> Path:
    """Where a teacher in training checkpoints (``.prev`` beside it): its cache file's name, key included."""
    return Path(path).with_suffix(".ckpt.pt")


def _cached_or_trained(arch, data, recipe, seed, device, path: Path, log, fast,
                       checkpoint_every: int = 1) -> tuple[torch.nn.Module, dict]:
    desc = data.describe()
    meta_path = path.with_suffix(".json")
    key = teacher_key(desc, arch, recipe, seed, fast["amp"])
    # a killed training resumes: same checkpoint format and checks as a student run's (recorder.py), no record
    checkpoint = RunCheckpoint(teacher_checkpoint_path(path), key, checkpoint_every, f"teacher {arch}", log)
    if path.exists() and meta_path.exists():
        try:
            model = create_model(arch, num_classes=data.num_classes)
            model.load_state_dict(checkpoints.load_file(path, KDBENCH_TEACHER, weights_only=True))
            info = read_json(meta_path)
            info["source"] = "cache"
            info.setdefault("seed", seed)  # entries written before these keys existed
            info.setdefault("recipe", recipe.as_dict())
            info.setdefault("epochs", recipe.epochs)
            log(f"teacher {arch}: cached {path} (test top-1 {info['top1']:.2f})")
            checkpoint.remove()  # left by a kill between writing the teacher and removing it
            return freeze(model.to(device)), info
        except checkpoints.UnreadableCheckpoint as e:  # a truncated cache entry is retrained, not trusted
            log(f"teacher {arch}: cache entry {e}; retraining it")
        except Exception as e:  # as is a stale one
            log(f"teacher {arch}: cache entry {path} unreadable ({type(e).__name__}); retraining it")
    log(f"teacher {arch}: training ({plural(recipe.epochs, 'epoch')}, seed {seed}) -> {path}")
    torch.manual_seed(seed_for(seed, "teacher", "init", arch))  # not a student's: seed_for(seed, "init", arch)
    model = create_model(arch, num_classes=data.num_classes).to(device)
    method = build_method("vanilla", BuildContext(None, None, data.num_classes, data.train_labels))  # type: ignore[arg-type]
    run = StudentRun(f"teacher:{arch}", model, method, recipe, seed)
    generator = torch.Generator().manual_seed(seed_for(seed, "teacher", "data"))  # not a student's stream
    data_state = checkpoint.resume(run)
    if data_state is not None:
        generator.set_state(data_state)

    def on_epoch_end(epoch: int, runs: list[StudentRun]) -> None:
        if run.error is None:
            checkpoint.save_if_due(run, generator)

    train_cohort([run], data, device, data_generator=generator, on_epoch_end=on_epoch_end, fast=fast)
    if run.error is not None:
        # a student's --set train.lr also reaches the teacher (its recipe is [train] with [teacher_train] on top)
        raise TeacherError(f"teacher {arch} failed to train: {run.error}; the teacher trained at lr {recipe.lr:g} "
                           f"([train] with [teacher_train] on top): --set teacher_train.lr=... sets its own")
    last = run.history[-1]
    info = {"arch": arch, "key": key, "seed": seed, "epochs": recipe.epochs,
            "recipe": recipe.as_dict(), "data": desc, "top1": last["test_top1"], "top5": last["test_top5"],
            "top1_best": max(h["test_top1"] for h in evaluated(run.history)), "time_s": run.time_s,
            "path": str(path), "source": "trained", "fast_paths": fast}
    # the weights, then the .json that makes them a cache entry, then the checkpoint they supersede
    checkpoints.atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    write_json(meta_path, info)
    checkpoint.remove()
    checkpoints.remove_strays(path)  # a kill during an earlier attempt's write of the teacher file (we hold its lock)
    log(f"teacher {arch}: test top-1 {info['top1']:.2f} after {plural(recipe.epochs, 'epoch')} ({run.time_s:.0f}s)")
    return freeze(model), info


# ---------------------------------------------------------------------------------------------
# importing a folder of the field's teachers

ALIASES = {"mobile_half": "MobileNetV2"}  # RepDistiller's train_teacher.py name for its MobileNetV2


def published_teacher_top1(dataset_name: str) -> dict[str, float]:
    """Published teacher top-1 by architecture: the ``teacher`` rows of ``reports/data/<dataset>_published.csv``."""
    path = PUBLISHED_DIR / f"{dataset_name}_published.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["teacher"]: float(row["top1"]) for row in csv.DictReader(f) if row.get("method") == "teacher"}


def zoo_arch(folder_arch: str) -> str | None:
    """The zoo model a RepDistiller/mdistiller folder's architecture name means (None: not in the zoo)."""
    models = [m for m in list_models() if not m.startswith("timm")]
    if folder_arch in models:
        return folder_arch
    if folder_arch in ALIASES:
        return ALIASES[folder_arch]
    lower = {m.lower(): m for m in models}
    return lower.get(folder_arch.lower())


def find_teacher_checkpoints(root: Path) -> list[tuple[str, Path]]:
    """``(folder arch name, newest ckpt_epoch_*.pth)`` for every ``<arch>_vanilla/`` folder in ``root``,
    ``root/save/models`` (RepDistiller), ``root/models``, ``root/cifar_teachers`` or
    ``root/download_ckpts/cifar_teachers`` (where mdistiller's README untars ``cifar_teachers.tar``)."""
    found: dict[str, Path] = {}
    for base in (root, root / "save" / "models", root / "models", root / "cifar_teachers",
                 root / "download_ckpts" / "cifar_teachers"):
        if not base.is_dir():
            continue
        for folder in sorted(base.glob("*_vanilla")):
            epochs = [(int(m.group(1)), p) for p in folder.glob("ckpt_epoch_*.pth")
                      if (m := re.fullmatch(r"ckpt_epoch_(\d+)\.pth", p.name))]
            if epochs and folder.name[: -len("_vanilla")] not in found:
                found[folder.name[: -len("_vanilla")]] = max(epochs)[1]
    return sorted(found.items())


def _none_found(root: Path) -> str:
    return (f"no teacher checkpoints (<arch>_vanilla/ckpt_epoch_*.pth) in {root} or its save/models/, models/, "
            f"cifar_teachers/ or download_ckpts/cifar_teachers/")


def import_folder(root: str | Path, data, teacher_dir: Path, device: torch.device,
                  out: Callable[[str], None] = print,
                  err: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> int:
    """Import every teacher found under ``root`` for ``data``'s dataset; the table to ``out``, each warning
    and per-file error (one line each) to ``err``; exit status (1 if a file could not be imported)."""
    root = Path(root).expanduser()
    name = data.describe()["name"]
    found = find_teacher_checkpoints(root)
    if not found:
        raise TeacherError(_none_found(root))
    published = published_teacher_top1(name)
    rows, warnings, status = [], [], 0
    for folder_arch, path in found:
        arch = zoo_arch(folder_arch)
        if arch is None:
            warnings.append(f"warning: {path.parent.name}: no zoo model named {folder_arch!r}; skipped")
            continue
        try:
            model, info = _fit_checkpoint(arch, path, data.num_classes)
        except TeacherError as e:
            warnings.append(f"error: {arch}: {e}")
            status = 1
            continue
        top1, top5 = evaluate(model.to(device), data, device)
        pub = published.get(arch)
        info.update(arch=arch, dataset=name, top1=top1, top5=top5, published_top1=pub,
                    inputs=teacher_inputs(data.describe()))
        dest = imported_teacher_path(teacher_dir, name, arch)
        checkpoints.atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, dest)
        write_json(dest.with_suffix(".json"), info)
        rel = f"{path.parent.name}/{path.name}"
        diff = top1 - pub if pub is not None else None
        rows.append((arch, rel, f"{top1:.2f}", f"{pub:.2f}" if pub is not None else "-",
                     f"{diff:+.2f}" if diff is not None else "-"))
        if diff is not None and diff < -WARN_BELOW_PUBLISHED:
            warnings.append(f"warning: {arch} tested at {top1:.2f}, {-diff:.2f} points below the published "
                            f"{pub:.2f} (cf. RepDistiller issue #29); check the file before trusting results "
                            f"made with it")
    head = ("arch", "file", "top-1", "published", "diff")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        out("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    for w in warnings:
        err(w)
    if rows:
        out(f"imported {plural(len(rows), 'teacher')} into {teacher_dir / name / 'imported'}; every grid on {name} now "
            f"uses them (remove one: python -m benchmarks.teachers forget ARCH --dataset {name})")
    return status if rows else 1


def forget_teacher(arch: str, dataset_name: str, teacher_dir: Path) -> Path:
    path = imported_teacher_path(teacher_dir, dataset_name, arch)
    meta = path.with_suffix(".json")
    if not meta.exists() and not path.exists():
        raise TeacherError(f"no imported teacher {arch} for {dataset_name} in {path.parent}")
    meta.unlink(missing_ok=True)  # the .json first: without it the entry is not used
    path.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m benchmarks.teachers",
                      description="Import the field's teacher checkpoints (RepDistiller save/models/, "
                                  "mdistiller cifar_teachers/) as the teachers of a dataset, or forget one.")
    sub = p.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="import every <arch>_vanilla/ckpt_epoch_*.pth under DIR")
    imp.add_argument("dir", metavar="DIR")
    imp.add_argument("--data-root", help="folder containing the dataset (e.g. cifar-100-python/)")
    imp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (to measure accuracy)")
    fg = sub.add_parser("forget", help="remove an imported teacher")
    fg.add_argument("arch")
    for q in (imp, fg):
        q.add_argument("--dataset", default="cifar100", help="dataset the teachers belong to (default cifar100)")
        where = q.add_mutually_exclusive_group()
        where.add_argument("--teacher-dir", help="teacher store (default: <results>/teachers)")
        where.add_argument("--results", default="results", help="results root (default results/)")
    args = p.parse_args(argv)
    try:  # a flag given an empty value is an error, never the default taken without a word
        check_given(dataset=args.dataset, teacher_dir=args.teacher_dir, results=args.results,
                    data_root=getattr(args, "data_root", None))
        if args.cmd == "import" and not args.dir.strip():
            raise TeacherError("DIR is empty; pass the folder holding <arch>_vanilla/ (RepDistiller's save/models/ "
                               "or mdistiller's extracted cifar_teachers/)")
        teacher_dir = Path(args.teacher_dir) if args.teacher_dir is not None else Path(args.results) / "teachers"
        dataset_loader(args.dataset)  # a misspelt dataset is named as such, not "no imported teacher" / "no checkpoints"
        if args.cmd == "forget":
            print(f"removed {forget_teacher(args.arch, args.dataset, teacher_dir)}")
            return 0
        root = Path(args.dir).expanduser()
        if not root.is_dir():
            raise TeacherError(f"{root} is not a folder; pass the folder holding <arch>_vanilla/ (RepDistiller's "
                               f"save/models/ or mdistiller's extracted cifar_teachers/)")
        if not find_teacher_checkpoints(root):
            raise TeacherError(_none_found(root))
        device = pick_device(args.device)
        data = load_dataset(args.dataset, **({"data_root": args.data_root} if args.data_root is not None else {}))
        return import_folder(root, data, teacher_dir, device)
    except (TeacherError, DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
