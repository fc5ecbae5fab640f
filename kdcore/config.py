"""Presets (TOML data in ``kdcore/presets/``) and their overrides from the command line.

A preset is a table with these keys (all checked; an unknown key is an error)::

    description = "..."
    dataset = "digits"                       # a name from kdcore.data.DATASETS
    methods = ["vanilla", "kd", ...]         # or ["all"]: every registered method
    pairs = ["resnet20:resnet8", ...]        # teacher:student
    seeds = [0, 1]                           # student seeds
    teacher_seed = 0
    [data]           options of the dataset loader (image_size, ...)
    [train]          the student recipe (kdcore.recipe.Recipe fields)
    [train.lr_by_student]   per-student learning rate (RepDistiller: 0.01 for MobileNetV2/ShuffleV1/V2)
    [teacher_train]  the teacher recipe: fields that differ from [train]
    [method.<name>]  hyperparameter overrides of a method (checked against its defaults)
    [method_by_pair."<teacher>:<student>".<name>]  overrides for one pair only, on top of
                     [method.<name>] (mdistiller's DKD beta, TTM's gamma per pair); a pair not in
                     ``pairs`` is unused (``--pairs`` may add it); a malformed pair name is an error
    val_fraction = 0.1                       # hold out 10% of the training set, stratified (default 0: none)
    student_fraction = 0.2                   # students train on a seeded 20% of it; teachers on all (default 1)
    [sweep]          "kd.T" = [1.0, 2.0, 4.0]: one run per value (several keys: their product)

``--set section.key=value`` overrides any of them (``train.epochs=5``,
``teacher_train.lr=0.1``, ``data.image_size=16``, ``crd.nce_k=4096``); the
value is parsed as a TOML value (``2.0``, ``[1, 2]``, ``"batch"``), falling
back to a plain string. A method value set on the command line applies to every
pair: it replaces that key's per-pair values (``--set dkd.beta=4`` means 4
everywhere).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

import tomllib

import torch

from kdcore.recipe import Recipe

PRESET_DIR = Path(__file__).parent / "presets"
TOP_KEYS = {"description", "dataset", "methods", "pairs", "seeds", "teacher_seed",
            "data", "train", "teacher_train", "method", "method_by_pair", "val_fraction", "student_fraction",
            "sweep", "teacher_reference"}
# [teacher_reference]: the published test top-1 range of comparable networks on the preset's data; a teacher under
# min_top1 stops the grid before its students train (a weak teacher is a defect to find, not a number to print)
REFERENCE_KEYS = ("max_top1", "min_top1", "source")
RECIPE_KEYS = {f.name for f in dataclasses.fields(Recipe)}


class ConfigError(ValueError):
    pass


def _refuse(self, *args, **kwargs):
    raise TypeError(f"the resolved config is frozen: {type(self).__name__} cannot be changed; derive a new one "
                    f"(cfg.derive(key=value)) or take a mutable copy (thaw(cfg))")


class FrozenList(list):
    """A list of a frozen config: reads, compares, pickles and JSON-encodes as a list; any change is a TypeError."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self):
        return list(self)

    def __deepcopy__(self, memo):
        return thaw(self)  # a deep copy is a plain, mutable one

    def __reduce__(self):
        return FrozenList, (list(self),)


class FrozenConfig(dict):
    """The resolved config, frozen once ``benchmarks.run.resolve`` has validated it: a read-only mapping whose
    nested tables and lists are frozen too, so nothing below the CLI changes what was validated.

    It is a ``dict`` (and its lists are lists), so reads, ``==`` with plain dicts, ``json.dumps`` (same
    bytes as the plain config), ``fingerprint`` and ``protocol`` behave as before. Any change raises
    TypeError; ``derive(key=value, ...)`` returns a new frozen config with those top-level keys replaced,
    ``thaw(cfg)`` (and ``copy.deepcopy``) a plain, mutable copy.
    """

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        items = dict(*args, **kwargs)
        dict.__init__(self, {k: frozen(v) for k, v in items.items()})

    __setitem__ = __delitem__ = __ior__ = _refuse
    setdefault = update = pop = popitem = clear = _refuse

    def derive(self, **changes: Any) -> "FrozenConfig":
        """A new frozen config: this one with the top-level keys ``changes`` names set (added or replaced)."""
        return FrozenConfig({**self, **changes})

    def __copy__(self):
        return dict(self)

    def __deepcopy__(self, memo):
        return thaw(self)  # a deep copy is a plain, mutable one

    def __reduce__(self):
        return FrozenConfig, (dict(self),)


def frozen(value: Any) -> Any:
    """``value`` with every mapping a FrozenConfig and every list a FrozenList (other values as they are)."""
    if isinstance(value, FrozenConfig):
        return value
    if isinstance(value, Mapping):
        return FrozenConfig(value)
    if isinstance(value, FrozenList):
        return value
    if isinstance(value, list):
        return FrozenList(frozen(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (frozen) config: dicts and lists all the way down."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, tuple):
        return tuple(thaw(v) for v in value)
    return copy.deepcopy(value)


def pick_device(name: str) -> torch.device:
    """``--device``: auto (CUDA when available, else CPU), cpu, cuda, cuda:N; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = PRESET_DIR / f"{name_or_path}.toml"
    if not path.exists():
        if name_or_path.endswith(".toml") or "/" in name_or_path:
            raise ConfigError(f"preset file {name_or_path} not found; check the path, or name a preset: "
                              f"{', '.join(list_presets())}")
        raise ConfigError(f"unknown preset {name_or_path!r}; known presets: {', '.join(list_presets())} "
                          f"(or a path to a .toml file)")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"preset {path}: invalid TOML ({e})") from None
    cfg.setdefault("description", "")
    cfg.setdefault("teacher_seed", 0)  # before the grid's base protocol is taken: a preset without it is not "changed"
    cfg["preset"] = path.stem
    check_config(cfg)
    return cfg


def check_config(cfg: dict[str, Any]) -> None:
    unknown = set(cfg) - TOP_KEYS - {"preset"}
    if unknown:
        raise ConfigError(f"unknown preset keys {sorted(unknown)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key in ("dataset", "methods", "pairs", "seeds"):
        if key not in cfg:
            raise ConfigError(f"preset {cfg.get('preset')!r} lacks {key!r}")
    # the shapes every later step relies on: a string where a list belongs would be read letter by letter
    if not isinstance(cfg["dataset"], str):
        raise ConfigError(f'dataset must be a name, e.g. dataset = "digits", got {cfg["dataset"]!r}')
    for key, example in (("methods", '["vanilla", "kd"]'), ("pairs", '["resnet20:resnet8"]'), ("seeds", "[0, 1, 2]")):
        if not isinstance(cfg[key], list) or not cfg[key]:
            raise ConfigError(f"{key} must be a non-empty list, e.g. {key} = {example}, got {cfg[key]!r}")
    for key in ("methods", "pairs"):
        if not all(isinstance(v, str) for v in cfg[key]):
            raise ConfigError(f"{key} must be a list of names, got {cfg[key]!r}")
    for key in ("methods", "pairs", "seeds"):  # one run id twice: two runs writing one record, a report that fails
        twice = [v for i, v in enumerate(cfg[key]) if v in cfg[key][:i]]
        if twice:
            raise ConfigError(f"{key} names {twice[0]!r} twice ({', '.join(map(str, cfg[key]))}); give each once")
    teacher_seed = cfg.get("teacher_seed", 0)
    if not isinstance(teacher_seed, int) or isinstance(teacher_seed, bool) or teacher_seed < 0:
        raise ConfigError(f"teacher_seed must be a non-negative integer, got {teacher_seed!r}")
    for section in ("data", "train", "teacher_train", "method"):
        if not isinstance(cfg.get(section, {}), dict):
            how = "[method.<name>] tables, e.g. [method.kd] T = 2.0" if section == "method" else \
                f"a table ([{section}] in a preset, --set {section}.KEY=VALUE)"
            raise ConfigError(f"{section} must be {how}, got {cfg[section]!r}")
    for name, values in cfg.get("method", {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"method.{name} must be a table of hyperparameters, e.g. [method.{name}], got {values!r}")
    for section in ("train", "teacher_train"):
        lr_by = cfg.get(section, {}).get("lr_by_student", {})
        if not isinstance(lr_by, dict):
            raise ConfigError(f"{section}.lr_by_student must be a table of student: lr, e.g. "
                              f"[{section}.lr_by_student] MobileNetV2 = 0.01, got {lr_by!r}")
    for section in ("train", "teacher_train"):
        bad = set(cfg.get(section, {})) - RECIPE_KEYS - {"lr_by_student"}
        if bad:
            raise ConfigError(f"unknown {section} keys {sorted(bad)}; allowed: {', '.join(sorted(RECIPE_KEYS))}")
    for seed in cfg["seeds"]:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seeds must be non-negative integers, got {seed!r}")
    for pair in cfg["pairs"]:
        parse_pair(pair)
    check_val_fraction(cfg.get("val_fraction", 0))
    check_student_fraction(cfg.get("student_fraction", 1))
    check_teacher_reference(cfg.get("teacher_reference"))
    sweep = cfg.get("sweep", {})
    if not isinstance(sweep, dict) or not all(isinstance(v, list) for v in sweep.values()):
        raise ConfigError('sweep must be a table of lists, e.g. [sweep] "kd.T" = [1.0, 2.0, 4.0]')
    by_pair = cfg.get("method_by_pair", {})
    if not isinstance(by_pair, dict) or not all(isinstance(v, dict) for v in by_pair.values()):
        raise ConfigError('method_by_pair must be tables [method_by_pair."teacher:student".method]')
    for pair, methods in by_pair.items():
        parse_pair(pair)
        if not all(isinstance(v, dict) for v in methods.values()):
            raise ConfigError(f'method_by_pair."{pair}": expected tables of method hyperparameters, '
                              f'e.g. [method_by_pair."{pair}".dkd] beta = 6.0')


def check_teacher_reference(ref: Any) -> None:
    """``[teacher_reference]``: ``min_top1`` <= ``max_top1`` in [0, 100] (percent) and the ``source`` they are
    quoted from; absent: no check."""
    if ref is None:
        return
    example = 'e.g. [teacher_reference] min_top1 = 90.0, max_top1 = 95.0, source = "..."'
    if not isinstance(ref, dict):
        raise ConfigError(f"teacher_reference must be a table, {example}, got {ref!r}")
    if set(ref) != set(REFERENCE_KEYS):
        raise ConfigError(f"teacher_reference needs exactly the keys {', '.join(REFERENCE_KEYS)} "
                          f"({example}), got {', '.join(sorted(ref)) or 'none'}")
    for key in ("min_top1", "max_top1"):
        v = ref[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ConfigError(f"teacher_reference.{key} must be a percentage in [0, 100], got {v!r}")
    if ref["min_top1"] > ref["max_top1"]:
        raise ConfigError(f"teacher_reference.min_top1 ({ref['min_top1']}) is above max_top1 ({ref['max_top1']})")
    if not isinstance(ref["source"], str) or not ref["source"].strip():
        raise ConfigError("teacher_reference.source must say where the range is published, got "
                          f"{ref['source']!r}")


def check_val_fraction(value: Any, given: str = "val_fraction") -> float:
    """The validation fraction: a number in [0, 1) (0: no validation split); ``given``: the key or flag that
    gave it, which a bad value's message names."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{given} must be a number in [0, 1) (0: no validation split), got {value!r}")
    return float(value)


def check_student_fraction(value: Any, given: str = "student_fraction") -> float:
    """The fraction of the training set the students train on: a number in (0, 1] (1: all of it); ``given``: as
    ``check_val_fraction``'s."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{given} must be a number in (0, 1] (1: the students train on the whole "
                          f"training set, as the teachers do), got {value!r}")
    return float(value)


def split_list(flag: str, text: str, example: str) -> list[str]:
    """A comma-separated flag's items (``--methods kd,crd``). One that lists nothing (``--seeds ""``,
    ``--methods ,``) is a ConfigError naming the flag: never taken for a flag not given."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{flag} {text!r} lists nothing; give comma-separated values, e.g. {flag} {example}, "
                          f"or leave the flag out")
    return items


def check_given(**flags: str | None) -> None:
    """Flags given an empty value (``--dataset ""``, ``--teacher-dir ""``): a ConfigError naming the first, not
    the flag's default taken without a word. Keyword: the flag's name with '_' for '-'; None: not given."""
    for name, value in flags.items():
        if value is not None and not value.strip():
            raise ConfigError(f"--{name.replace('_', '-')} is empty; give a value, or leave the flag out")


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``--sweep kd.T=1,2,4`` -> ("kd.T", [1, 2, 4]); values are TOML values (``"batch","sample"``)."""
    path, sep, values = text.partition("=")
    path = path.strip()
    if not sep or "." not in path or not values.strip():
        raise ConfigError(f"bad --sweep {text!r}: expected method.key=v1,v2,..., e.g. kd.T=1,2,4,8")
    try:
        out = tomllib.loads(f"v = [{values}]")["v"]
    except tomllib.TOMLDecodeError:
        out = [parse_value(v.strip()) for v in values.split(",")]
    if any(v == "" for v in out):
        raise ConfigError(f"bad --sweep {text!r}: an empty value")
    return path, out


def method_overrides(cfg: dict[str, Any], pair: str) -> dict[str, dict[str, Any]]:
    """The method hyperparameter overrides of one pair: ``[method.<name>]`` updated by
    ``[method_by_pair."<pair>".<name>]``."""
    out = copy.deepcopy(cfg.get("method", {}))
    for name, values in cfg.get("method_by_pair", {}).get(pair, {}).items():
        out.setdefault(name, {}).update(copy.deepcopy(values))
    return out


def parse_pair(pair: str) -> tuple[str, str]:
    """``"resnet32x4:resnet8x4"`` -> names; timm models keep their prefix: ``"timm:resnet50:resnet8"``."""
    tokens, names = pair.split(":"), []
    while tokens:
        head = tokens.pop(0)
        if head == "timm" and tokens:
            head = f"timm:{tokens.pop(0)}"
        names.append(head)
    if len(names) != 2 or not all(names) or "timm" in names:
        raise ConfigError(f"bad pair {pair!r}: expected teacher:student, e.g. resnet32x4:resnet8x4")
    return names[0], names[1]


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_set(cfg: dict[str, Any], assignment: str, method_names: set[str]) -> None:
    """Apply one ``--set section.key=value`` to ``cfg`` in place."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        key = assignment.split("=", 1)[0].strip()
        flags = {"seeds": "--seeds", "methods": "--methods", "pairs": "--pairs", "dataset": "--dataset",
                 "val_fraction": "--val-fraction", "student_fraction": "--student-fraction", "sweep": "--sweep"}
        if key in flags:
            raise ConfigError(f"bad --set {assignment!r}: {key} has its own flag, {flags[key]}")
        if key in TOP_KEYS:
            raise ConfigError(f"bad --set {assignment!r}: {key} is a top-level preset key; set it in your own preset "
                              f"file (--preset FILE.toml)")
        raise ConfigError(f"bad --set {assignment!r}: expected section.key=value, e.g. train.epochs=5 or kd.T=2")
    path, text = assignment.split("=", 1)
    section, *keys = path.strip().split(".")
    value = parse_value(text.strip())
    if section in ("train", "teacher_train", "data", "teacher_reference"):
        target = cfg.setdefault(section, {})
    elif section in method_names:
        target = cfg.setdefault("method", {}).setdefault(section, {})
        if len(keys) == 1:  # the command line wins over the preset's per-pair values of this key
            for methods in cfg.get("method_by_pair", {}).values():
                methods.get(section, {}).pop(keys[0], None)
    else:
        raise ConfigError(f"bad --set {assignment!r}: {section!r} is neither train, teacher_train, data, "
                          f"teacher_reference nor a method ({', '.join(sorted(method_names))})")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def student_recipe(cfg: dict[str, Any], student: str) -> Recipe:
    train = dict(cfg.get("train", {}))
    given = {k: f"train.{k}" for k in train}
    lr_by = train.pop("lr_by_student", {})
    if student in lr_by:
        train["lr"], given["lr"] = lr_by[student], f"train.lr_by_student.{student}"
    return _recipe(train, given)


def teacher_recipe(cfg: dict[str, Any], teacher: str) -> Recipe:
    train = {k: v for k, v in cfg.get("train", {}).items() if k != "lr_by_student"}
    over = dict(cfg.get("teacher_train", {}))
    lr_from = "teacher_train" if "lr_by_student" in over else "train"
    lr_by = over.pop("lr_by_student", cfg.get("train", {}).get("lr_by_student", {}))
    given = {**{k: f"train.{k}" for k in train}, **{k: f"teacher_train.{k}" for k in over}}
    train.update(over)
    if teacher in lr_by:
        train["lr"], given["lr"] = lr_by[teacher], f"{lr_from}.lr_by_student.{teacher}"
    return _recipe(train, given)


def _recipe(fields: dict[str, Any], given: dict[str, str]) -> Recipe:
    """The recipe of ``fields``; ``given``: the key each value was given as (``train.epochs``,
    ``teacher_train.lr``, ``train.lr_by_student.resnet8``), which a bad value's message names."""
    defaults = Recipe()
    out = {}
    for key, value in fields.items():
        want = type(getattr(defaults, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"{given[key]} must be {article(want.__name__)}, got {value!r}")
        out[key] = thaw(value)  # a recipe holds plain values (lr_decay_epochs: a list), never a frozen config's
    recipe = Recipe(**out)
    # checked here, before any teacher trains: SGD would refuse them (or train on NaN) only once training starts
    bounds = {"epochs": ">= 1", "batch_size": ">= 1", "eval_batch_size": ">= 1", "eval_every": ">= 1",
              "lr": "a finite number > 0",
              "momentum": "a finite number >= 0", "weight_decay": "a finite number >= 0",
              "lr_decay_rate": "a finite number > 0"}
    for key, wanted in bounds.items():
        value = getattr(recipe, key)
        if not math.isfinite(value) or value < (1 if wanted == ">= 1" else 0) or (value == 0 and "> 0" in wanted):
            raise ConfigError(f"{given[key]} must be {wanted}, got {value!r}")
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in recipe.lr_decay_epochs):
        raise ConfigError(f"{given['lr_decay_epochs']} must be a list of epochs >= 1 (the lr decays after each), "
                          f"e.g. [150, 180, 210], got {recipe.lr_decay_epochs!r}")
    return recipe


def article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def fingerprint(obj: Any, n: int = 12) -> str:
    """Short stable hash of a JSON-able object (cache keys, config identity)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def protocol(cfg: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that change what a run computes (not which runs exist).

    ``teachers`` ({arch: key}) holds the imported teachers' weight hashes, set by the runner once it has
    read them; a teacher trained by the suite is already fixed by the other keys (its cache key is a
    hash of dataset, architecture, recipe and seed), so grids without imports keep their old identity.
    """
    out = {k: copy.deepcopy(cfg.get(k)) for k in ("dataset", "data", "train", "teacher_train", "method",
                                                  "teacher_seed")}
    if cfg.get("method_by_pair"):  # absent from older grids: their identity does not change
        out["method_by_pair"] = copy.deepcopy(cfg["method_by_pair"])
    if cfg.get("teachers"):
        out["teachers"] = dict(cfg["teachers"])
    out.update(data_split(cfg))
    return out


def data_split(cfg: dict[str, Any]) -> dict[str, float]:
    """How the grid splits the training set, as its records and grid.json state it: ``val_fraction`` (a
    validation split held out) and ``student_fraction`` (the students' subset), each only when set, so a
    grid with neither keeps the identity and record layout it always had."""
    out = {}
    if cfg.get("val_fraction"):
        out["val_fraction"] = float(cfg["val_fraction"])
    if cfg.get("student_fraction", 1) != 1:
        out["student_fraction"] = float(cfg["student_fraction"])
    return out


def grid_name(cfg: dict[str, Any]) -> str:
    """The grid's folder: ``--grid`` if given, else the preset's (or preset-dataset) stem, plus a hash of the
    protocol when it differs from the preset's (``cfg["grid_base"]``, set by ``benchmarks.run.resolve``)."""
    base = cfg["grid_base"]
    if base["explicit"]:
        return base["explicit"]
    changed = fingerprint(protocol(cfg)) != base["protocol"]
    return f"{base['stem']}-{fingerprint(protocol(cfg), 8)}" if changed else base["stem"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad flag answered as every other bad input is: one line and exit 2 (not the usage);
    every command line of kdbench parses with it."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def flags_for(options_type: type, args: Any) -> dict[str, Any]:
    """The parsed command-line flags (an argparse Namespace) that the dataclass ``options_type`` names as fields:
    how each CLI builds its typed options (RunnerOptions, LaunchOptions, SpeedOptions)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(options_type) if hasattr(args, f.name)}
