"""The grid runner and CLI: ``python -m benchmarks.run --methods triplet,kd,rkd``.

Expands methods x pairs x seeds from a preset (default ``digits``) and the
flags that override it, trains the teachers it needs (cached), runs every
run whose record is not already complete (as cohorts: one batch stream and one
teacher pass per pair and seed), writes one JSON record per run and ends with
``report.md``. A run that fails is recorded with its error and the grid goes
on; the exit status is 1 if any run failed, 2 for bad input.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from methods import (HyperparameterError, UnknownMethodError, check_override_keys, list_methods, list_modifiers,
                     method_class, method_defaults, modifiable_by, validate_method)
from kdcore.hparams import resolve_hparams

from kdcore.curves import check_wandb
from kdcore.config import (ConfigError, FrozenConfig, OneLineParser, apply_set, check_config, check_given,
                     check_student_fraction, check_val_fraction, fingerprint, grid_name, list_presets, load_preset,
                     method_overrides, parse_pair, parse_sweep, protocol, split_list, student_recipe, teacher_recipe)
from kdcore import records
from kdcore.data import DataError, check_data_options, dataset_loader, list_datasets
from benchmarks.grid import GridRunner, RunnerOptions, RunSpec, cohorts, expand, parse_shard, shard, spec_overrides
from kdcore.cpus import choose_threads
from benchmarks.scaleout import LaunchOptions, launch
from kdcore.models import UnknownModelError, create_model, list_models
from kdcore.text import plural
from benchmarks.teachers import TeacherError, TeacherSource

BAD_INPUT = (ConfigError, UnknownMethodError, UnknownModelError, HyperparameterError, DataError, TeacherError)


class GridParser(OneLineParser):
    def error(self, message: str):
        if "unrecognized arguments: --resume" in message:  # the flag other tools have: here it is the default
            message += " (no flag needed: rerun the same command; complete runs are skipped, interrupted ones resume)"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = GridParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="digits", help="preset name or .toml path (default: digits)")
    p.add_argument("--methods", help="comma-separated methods, e.g. triplet,kd,crd+kd ('all' = every one)")
    p.add_argument("--pairs", help="comma-separated teacher:student pairs, e.g. resnet32x4:resnet8x4")
    p.add_argument("--seeds", help="comma-separated student seeds, e.g. 0,1,2")
    p.add_argument("--dataset", help=f"override the preset's dataset ({', '.join(list_datasets())})")
    p.add_argument("--data-root", help="folder holding the dataset (CIFAR: the folder containing cifar-100-python/; "
                                       "MNIST, FashionMNIST: torchvision's, the Debian package's or Zalando's "
                                       "layout, see docs/datasets.md)")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR, MNIST or FashionMNIST into --data-root (default ./data) if missing")
    p.add_argument("--epochs", type=int, help="student epochs (shorthand for --set train.epochs=N; the teachers' "
                   "too where the preset's [teacher_train] sets none, as in cifar100)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a preset value or a method hyperparameter, e.g. train.lr=0.1, kd.T=2 (repeatable)")
    p.add_argument("--sweep", action="append", default=[], metavar="METHOD.KEY=V1,V2,...",
                   help="one run per value of a method hyperparameter, e.g. kd.T=1,2,4,8 (repeatable: the "
                        "product); run ids name the values: kd[T=2]__resnet8-resnet8__s0")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="hold out a seeded, stratified fraction F of the training set as a validation split, "
                        "evaluated every epoch and never trained on (default: the preset's, else 0: none)")
    p.add_argument("--student-fraction", type=float, metavar="F",
                   help="students train on a seeded, stratified fraction F of the training set, teachers on all "
                        "of it (default: the preset's, else 1: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--grid", help="name of the grid folder under --results (default: preset name, plus a "
                                  "hash of the protocol when flags change it)")
    p.add_argument("--teacher-dir", help="teacher cache (default: <results>/teachers)")
    p.add_argument("--teacher-ckpt", action="append", default=[], metavar="ARCH=PATH",
                   help="use this checkpoint as teacher ARCH instead of training one (repeatable)")
    cohort = p.add_mutually_exclusive_group()
    # both flags set no_cohort; an explicit default, since argparse takes the first action's (store_false: True)
    cohort.add_argument("--cohort", dest="no_cohort", action="store_false", default=False,
                        help="(default) train the methods of each pair and seed as one cohort: one batch stream "
                             "and one teacher forward per batch for all of them; same results as one by one")
    cohort.add_argument("--no-cohort", action="store_true",
                        help="train each run alone instead of one cohort per pair and seed")
    fast = p.add_argument_group("speed (recorded in every run record; auto = on for CUDA, off on the CPU)")
    fast.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"], help="autocast dtype")
    fast.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--teacher-inference-mode", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--compile", action="store_true", help="torch.compile every model's forward (opt-in)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per process (default: the CPUs this process may use, shared between "
                        "--workers, less those busy with other work; OMP_NUM_THREADS is honoured). The count "
                        "changes float sums: fix it to reproduce a run bit for bit")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="checkpoint every N epochs so a killed run resumes (default 1; 0 = never)")
    scale = p.add_argument_group("scale-out (see docs/scaleout.md)")
    scale.add_argument("--shard", metavar="I/N", help="run only shard I of N (whole pair/seed cohorts, "
                                                      "dealt deterministically): for independent machines")
    scale.add_argument("--workers", type=int, default=1, help="local worker processes, one shard each")
    scale.add_argument("--gpus", help="comma-separated GPU ids: one worker per GPU, e.g. 0,1,2,3")
    scale.add_argument("--executor", choices=["slurm", "local"],
                       help="submit shards through submitit (slurm job array; local: subprocesses, for testing)")
    scale.add_argument("--shards", type=int, help="number of array tasks (default: one per pair/seed cohort)")
    scale.add_argument("--slurm-partition")
    scale.add_argument("--slurm-time", type=int, default=24 * 60, help="minutes per task (default 1440)")
    scale.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per task (default 1)")
    scale.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per task (default 8)")
    scale.add_argument("--slurm-parallelism", type=int, default=64, help="max array tasks running at once")
    scale.add_argument("--wait", action="store_true", help="with --executor: wait for the jobs, then write the report")
    p.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    p.add_argument("--list", action="store_true", help="list methods, models, datasets and presets")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--wandb", metavar="PROJECT", help="also log every run's curves to this Weights & Biases project "
                                                      "(needs the wandb package; WANDB_MODE=offline: to disk)")
    return p


def resolve(args: argparse.Namespace) -> FrozenConfig:
    """Preset + flags -> one validated config, frozen (``config.FrozenConfig``: what was validated is what runs;
    ``derive`` makes a changed copy); raises one of BAD_INPUT with a clear message."""
    # a flag given an empty value is an error, never the preset's value (or the default) taken without a word
    check_given(**{name: getattr(args, name, None) for name in ("preset", "dataset", "data_root", "results",
                                                                "teacher_dir", "slurm_partition")})
    check_wandb(args.wandb)
    cfg = load_preset(args.preset)
    base_protocol = fingerprint(protocol(cfg))
    base_dataset = cfg["dataset"]
    if args.dataset is not None:
        cfg["dataset"] = args.dataset
    if args.methods is not None:
        cfg["methods"] = split_list("--methods", args.methods, "vanilla,kd")
    if args.pairs is not None:
        cfg["pairs"] = split_list("--pairs", args.pairs, "resnet32x4:resnet8x4")
    if args.seeds is not None:
        seeds = split_list("--seeds", args.seeds, "0,1,2")
        try:
            cfg["seeds"] = [int(s) for s in seeds]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        if any(s < 0 for s in cfg["seeds"]):
            raise ConfigError(f"--seeds must be non-negative integers, got {args.seeds!r}")
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
        cfg.setdefault("train", {})["epochs"] = args.epochs
    for assignment in args.set:
        apply_set(cfg, assignment, set(list_methods()) | set(list_modifiers()))
    if getattr(args, "val_fraction", None) is not None:
        cfg["val_fraction"] = check_val_fraction(args.val_fraction, "--val-fraction")
    if getattr(args, "student_fraction", None) is not None:
        cfg["student_fraction"] = check_student_fraction(args.student_fraction, "--student-fraction")
    for text in getattr(args, "sweep", []):
        key, values = parse_sweep(text)
        cfg.setdefault("sweep", {}).pop(key, None)  # the command line replaces the preset's values of a key
        cfg["sweep"][key] = values
    check_config(cfg)
    cfg["val_fraction"] = check_val_fraction(cfg.get("val_fraction", 0))
    cfg["student_fraction"] = check_student_fraction(cfg.get("student_fraction", 1))
    if cfg["methods"] == ["all"]:
        cfg["methods"] = list_methods()
    cfg["sweep"] = check_sweep(cfg.get("sweep", {}), cfg["methods"])
    dataset_loader(cfg["dataset"])  # an unknown dataset fails here, before any work
    # [data] keys given for this dataset: every --set data.KEY, and the preset's own when --dataset left its
    # dataset (a preset's options for another dataset, the digits' image_size under --dataset cifar100, stay
    # as they always were: unused, and part of the grid's identity)
    set_data = {a.split("=", 1)[0].strip().split(".")[1] for a in args.set
                if a.split("=", 1)[0].strip().split(".")[0] == "data"}
    check_data_options(cfg["dataset"], {k: v for k, v in cfg.get("data", {}).items()
                                        if cfg["dataset"] == base_dataset or k in set_data})
    check_override_keys(cfg.get("method", {}))
    for pair in cfg.get("method_by_pair", {}):
        check_override_keys(method_overrides(cfg, pair))
    pairs = [parse_pair(p) for p in cfg["pairs"]]
    # each pair's resolved hyperparameters, per run label (a method, or a method with swept values):
    # [method] updated by that pair's [method_by_pair] values, then by the swept ones
    specs = expand({**cfg, "pairs": [f"{t}:{s}" for t, s in pairs], "seeds": [0]})
    resolved: dict[str, dict[str, Any]] = {}
    for spec in specs:
        resolved.setdefault(spec.pair, {})[spec.label] = validate_method(spec.method, spec_overrides(cfg, spec))
    known = set(list_models())
    for t, s in pairs:
        for name in (t, s):
            if name.startswith("timm:"):
                import timm

                if not timm.is_model(name[len("timm:"):]):
                    raise UnknownModelError(f"unknown timm model {name[5:]!r}; timm.list_models() lists them")
            elif name not in known:
                create_model(name)  # raises UnknownModelError listing the known models
        student_recipe(cfg, s)
        teacher_recipe(cfg, t)
    cfg["resolved_methods"] = resolved
    cfg["pairs"] = [f"{t}:{s}" for t, s in pairs]
    cfg.setdefault("teacher_seed", 0)
    cfg["teacher_ckpts"] = parse_teacher_ckpts(args.teacher_ckpt, [t for t, _ in pairs])
    # a grid named after its preset (or its dataset, when that was overridden), plus a hash of the
    # protocol when flags changed it: records made under different protocols never share a folder.
    # GridRunner names it again once it knows which teachers are imported (their weights are protocol).
    cfg["grid_base"] = {"stem": cfg["preset"] if cfg["dataset"] == base_dataset else f"{cfg['preset']}-{cfg['dataset']}",
                        "protocol": base_protocol, "explicit": args.grid}
    cfg["grid"] = grid_name(cfg)
    return FrozenConfig(cfg)


def check_sweep(sweep: dict[str, list], methods: list[str]) -> dict[str, list]:
    """The grid's sweeps ({"kd.T": [1, 2]}), each value checked like a ``--set`` of it (type, range) and
    coerced to its hyperparameter's type, before any work. A key must name a hyperparameter of a method that
    some method of the grid is made of; values are numbers, booleans or strings, each once."""
    out: dict[str, list] = {}
    parts = {p for m in methods for p in method_defaults(m)}
    for key, values in sweep.items():
        section, _, name = key.partition(".")
        if not name or "." in name:
            raise ConfigError(f"bad sweep {key!r}: expected method.key, e.g. kd.T")
        method_class(section)  # an unknown method: UnknownMethodError listing the known ones
        if section not in parts:
            raise ConfigError(f"sweep {key}: no method of this grid uses {section} ({', '.join(methods)})")
        if not values:
            raise ConfigError(f"sweep {key}: no values")
        coerced = []
        for v in values:
            if isinstance(v, (list, dict)):
                raise ConfigError(f"sweep {key}: values must be numbers, booleans or strings, got {v!r}")
            try:  # unknown key, wrong type, out of range: one line naming the sweep
                check_override_keys({section: {name: v}})
            except HyperparameterError as e:
                raise HyperparameterError(f"sweep {key}: {e}") from None
            coerced.append(resolve_hparams(section, method_class(section).defaults, {name: v})[name])
        shown = [records.sweep_value(v) for v in coerced]
        if len(set(shown)) != len(shown):
            raise ConfigError(f"sweep {key}: values {values} repeat (or name the same run: {', '.join(shown)})")
        out[key] = coerced
    return out


def parse_teacher_ckpts(items: list[str], teachers: list[str]) -> dict[str, str]:
    """``--teacher-ckpt ARCH=PATH`` flags -> {arch: path}; an ARCH no pair uses is an error (a typo would
    otherwise train a fresh teacher without a word)."""
    out: dict[str, str] = {}
    for item in items:
        arch, sep, path = item.partition("=")
        if not sep or not arch or not path:
            raise ConfigError(f"bad --teacher-ckpt {item!r}: expected ARCH=PATH, e.g. resnet32x4=ckpt_epoch_240.pth")
        if arch not in teachers:
            raise ConfigError(f"bad --teacher-ckpt {item!r}: no pair uses {arch}; pairs use "
                              f"{', '.join(dict.fromkeys(teachers))}")
        if arch in out and out[arch] != path:
            raise ConfigError(f"--teacher-ckpt {arch} given twice ({out[arch]} and {path}); give it once")
        out[arch] = path
    return out


def check_flags(workers: int, shards: int | None, gpus: str | None, executor: str | None, grid: str | None,
                teacher_dir: str | None) -> None:
    """The flags no preset value checks: one line each, before any work (``--workers 0`` or ``--gpus 0`` on a
    machine without CUDA would otherwise run on one CPU process without a word)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1 (one local worker process per shard), got {workers}")
    if shards is not None and shards < 1:
        raise ConfigError(f"--shards must be >= 1 (array tasks), got {shards}")
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",")]
        if not all(g.isdigit() for g in ids):
            raise ConfigError(f"bad --gpus {gpus!r}: expected comma-separated GPU ids, e.g. 0,1,2,3")
        if not torch.cuda.is_available():
            raise ConfigError(f"--gpus {gpus}: CUDA is not available on this machine; use --workers N for "
                              f"CPU worker processes")
    if executor == "slurm" and shutil.which("srun") is None:
        raise ConfigError("--executor slurm: no Slurm on this machine (srun not found); submit from a Slurm login "
                          "node, or use --workers N here")
    if grid is not None and (not grid.strip() or grid in (".", "..") or "/" in grid or "\\" in grid):
        raise ConfigError(f"bad --grid {grid!r}: a folder name under --results, without '/', e.g. --grid tiny")
    if teacher_dir is not None and Path(teacher_dir).exists() and not Path(teacher_dir).is_dir():
        raise ConfigError(f"--teacher-dir {teacher_dir} is a file, not a folder; choose a folder "
                          f"(default: <results>/teachers)")


def check_threads(value: int | None) -> None:
    """``--threads``: a positive count, one line before any work."""
    if value is not None and value < 1:
        raise ConfigError(f"--threads must be >= 1 (CPU threads per process), got {value}")


def print_listing() -> None:
    print("methods:  " + ", ".join(list_methods()) + "  (combine with '+', e.g. crd+kd)")
    for m in list_methods():
        print(f"  {m:10s} {method_class(m).defaults}")
    for mod in list_modifiers():
        print(f"modifier: {mod} {method_class(mod).defaults}, written after the method: "
              f"{', '.join(f'{m}+{mod}' for m in modifiable_by(mod))}")
    print("models:   " + ", ".join(list_models()) + ", timm:<name>")
    print("datasets: " + ", ".join(list_datasets()))
    print("presets:  " + ", ".join(list_presets()))


def print_grid(cfg: dict[str, Any], specs: list[RunSpec], teacher_keys: dict[str, str],
               teacher_sources: Mapping[str, TeacherSource], together: bool = True) -> None:
    """``--dry-run``'s listing; ``teacher_sources``: where each teacher comes from (``GridRunner.teacher_sources``:
    imported from a file or via the teacher store, cached by an earlier grid, or to be trained)."""
    print(f"grid {cfg['grid']} (preset {cfg['preset']}, dataset {cfg['dataset']}): {plural(len(specs), 'run')}")
    for arch, key in teacher_keys.items():
        print(f"  teacher {arch}: {teacher_sources[arch].describe()}, key {key}")
    if together:
        print(f"  trained as {plural(len(cohorts(specs)), 'cohort')} (one per pair and seed; "
              f"--no-cohort: one run at a time)")
    else:
        print("  trained one run at a time (--no-cohort)")
    print(f"  methods: {', '.join(cfg['methods'])}")
    print(f"  pairs:   {', '.join(cfg['pairs'])}")
    print(f"  seeds:   {', '.join(map(str, cfg['seeds']))}")
    for key, values in cfg.get("sweep", {}).items():
        print(f"  sweep:   {key} = {', '.join(records.sweep_value(v) for v in values)}")
    if cfg.get("val_fraction"):
        print(f"  validation split: {cfg['val_fraction']:g} of the training set, held out")
    if cfg.get("student_fraction", 1) != 1:
        print(f"  students train on {cfg['student_fraction']:g} of the training set (teachers on all of it)")
    for s in specs:
        print(f"  {s.run_id}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.list:
        print_listing()
        return 0
    try:
        check_flags(args.workers, args.shards, args.gpus, args.executor, args.grid, args.teacher_dir)
        check_threads(args.threads)
        cfg = resolve(args)
        specs = shard(expand(cfg), *parse_shard(args.shard))
        # checks everything that needs no training (device, data, teacher checkpoints) and writes nothing
        runner = GridRunner(cfg, RunnerOptions.from_namespace(args))
        # the runner's config: the resolved one with the teachers' identities and the grid's final name
        if args.dry_run:
            print_grid(runner.cfg, specs, runner.teacher_keys, runner.teacher_sources(), together=not args.no_cohort)
            print(f"  {choose_threads(args.threads, args.workers).describe()}")
            return 0
        if args.executor or args.workers > 1 or args.gpus:
            return launch(runner.cfg, LaunchOptions.from_namespace(args), argv, specs)
        t0 = time.time()
        code = runner.run(specs)
        runner.log(f"done in {time.time() - t0:.0f}s")
        return code
    except BAD_INPUT as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs and checkpoints are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
