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
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from methods import (BuildContext, HyperparameterError, UnknownMethodError, build_method,
                     check_override_keys, list_methods, validate_method)

from . import records
from .config import (ConfigError, apply_set, check_config, fingerprint, list_presets, load_preset, parse_pair, protocol,
                     student_recipe, teacher_recipe)
from .data import DataError, list_datasets, load_dataset
from .models import UnknownModelError, create_model, list_models
from .teachers import TeacherError, get_teacher
from .train import Recipe, StudentRun, freeze, seed_for, train_cohort

BAD_INPUT = (ConfigError, UnknownMethodError, UnknownModelError, HyperparameterError, DataError, TeacherError)


@dataclass
class RunSpec:
    method: str
    teacher: str
    student: str
    seed: int

    @property
    def run_id(self) -> str:
        return records.run_id(self.method, self.teacher, self.student, self.seed)

    @property
    def pair(self) -> str:
        return f"{self.teacher}:{self.student}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="digits", help="preset name or .toml path (default: digits)")
    p.add_argument("--methods", help="comma-separated methods, e.g. triplet,kd,crd+kd ('all' = every one)")
    p.add_argument("--pairs", help="comma-separated teacher:student pairs, e.g. resnet32x4:resnet8x4")
    p.add_argument("--seeds", help="comma-separated student seeds, e.g. 0,1,2")
    p.add_argument("--dataset", help=f"override the preset's dataset ({', '.join(list_datasets())})")
    p.add_argument("--data-root", help="folder holding the dataset (CIFAR: the folder containing cifar-100-python/)")
    p.add_argument("--download", action="store_true", help="download CIFAR into --data-root if missing")
    p.add_argument("--epochs", type=int, help="student epochs (shorthand for --set train.epochs=N)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a preset value or a method hyperparameter, e.g. train.lr=0.1, kd.T=2 (repeatable)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--grid", help="name of the grid folder under --results (default: preset name, plus a "
                                  "hash of the protocol when flags change it)")
    p.add_argument("--teacher-dir", help="teacher cache (default: <results>/teachers)")
    p.add_argument("--teacher-ckpt", action="append", default=[], metavar="ARCH=PATH",
                   help="use this checkpoint as teacher ARCH instead of training one (repeatable)")
    p.add_argument("--no-cohort", action="store_true",
                   help="train each run alone instead of one cohort per pair and seed")
    p.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    p.add_argument("--list", action="store_true", help="list methods, models, datasets and presets")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"empty list {text!r}")
    return items


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Preset + flags -> one validated config; raises one of BAD_INPUT with a clear message."""
    cfg = load_preset(args.preset)
    base_protocol = fingerprint(protocol(cfg))
    if args.dataset:
        cfg["dataset"] = args.dataset
    if args.methods:
        cfg["methods"] = split_list(args.methods)
    if args.pairs:
        cfg["pairs"] = split_list(args.pairs)
    if args.seeds:
        try:
            cfg["seeds"] = [int(s) for s in split_list(args.seeds)]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.epochs is not None:
        cfg.setdefault("train", {})["epochs"] = args.epochs
    for assignment in args.set:
        apply_set(cfg, assignment, set(list_methods()))
    check_config(cfg)
    if cfg["methods"] == ["all"]:
        cfg["methods"] = list_methods()
    if cfg["dataset"] not in list_datasets():
        raise DataError(f"unknown dataset {cfg['dataset']!r}; known datasets: {', '.join(list_datasets())}")
    overrides = cfg.get("method", {})
    check_override_keys(overrides)
    resolved = {m: validate_method(m, overrides) for m in cfg["methods"]}
    pairs = [parse_pair(p) for p in cfg["pairs"]]
    known = set(list_models())
    for t, s in pairs:
        for name in (t, s):
            if not name.startswith("timm:") and name not in known:
                create_model(name)  # raises UnknownModelError listing the known models
        student_recipe(cfg, s)
        teacher_recipe(cfg, t)
    if any(s < 0 for s in cfg["seeds"]):
        raise ConfigError("seeds must be non-negative")
    cfg["resolved_methods"] = resolved
    cfg["pairs"] = [f"{t}:{s}" for t, s in pairs]
    cfg.setdefault("teacher_seed", 0)
    changed = fingerprint(protocol(cfg)) != base_protocol
    cfg["grid"] = args.grid or (f"{cfg['preset']}-{fingerprint(protocol(cfg), 8)}" if changed else cfg["preset"])
    return cfg


def expand(cfg: dict[str, Any]) -> list[RunSpec]:
    out = []
    for pair in cfg["pairs"]:
        t, s = parse_pair(pair)
        for seed in cfg["seeds"]:
            for m in cfg["methods"]:
                out.append(RunSpec(m, t, s, seed))
    return out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def environment(device: torch.device) -> dict[str, Any]:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "host": socket.gethostname(), "device": str(device), "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # process peak RSS (Linux reports KiB): an upper bound shared by a cohort's runs
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(model: torch.nn.Module, input_shape, device, preact: bool):
    """One eval-mode forward on zeros: real feature shapes for sizing a method's adapters, no state change."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model.forward_kd(torch.zeros(2, *input_shape, device=device), preact=preact)
    model.train(was)
    return out


class GridRunner:
    def __init__(self, cfg: dict[str, Any], args: argparse.Namespace):
        self.cfg = cfg
        self.args = args
        self.results_dir = Path(args.results) / cfg["grid"]
        self.teacher_dir = Path(args.teacher_dir) if args.teacher_dir else Path(args.results) / "teachers"
        self.teacher_ckpts = {}
        for item in args.teacher_ckpt:
            if "=" not in item:
                raise ConfigError(f"bad --teacher-ckpt {item!r}: expected ARCH=PATH")
            arch, path = item.split("=", 1)
            self.teacher_ckpts[arch] = path
        self.device = pick_device(args.device)
        self.failed: list[str] = []

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def check_writable(self) -> None:
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            probe_file = self.results_dir / ".write-test"
            probe_file.write_text("ok")
            probe_file.unlink()
        except OSError as e:
            raise ConfigError(f"results directory {self.results_dir} is not writable ({e.strerror}); "
                              f"choose another with --results DIR") from None

    def write_grid(self) -> None:
        cfg = self.cfg
        path = self.results_dir / "grid.json"
        grid = {"name": cfg["grid"], "preset": cfg["preset"], "dataset": cfg["dataset"],
                "methods": list(cfg["methods"]), "pairs": list(cfg["pairs"]), "seeds": list(cfg["seeds"]),
                "config": {k: cfg.get(k) for k in ("data", "train", "teacher_train", "method", "teacher_seed")}}
        if path.exists():  # a later invocation with other methods/pairs/seeds widens the grid, never narrows it
            try:
                old = records.read_json(path)
                for key in ("methods", "pairs", "seeds"):
                    grid[key] = list(dict.fromkeys(old.get(key, []) + grid[key]))
            except records.CorruptRecordError:
                pass
        records.write_json(path, grid)

    def run(self) -> int:
        cfg, args = self.cfg, self.args
        self.check_writable()
        data_opts = dict(cfg.get("data", {}))
        if args.data_root:
            data_opts["data_root"] = args.data_root
        data_opts["download"] = args.download
        self.data = load_dataset(cfg["dataset"], **data_opts)
        self.env = environment(self.device)
        self.write_grid()
        specs = expand(cfg)
        todo = [s for s in specs if not self.is_done(s)]
        self.log(f"grid {cfg['grid']}: {len(specs)} runs, {len(specs) - len(todo)} already complete, "
                 f"{len(todo)} to run on {self.device} -> {self.results_dir}")
        cohorts: dict[tuple[str, int], list[RunSpec]] = {}
        for s in todo:
            key = (s.pair, s.seed) if not args.no_cohort else (s.run_id, s.seed)
            cohorts.setdefault(key, []).append(s)
        self.progress = self._progress(sum(self.student_recipe(s).epochs for s in todo))
        teachers: dict[str, tuple[torch.nn.Module, dict]] = {}
        for cohort in cohorts.values():
            t = cohort[0].teacher
            if t not in teachers:
                teachers[t] = get_teacher(t, self.data, teacher_recipe(cfg, t), cfg["teacher_seed"],
                                          self.device, self.teacher_dir, self.teacher_ckpts.get(t), self.log)
            self.run_cohort(cohort, *teachers[t])
        if self.progress is not None:
            self.progress.close()
        if not args.no_report:
            self.write_report()
        if self.failed:
            self.log(f"{len(self.failed)} run(s) failed: {', '.join(self.failed)} (see {self.results_dir}/report.md)")
            return 1
        return 0

    def _progress(self, total_epochs: int):
        if self.args.quiet or total_epochs == 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total_epochs, unit="epoch", desc="students", dynamic_ncols=True)

    def write_report(self) -> None:
        try:
            from reports import build_report
        except ImportError:  # pragma: no cover
            return
        path = build_report(self.results_dir)
        self.log(f"report: {path}")

    def student_recipe(self, spec: RunSpec) -> Recipe:
        return student_recipe(self.cfg, spec.student)

    def fingerprint_of(self, spec: RunSpec) -> str:
        return fingerprint({"protocol": protocol(self.cfg), "method": self.cfg["resolved_methods"][spec.method],
                            "recipe": self.student_recipe(spec).as_dict()})

    def is_done(self, spec: RunSpec) -> bool:
        path = records.record_path(self.results_dir, spec.run_id)
        if not records.is_complete(self.results_dir, spec.run_id):
            return False
        rec = records.read_json(path)
        if rec.get("config", {}).get("fingerprint") != self.fingerprint_of(spec):
            stale = path.parent / "stale"
            stale.mkdir(exist_ok=True)
            os.replace(path, stale / path.name)
            self.log(f"{spec.run_id}: record made with another configuration; moved to {stale}, rerunning")
            return False
        return True

    def new_record(self, spec: RunSpec, teacher_info: dict, method, model) -> dict[str, Any]:
        recipe = self.student_recipe(spec)
        return {
            "schema": records.SCHEMA_VERSION, "run_id": spec.run_id, "status": "running",
            "method": spec.method, "teacher": spec.teacher, "student": spec.student, "pair": spec.pair,
            "seed": spec.seed, "dataset": self.cfg["dataset"], "preset": self.cfg["preset"],
            "config": {"fingerprint": self.fingerprint_of(spec), "train": recipe.as_dict(),
                       "method": self.cfg["resolved_methods"][spec.method], "data": self.data.describe(),
                       "cohort": not self.args.no_cohort, "teacher_seed": self.cfg["teacher_seed"]},
            "env": self.env,
            "teacher_info": {k: teacher_info.get(k) for k in ("key", "top1", "top5", "path", "source")},
            "metrics": None, "history": [], "error": None,
            "cost": {"extra_params": method.extra_parameters(),
                     "student_params": sum(p.numel() for p in model.parameters())},
            "started_at": now(), "finished_at": None,
        }

    def run_cohort(self, cohort: list[RunSpec], teacher, teacher_info: dict) -> None:
        runs: list[StudentRun] = []
        recs: dict[str, dict] = {}
        for spec in cohort:
            try:
                # same student init for every method of a seed; each method's modules from its own seed
                torch.manual_seed(seed_for(spec.seed, "init", spec.student))
                model = create_model(spec.student, num_classes=self.data.num_classes).to(self.device)
                torch.manual_seed(seed_for(spec.seed, "method", spec.method))
                # probing with preact costs nothing and serves every method
                ctx = BuildContext(probe(model, self.data.input_shape, self.device, True),
                                   probe(teacher, self.data.input_shape, self.device, True),
                                   self.data.num_classes, self.data.train_labels)
                method = build_method(spec.method, ctx, self.cfg.get("method", {})).to(self.device)
                run = StudentRun(spec.run_id, model, method, self.student_recipe(spec), spec.seed)
            except Exception as e:
                self.fail(spec, None, e, None)
                continue
            rec = self.new_record(spec, teacher_info, method, model)
            records.write_json(records.record_path(self.results_dir, spec.run_id), rec)
            records.metrics_path(self.results_dir, spec.run_id).unlink(missing_ok=True)
            runs.append(run)
            recs[run.run_id] = rec
        if not runs:
            return
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        data_generator = torch.Generator().manual_seed(seed_for(cohort[0].seed, "data"))

        def on_epoch_end(epoch: int, all_runs: list[StudentRun]) -> None:
            for r in all_runs:
                if r.error is None and r.history and r.history[-1]["epoch"] == epoch + 1:
                    records.append_jsonl(records.metrics_path(self.results_dir, r.run_id), r.history[-1])
            if self.progress is not None:
                self.progress.update(len(all_runs))
                best = max((r for r in all_runs if r.history), key=lambda r: r.history[-1]["test_top1"],
                           default=None)
                if best is not None:
                    self.progress.set_postfix_str(f"{cohort[0].pair} s{cohort[0].seed} ep {epoch + 1} "
                                                  f"best {best.method.name} {best.history[-1]['test_top1']:.1f}%")

        train_cohort(runs, self.data, self.device, teacher=teacher, data_generator=data_generator,
                     on_epoch_end=on_epoch_end)
        peak = peak_memory_mb(self.device)
        for r in runs:
            rec = recs[r.run_id]
            spec = next(s for s in cohort if s.run_id == r.run_id)
            if r.error is not None:
                self.fail(spec, rec, r.error, getattr(r, "error_at", None), r)
                continue
            self.finish(rec, r, peak)

    def finish(self, rec: dict, run: StudentRun, peak_mb: float) -> None:
        hist = run.history
        best = max(hist, key=lambda h: h["test_top1"])
        rec.update({
            "status": "complete", "history": hist, "finished_at": now(),
            "metrics": {"top1_last": hist[-1]["test_top1"], "top5_last": hist[-1]["test_top5"],
                        "top1_best": best["test_top1"], "top5_best": best["test_top5"],
                        "best_epoch": best["epoch"], "epochs": len(hist)},
            "cost": self.cost(rec, run, peak_mb),
        })
        records.write_json(records.record_path(self.results_dir, run.run_id), rec)

    def cost(self, rec: dict, run: StudentRun, peak_mb: float) -> dict[str, Any]:
        hist = run.history
        train_time = sum(h["time_s"] for h in hist)
        return {**rec["cost"], "time_s": run.time_s, "epoch_time_s": train_time / max(len(hist), 1),
                "images_per_s": len(hist) * self.data.num_train / train_time if train_time else None,
                "peak_mem_mb": peak_mb}

    def fail(self, spec: RunSpec, rec: dict | None, error: BaseException, at, run: StudentRun | None = None):
        self.failed.append(spec.run_id)
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        self.log(f"{spec.run_id}: FAILED: {type(error).__name__}: {message}")
        if rec is None:
            rec = {"schema": records.SCHEMA_VERSION, "run_id": spec.run_id, "method": spec.method,
                   "teacher": spec.teacher, "student": spec.student, "pair": spec.pair, "seed": spec.seed,
                   "dataset": self.cfg["dataset"], "preset": self.cfg["preset"], "config": {},
                   "env": self.env, "started_at": now()}
        rec.update({"status": "failed", "finished_at": now(),
                    "history": run.history if run is not None else [],
                    "error": {"type": type(error).__name__, "message": message,
                              "epoch": (at[0] + 1) if at else None, "step": at[1] if at else None,
                              "traceback": "".join(traceback.format_exception(error))[-4000:]}})
        records.write_json(records.record_path(self.results_dir, spec.run_id), rec)


def print_listing() -> None:
    from methods import method_class

    print("methods:  " + ", ".join(list_methods()) + "  (combine with '+', e.g. crd+kd)")
    for m in list_methods():
        print(f"  {m:10s} {method_class(m).defaults}")
    print("models:   " + ", ".join(list_models()) + ", timm:<name>")
    print("datasets: " + ", ".join(list_datasets()))
    print("presets:  " + ", ".join(list_presets()))


def print_grid(cfg: dict[str, Any], specs: list[RunSpec]) -> None:
    print(f"grid {cfg['grid']} (preset {cfg['preset']}, dataset {cfg['dataset']}): {len(specs)} runs")
    print(f"  methods: {', '.join(cfg['methods'])}")
    print(f"  pairs:   {', '.join(cfg['pairs'])}")
    print(f"  seeds:   {', '.join(map(str, cfg['seeds']))}")
    for s in specs:
        print(f"  {s.run_id}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print_listing()
        return 0
    try:
        cfg = resolve(args)
        specs = expand(cfg)
        if args.dry_run:
            print_grid(cfg, specs)
            return 0
        runner = GridRunner(cfg, args)
        t0 = time.time()
        code = runner.run()
        runner.log(f"done in {time.time() - t0:.0f}s")
        return code
    except BAD_INPUT as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: complete runs are kept; rerun the same command to finish the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
