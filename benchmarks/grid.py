"""Running a grid: cohorts, records, checkpoints, resume and locks.

For every (pair, seed) the runner trains the methods still to do as one cohort
(``--no-cohort``: one by one). Durability rules:

* each run checkpoints at the end of every ``checkpoint_every``-th epoch
  (models, optimizer, method state such as CRD's memory, its RNG, the shared
  data-stream RNG, history), atomically with the previous one kept;
  rerunning the same command resumes every unfinished run from its last
  readable checkpoint and skips finished ones;
* a run holds a lock (``runs/<run_id>.lock``, flock) while it trains, so two
  runner processes on the same grid never train the same run; a teacher has a
  lock too, so one process trains it (checkpointing and resuming as a run does,
  ``teachers.py``) and the others wait and reuse it;
* records are written atomically; an unreadable record or checkpoint is
  reported and not trusted (the run is redone from the last good state).

A run's files (record, metrics, curves, weights, checkpoint) are written by its
``RunRecorder`` (``recorder.py``), the one place that knows their order.
"""
from __future__ import annotations

import itertools
import os
import platform
import socket
import subprocess
import sys
import traceback
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from methods import (CATALOGUE, BuildContext, HyperparameterError, PairNotSupported, build_method, method_defaults, method_stages,
                     method_views)
from reports import build_report

from kdcore import records
from kdcore.costs import MB, peak_rss_mb, reset_peak_rss
from kdcore.cpus import ThreadChoice, choose_threads, follow_load, look_at_load, stop_following
from kdcore.config import (ConfigError, FrozenConfig, data_split, fingerprint, flags_for, grid_name, method_overrides,
                     parse_pair, pick_device, protocol, student_recipe, teacher_recipe, thaw)
from kdcore.curves import CurveWriter, Curves, WandbProject, WandbWriter, curves_dir
from kdcore.data import for_students, load_dataset, with_validation
from benchmarks.locks import FileLock
from kdcore.models import create_model
from benchmarks.progress import make_progress
from kdcore.text import plural
from kdcore.recorder import RunCheckpoint, RunRecorder
from benchmarks.teachers import (IMPORTED, TeacherError, TeacherSource, check_against_reference, get_teacher,
                       inspect_teacher_checkpoint, teacher_identity, teacher_source)
from kdcore.fidelity import TeacherTest
from kdcore.train import StudentRun, freeze, seed_for, train_cohort
from kdcore.recipe import FastPaths, Recipe, evaluated


@dataclass(frozen=True)
class RunSpec:
    """One run: a method (with the values of the grid's sweeps that apply to it), a pair and a seed.

    ``sweep``: ``(("kd.T", 2.0), ...)`` in the grid's sweep order; empty for a run no sweep touches.
    """
    method: str
    teacher: str
    student: str
    seed: int
    sweep: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """The method as tables and run ids name it: ``kd``, or ``kd[T=2]`` with a swept value."""
        return records.variant_label(self.method, self.sweep)

    @property
    def run_id(self) -> str:
        return records.run_id(self.label, self.teacher, self.student, self.seed)

    @property
    def pair(self) -> str:
        return f"{self.teacher}:{self.student}"


def method_variants(method: str, sweep: dict[str, list]) -> list[tuple[tuple[str, Any], ...]]:
    """The swept values a method runs with: the product of the sweeps over its parts' hyperparameters
    (``kd.T`` touches kd, crd+kd, kd+ls; not crd), in the grid's sweep order; ``[()]`` when none applies."""
    keys = [k for k in sweep if k.split(".", 1)[0] in method_defaults(method)]
    return [tuple(zip(keys, values)) for values in itertools.product(*(sweep[k] for k in keys))]


def expand(cfg: dict[str, Any]) -> list[RunSpec]:
    """Pairs x seeds x methods (x each method's swept values), in that order: a cohort's runs stay together."""
    out = []
    variants = {m: method_variants(m, cfg.get("sweep") or {}) for m in cfg["methods"]}
    for pair in cfg["pairs"]:
        t, s = parse_pair(pair)
        for seed in cfg["seeds"]:
            for m in cfg["methods"]:
                for sweep in variants[m]:
                    out.append(RunSpec(m, t, s, seed, sweep))
    return out


def spec_overrides(cfg: dict[str, Any], spec: RunSpec) -> dict[str, dict[str, Any]]:
    """The method hyperparameter overrides of one run: its pair's (``config.method_overrides``), then its
    swept values, which win over per-pair values as a ``--set`` does."""
    out = method_overrides(cfg, spec.pair)
    for key, value in spec.sweep:
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"bad --shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"bad --shard {text!r}: need 0 <= i < n")
    return i, n


def cohort_key(spec: RunSpec, together: bool = True) -> tuple:
    """The cohort a run trains in: its (pair, seed), or, with ``together=False`` (``--no-cohort``), its own."""
    return (spec.pair, spec.seed) if together else (spec.run_id,)


def cohorts(specs: list[RunSpec], together: bool = True) -> dict[tuple, list[RunSpec]]:
    """The runs grouped as they train, cohorts and runs in grid order."""
    out: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        out.setdefault(cohort_key(s, together), []).append(s)
    return out


def position(run: StudentRun, epoch: int) -> str:
    """Where stream epoch ``epoch`` (0-based) is in ``run``: ``stage init 3/10`` in a pre-training stage, else
    ``ep 12/40`` of the recipe's epochs (a stage's epochs come first, so the stream runs past the recipe's)."""
    stage, at = run.stage_at(epoch)
    return f"stage {stage.name} {at + 1}/{stage.epochs}" if stage is not None else f"ep {at + 1}/{run.recipe.epochs}"


def cohort_position(runs: list[tuple[str, str]]) -> str:
    """The position of a cohort's runs (``(label, position)`` each): ``ep 12/40`` where they agree; else that of
    most of them, then the others' with their labels: ``ep 12/40, ab stage init 3/10``."""
    groups: dict[str, list[str]] = {}
    for label, at in runs:
        groups.setdefault(at, []).append(label)
    most = max(groups, key=lambda at: len(groups[at]))
    return ", ".join(at if at == most else f"{','.join(labels)} {at}" for at, labels in groups.items())


def cohort_line(runs: list[tuple[RunSpec, StudentRun]]) -> str:
    """The log line of a cohort about to train (one line, not one per run): ``cohort T:S s0: 5 runs``, then the
    runs that resume and where (``, 2 resumed: kd, crd from ep 3/40; ab from stage init 4/10``); a lone run
    is named."""
    first = runs[0][0]
    text = f"cohort {first.pair} s{first.seed}: {plural(len(runs), 'run')}"
    text += f" ({first.label})" if len(runs) == 1 else ""
    resumed: dict[str, list[str]] = {}
    for spec, run in runs:
        if run.epochs_done:  # a checkpoint after its last epoch (killed before its record): nothing to train
            at = f"from {position(run, run.epochs_done)}" if run.epochs_done < run.total_epochs else "all epochs done"
            resumed.setdefault(at, []).append(spec.label)
    if resumed:
        text += (f", {sum(map(len, resumed.values()))} resumed: "
                 + "; ".join(f"{', '.join(labels)} {at}" for at, labels in resumed.items()))
    return text


def shard(specs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard ``index`` of ``count``: whole cohorts (pair, seed), dealt round-robin in grid order.

    Deterministic from the grid alone, so independent machines agree on who does what.
    """
    mine = set(list(cohorts(specs))[index::count])
    return [s for s in specs if cohort_key(s) in mine]


def environment(device: torch.device, threads: ThreadChoice | None = None) -> dict[str, Any]:
    """Where a run trains; ``threads``: how its thread count was chosen (``cpus.choose_threads``)."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "host": socket.gethostname(), "pid": os.getpid(), "device": str(device),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if threads is not None:
        env.update(threads.record())
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


def start_host_memory(device: torch.device) -> str | None:
    """Before a cohort trains on the CPU: reset the process's peak RSS. Returns what the peak will cover
    ("cohort", or "process" where the reset is refused); None on CUDA, where each run's steps are measured."""
    if device.type == "cuda":
        return None
    return "cohort" if reset_peak_rss() else "process"


def cohort_cost(run_ids: list[str], scope: str | None) -> dict[str, Any]:
    """The cost fields a cohort's runs share: on the CPU, the process's peak RSS while it trained (one figure
    for the cohort, not per method) and which runs it covers."""
    if scope is None:
        return {}
    return {"cohort": list(run_ids), "cohort_peak_rss_mb": peak_rss_mb(), "cohort_peak_rss_scope": scope}


def run_cost(run: StudentRun) -> dict[str, Any]:
    """A run's own memory: exact bytes of what it keeps and, on CUDA, its steps' peak allocated memory."""
    out: dict[str, Any] = run.memory_bytes()
    if run.cuda_peaks:
        out.update(cuda_peak_mb=run.cuda_peaks["peak"] / MB, cuda_step_mb=run.cuda_peaks["step"] / MB)
    return out


def probe(model: torch.nn.Module, input_shape, device, preact: bool):
    """One eval-mode forward on zeros: real feature shapes for sizing a method's adapters, no state change."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model.forward_kd(torch.zeros(2, *input_shape, device=device), preact=preact)
    model.train(was)
    return out


def split_data(data, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    """The grid's data from the dataset as loaded: the teachers' (the validation split held out, for teachers
    and students alike) and the students' (their subset of it, ``student_fraction``); recomputed identically
    on resume and on every DDP rank."""
    teachers = with_validation(data, cfg.get("val_fraction", 0))
    return teachers, for_students(teachers, cfg.get("student_fraction", 1))


def build_student(spec: RunSpec, overrides: dict[str, dict[str, Any]], data, teacher, device,
                  teacher_probe=None) -> tuple[torch.nn.Module, Any]:
    """The student model and its method for one run: what the grid, the DDP entry point, the speed
    benchmark and the tests train.

    Same student init for every method of a seed (``seed_for(seed, "init", student)``); each method's
    modules from their own seed. ``overrides``: the pair's method hyperparameters
    (``config.method_overrides``). ``teacher_probe``: the teacher's probe output when the caller has it.
    """
    torch.manual_seed(seed_for(spec.seed, "init", spec.student))
    model = create_model(spec.student, num_classes=data.num_classes).to(device)
    torch.manual_seed(seed_for(spec.seed, "method", spec.method))
    if teacher_probe is None and teacher is not None:
        teacher_probe = probe(teacher, data.input_shape, device, True)
    # probing with preact costs nothing and serves every method
    ctx = BuildContext(probe(model, data.input_shape, device, True), teacher_probe, data.num_classes,
                       data.train_labels, student_model=model, teacher_model=teacher)
    return model, build_method(spec.method, ctx, overrides).to(device)


# a record with one of these statuses is not run again (if its configuration is the grid's)
DONE_STATUSES = ("complete", "not_applicable")

# what a record keeps of its teacher: identity, accuracy, and where it came from (trained: recipe, seed,
# epochs; imported: file and weight hash)
TEACHER_INFO_KEYS = ("arch", "key", "top1", "top5", "source", "path", "file", "weights_sha", "seed", "epochs",
                     "recipe")


@dataclass(frozen=True)
class RunnerOptions:
    """How the runner works (where, on what, how often it checkpoints), resolved from the command line once;
    frozen: nothing below the CLI reads an ``argparse.Namespace``. What a run computes is in the config."""

    results: str = "results"
    teacher_dir: str | None = None
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    teacher_inference_mode: str = "auto"
    compile: bool = False
    checkpoint_every: int = 1
    wandb: str | None = None
    data_root: str | None = None
    download: bool = False
    quiet: bool = False
    no_cohort: bool = False
    no_report: bool = False
    threads: int | None = None

    @classmethod
    def from_namespace(cls, args: Any) -> "RunnerOptions":
        """The fields of the CLI's parsed arguments (``benchmarks.run.build_parser``) this type names."""
        return cls(**flags_for(cls, args))


class GridRunner:
    """Validates everything that needs no training on construction (device, data, teacher checkpoints,
    the teachers' identities), writes nothing until ``run``."""

    def __init__(self, cfg: Mapping[str, Any], options: RunnerOptions):
        """``cfg``: the resolved config (``benchmarks.run.resolve``), never changed; the runner's own
        ``self.cfg`` is derived from it with ``teachers`` and the grid's final name (``grid``)."""
        if not isinstance(options, RunnerOptions):
            raise TypeError("GridRunner takes RunnerOptions (RunnerOptions.from_namespace(args) in the CLI)")
        self.cfg = cfg if isinstance(cfg, FrozenConfig) else FrozenConfig(cfg)
        self.options = options
        self.teacher_dir = Path(options.teacher_dir) if options.teacher_dir else Path(options.results) / "teachers"
        self.teacher_ckpts: dict[str, str] = dict(cfg.get("teacher_ckpts", {}))
        self.device = pick_device(options.device)
        self.fast = FastPaths(options.amp, options.channels_last, options.teacher_inference_mode, options.compile) \
            .resolve(self.device)
        self.checkpoint_every = options.checkpoint_every
        if self.checkpoint_every < 0:
            raise ConfigError("--checkpoint-every must be >= 0 (0: never)")
        self.failed: list[str] = []
        self.wandb: WandbProject | None = None
        self.stale_moved = 0
        self.unreadable_said: set[str] = set()  # run ids whose unreadable record was logged (once)
        self.progress = None
        self.data, self.student_data = split_data(self.load_data(), self.cfg)
        for m in cfg["methods"]:
            missing = [v for v in method_views(m) if v not in getattr(self.data, "views", ())]
            if missing:
                raise ConfigError(f"{m} trains on the {missing[0]} view, which {cfg['dataset']} data does not produce "
                                  f"(views come with in-memory datasets: digits, cifar10, cifar100, MNIST, ...)")
        self.teacher_keys = self.identify_teachers()
        self.check_builds()
        # imported weights are part of the protocol: another checkpoint is another grid, never a reuse
        teachers = {a: k for a, k in self.teacher_keys.items() if k.startswith(IMPORTED)}
        self.cfg = self.cfg.derive(teachers=teachers, grid=grid_name({**self.cfg, "teachers": teachers}))
        self.results_dir = Path(options.results) / self.cfg["grid"]
        if options.wandb:
            self.wandb = WandbProject(options.wandb, self.cfg["grid"], self.results_dir, self.log)

    def identify_teachers(self) -> dict[str, str]:
        """Each teacher's identity before any work: an imported checkpoint's weight hash (read and fitted
        to its architecture here, so a bad file fails now), else the suite's cache key."""
        out = {}
        for t in dict.fromkeys(parse_pair(p)[0] for p in self.cfg["pairs"]):
            if t in self.teacher_ckpts:
                out[t] = inspect_teacher_checkpoint(t, self.teacher_ckpts[t], self.data.num_classes)["key"]
            else:
                out[t] = teacher_identity(t, self.data.describe(), teacher_recipe(self.cfg, t),
                                          self.cfg["teacher_seed"], self.teacher_dir, self.data.num_classes,
                                          amp=self.fast["amp"])
        return out

    def check_builds(self) -> None:
        """Build every run's method once per (method or swept value, pair), on the CPU, with an untrained
        teacher of the pair's architecture, before any teacher trains: a hyperparameter only the models can
        check (``fitnet.hint_layer`` past the student's feature maps) is a HyperparameterError here, exit 2,
        instead of a failed run after the teacher's training. A pair a method cannot run stays "not
        applicable" at run time."""
        cpu = torch.device("cpu")
        by_pair: dict[str, dict[str, RunSpec]] = {}
        for spec in expand(self.cfg):  # one spec per (label, pair): the first seed's
            by_pair.setdefault(spec.pair, {}).setdefault(spec.label, spec)
        rng = torch.random.get_rng_state()  # build_student seeds the global generator; leave it as it was
        try:
            for pair, specs in by_pair.items():
                teacher = freeze(create_model(parse_pair(pair)[0], num_classes=self.student_data.num_classes))
                teacher_probe = probe(teacher, self.student_data.input_shape, cpu, True)
                for spec in specs.values():
                    try:
                        build_student(spec, spec_overrides(self.cfg, spec), self.student_data, teacher, cpu,
                                      teacher_probe=teacher_probe)
                    except PairNotSupported:
                        continue
                    except HyperparameterError as e:
                        raise HyperparameterError(f"{spec.label} on {pair}: {e}") from None
                    except Exception as e:  # one line before any training, never a traceback
                        why = "a method that cannot run on a pair raises methods.PairNotSupported: the table says n/a"
                        raise ConfigError(f"{spec.label} cannot be built on {pair}: {e} ({why})") from None
        finally:
            torch.random.set_rng_state(rng)

    # --- output -----------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.progress is not None:
            self.progress.log(msg)  # through the bar, which stays one line
        else:
            print(msg, file=sys.stderr, flush=True)

    def check_writable(self) -> None:
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            probe_file = self.results_dir / f".write-test-{os.getpid()}"
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
                "config": {k: cfg.get(k) for k in ("data", "train", "teacher_train", "method", "teacher_seed",
                                                   "teacher_ckpts", "teachers")}}
        grid["config"].update(data_split(cfg))
        if cfg.get("teacher_reference"):  # the report shows each teacher beside it; absent, grid.json is as it was
            grid["config"]["teacher_reference"] = dict(cfg["teacher_reference"])
        variants = self.variants()
        with FileLock(self.results_dir / "grid.lock"):
            if path.exists():  # a later invocation with other methods/pairs/seeds widens the grid, never narrows it
                try:
                    old = records.read_json(path)
                    old_variants = {m: old.get("variants", {}).get(m, [{"label": m, "sweep": {}}])
                                    for m in old.get("methods", [])}
                    for key in ("methods", "pairs", "seeds"):
                        grid[key] = list(dict.fromkeys(old.get(key, []) + grid[key]))
                    for m in grid["methods"]:  # a method's runs: the old grid's variants, then this one's
                        both = old_variants.get(m, []) + variants.get(m, [])
                        variants[m] = list({v["label"]: v for v in both}.values())
                except records.CorruptRecordError:
                    self.log(f"{path} was unreadable; rewriting it")
            # a grid without sweeps keeps the grid.json it always had
            if any(v != [{"label": m, "sweep": {}}] for m, v in variants.items()):
                grid["variants"] = {m: variants.get(m, [{"label": m, "sweep": {}}]) for m in grid["methods"]}
            records.write_json(path, grid)

    def variants(self) -> dict[str, list[dict[str, Any]]]:
        """Each method's runs in this invocation: ``[{"label": "kd[T=2]", "sweep": {"kd.T": 2.0}}, ...]``."""
        return {m: [{"label": records.variant_label(m, sw), "sweep": dict(sw)}
                    for sw in method_variants(m, self.cfg.get("sweep") or {})] for m in self.cfg["methods"]}

    def write_report(self) -> None:
        with FileLock(self.results_dir / "report.lock"):
            path = build_report(self.results_dir, catalogue=CATALOGUE)
        self.log(f"report: {path}")

    # --- the grid ---------------------------------------------------------------
    def load_data(self):
        """The dataset as loaded, before ``split_data``."""
        data_opts = thaw(self.cfg.get("data", {}))
        if self.options.data_root:
            data_opts["data_root"] = self.options.data_root
        data_opts["download"] = self.options.download
        return load_dataset(self.cfg["dataset"], **data_opts)

    def run(self, specs: list[RunSpec]) -> int:
        self.check_writable()
        self.choose_threads()
        self.write_grid()
        todo = [s for s in specs if not self.is_done(s)]
        if self.stale_moved:
            self.log(f"{plural(self.stale_moved, 'record')} made under another protocol moved to "
                     f"{self.results_dir / 'runs' / 'stale'}; their runs are redone")
        self.log(f"grid {self.cfg['grid']}: {plural(len(specs), 'run')}, {len(specs) - len(todo)} already complete, "
                 f"{len(todo)} to run on {self.device} -> {self.results_dir}")
        sources = self.teacher_sources(todo)
        if todo:
            self.log(self.plan(todo, sources))
        if not self.options.quiet and todo:
            by_pair: dict[str, int] = {}  # each pair's student epochs, timed apart: their students cost differently
            for s in todo:
                by_pair[s.pair] = by_pair.get(s.pair, 0) + self.run_epochs(s)
            self.progress = make_progress(sum(by_pair.values()), "student epoch",
                                          teachers={t: s.epochs for t, s in sources.items() if s.kind == "train"},
                                          groups=by_pair)
        self.estimated = False
        teachers: dict[str, tuple[torch.nn.Module, dict]] = {}
        teacher_tests: dict[str, TeacherTest] = {}
        for cohort in cohorts(todo, together=not self.options.no_cohort).values():
            locks = [FileLock(records.record_path(self.results_dir, s.run_id).with_suffix(".lock")) for s in cohort]
            mine = [s for s, lock in zip(cohort, locks) if lock.acquire()]
            try:
                busy = [s.run_id for s in cohort if s not in mine]
                if busy:
                    self.log(f"skipping {plural(len(busy), 'run')} another process is training: {', '.join(busy)}")
                mine = [s for s in mine if not self.is_done(s)]  # finished by another process meanwhile
                if self.progress is not None:  # done by others: counted, not timed
                    for s in cohort:
                        if s not in mine:
                            self.progress.skip(self.run_epochs(s), s.pair)
                if not mine:
                    continue
                if self.threads.source == "auto":  # a job that started or ended beside this one: the new runs' env
                    self.threads = look_at_load() or self.threads
                    self.env = environment(self.device, self.threads)
                t = mine[0].teacher
                if t not in teachers:
                    if self.progress is not None:
                        self.progress.remaining.teacher_begins()  # the teacher's time is not the students'
                    teachers[t] = get_teacher(t, self.data, teacher_recipe(self.cfg, t), self.cfg["teacher_seed"],
                                              self.device, self.teacher_dir, self.teacher_ckpts.get(t), self.log,
                                              fast=self.fast, checkpoint_every=self.checkpoint_every)
                    if self.progress is not None:
                        self.progress.remaining.teacher_ready(t, teachers[t][1])
                    if teachers[t][1]["key"] != self.teacher_keys[t]:  # e.g. an import replaced it meanwhile
                        raise TeacherError(f"teacher {t} changed while this grid ran ({self.teacher_keys[t]} -> "
                                           f"{teachers[t][1]['key']}); rerun the command")
                    check_against_reference(t, teachers[t][1], self.cfg.get("teacher_reference"), self.data.name)
                    # the teacher's test outputs (agreement, KL, its ECE): one pass per grid, not per cohort
                    teacher_tests[t] = TeacherTest(teachers[t][0], self.student_data, self.device)
                self.run_cohort(mine, *teachers[t], teacher_test=teacher_tests[t])
            finally:
                for lock in locks:
                    lock.release()
        stop_following()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if not self.options.no_report:
            self.write_report()
        if self.failed:
            self.log(f"{plural(len(self.failed), 'run')} failed: {', '.join(self.failed)} "
                     f"(errors in {self.results_dir}/report.md)")
            return 1
        return 0

    def choose_threads(self) -> None:
        """Size this process's intra-op threads (``cpus.choose_threads``); under ``auto`` the training loop then
        follows the load epoch by epoch (``cpus.follow_load``), each change logged."""
        self.threads = follow_load(choose_threads(self.options.threads), self.log)
        self.env = environment(self.device, self.threads)

    def teacher_sources(self, specs: list[RunSpec] | None = None) -> dict[str, TeacherSource]:
        """Where each teacher of ``specs`` (default: the grid's) will come from, as ``get_teacher`` will find it
        now: imported from a file or via the teacher store, cached, or to be trained; nothing is read or trained."""
        archs = dict.fromkeys(s.teacher for s in specs) if specs is not None else self.teacher_keys
        return {t: teacher_source(t, self.data.describe(), teacher_recipe(self.cfg, t), self.cfg["teacher_seed"],
                                  self.teacher_dir, self.teacher_ckpts.get(t), self.fast["amp"]) for t in archs}

    def plan(self, todo: list[RunSpec], sources: Mapping[str, TeacherSource]) -> str:
        """What will happen: runs, cohorts, student epochs, and where each teacher comes from (``sources``)."""
        groups = cohorts(todo, together=not self.options.no_cohort)
        epochs = sum(self.run_epochs(s) for s in todo)
        teachers = "".join(f"; teacher {t} {source.describe()}" for t, source in sources.items())
        return (f"plan: {plural(len(todo), 'run')} as {plural(len(groups), 'cohort')}, "
                f"{plural(epochs, 'student epoch')} on {self.device}, {self.threads.describe()}{teachers}; "
                f"an estimate follows the first student epoch")

    def estimate(self) -> None:
        """Once, after the first student epoch trained: the time left, if any (``progress.Remaining``)."""
        if self.estimated or self.progress is None or not self.progress.remaining.timed:
            return
        self.estimated = True
        remaining = self.progress.remaining
        left = remaining.text()
        if left is not None:  # the first epoch may have been the last
            self.log(f"estimate: {left}, at {remaining.student_s / remaining.timed:.1f}s per student epoch so far")

    def student_recipe(self, spec: RunSpec) -> Recipe:
        return student_recipe(self.cfg, spec.student)

    def run_epochs(self, spec: RunSpec) -> int:
        """Epochs of the batch stream the run trains: its method's pre-training stages' and the recipe's."""
        stages = method_stages(spec.method, self.cfg["resolved_methods"][spec.pair][spec.label])
        return sum(st.epochs for st in stages) + self.student_recipe(spec).epochs

    def fingerprint_of(self, spec: RunSpec) -> str:
        # fast paths change the arithmetic (bf16), so they are part of a run's identity
        # the run's own resolved hyperparameters are; other methods' values ([method], [method_by_pair]) are not
        # its teacher's key is (an imported one's weight hash; a trained one's data, recipe, seed and seeding
        # scheme), so a record made with another teacher is never counted as this run's
        shared = {k: v for k, v in protocol(self.cfg).items() if k not in ("method", "method_by_pair")}
        identity = {"protocol": shared, "method": self.cfg["resolved_methods"][spec.pair][spec.label],
                    "recipe": self.student_recipe(spec).as_dict(), "fast": self.fast,
                    "teacher": self.teacher_keys.get(spec.teacher)}
        # the images themselves, where the loader hashes them (MNIST, FashionMNIST): an imported teacher's key
        # is its weights only, so other files under the same dataset name would otherwise count as this run's
        content = self.data.describe().get("content_sha")
        if content is not None:
            identity["data_content"] = content
        return fingerprint(identity)

    def checkpoint_path(self, spec: RunSpec) -> Path:
        return records.record_path(self.results_dir, spec.run_id).with_suffix(".ckpt.pt")

    def recorder(self, spec: RunSpec, checkpoint: RunCheckpoint | None = None, trains: bool = True) -> RunRecorder:
        """The recorder of ``spec``'s files in this grid; its checkpoint is ``checkpoint`` or, for a run that
        ``trains``, the grid's (``checkpoint_path``, every ``checkpoint_every`` epochs)."""
        if checkpoint is None and trains:
            checkpoint = RunCheckpoint(self.checkpoint_path(spec), self.fingerprint_of(spec), self.checkpoint_every,
                                       spec.run_id, self.log)
        return RunRecorder(checkpoint, self.results_dir, spec.run_id)

    def is_done(self, spec: RunSpec) -> bool:
        path = records.record_path(self.results_dir, spec.run_id)
        if not path.exists():
            return False
        try:
            rec = records.read_record(path)
        except records.RecordError as e:
            if spec.run_id not in self.unreadable_said:  # is_done is asked again under the run's lock
                self.unreadable_said.add(spec.run_id)
                self.log(f"{spec.run_id}: {e}; redoing the run from its last good checkpoint")
            return False
        if rec.status not in DONE_STATUSES:
            return False
        if rec.config.get("fingerprint") != self.fingerprint_of(spec):
            stale = self.move_stale(spec.run_id, str(rec.config.get("fingerprint")))
            self.stale_moved += 1
            self.log(f"{spec.run_id}: record made with another configuration; moved to {stale}, rerunning")
            return False
        return True

    def move_stale(self, run_id: str, fingerprint: str) -> Path:
        """A complete run made with another configuration: every file of it (record, metrics, weights,
        checkpoints, TensorBoard curves) moves to ``runs/stale/<its fingerprint>/``, where the rerun cannot
        overwrite it (a second protocol change gets its own folder); returns that folder."""
        runs = records.record_path(self.results_dir, run_id).parent
        stale = runs / "stale" / fingerprint[:16]
        for n in itertools.count(2):
            if not any(p.name.startswith(run_id + ".") for p in stale.glob("*")):
                break
            stale = runs / "stale" / f"{fingerprint[:16]}-{n}"
        stale.mkdir(parents=True, exist_ok=True)
        for p in list(runs.iterdir()):
            # run ids end with the seed: no other run's file matches; the lock stays (a runner may hold it)
            if p.is_file() and p.name.startswith(run_id + ".") and p.suffix != ".lock":
                os.replace(p, stale / p.name)
        curves = curves_dir(self.results_dir, run_id)
        if curves.exists():
            (stale / "tensorboard").mkdir(exist_ok=True)
            os.replace(curves, stale / "tensorboard" / run_id)
        return stale

    def new_record(self, spec: RunSpec, teacher_info: dict, method, model) -> records.RunRecord:
        """The record of a run about to train ("running")."""
        recipe = self.student_recipe(spec)
        return self.bare_record(
            spec, {"fingerprint": self.fingerprint_of(spec), "train": recipe.as_dict(),
                   "method": self.cfg["resolved_methods"][spec.pair][spec.label],
                   "data": self.student_data.describe(),
                   "cohort": not self.options.no_cohort, "teacher_seed": self.cfg["teacher_seed"],
                   "checkpoint_every": self.checkpoint_every, "fast_paths": self.fast,
                   **data_split(self.cfg)},
            status="running",
            teacher_info={k: teacher_info.get(k) for k in TEACHER_INFO_KEYS if k in teacher_info},
            cost=records.Cost(extra_params=method.extra_parameters(),
                              student_params=sum(p.numel() for p in model.parameters()),
                              # each view (MLKD's strong one) costs one more student and one more teacher
                              # forward per step
                              views=list(method.views),
                              teacher_forwards_per_step=(1 + len(method.views)) if method.needs_teacher else 0))

    def build_run(self, spec: RunSpec, teacher) -> StudentRun:
        model, method = build_student(spec, spec_overrides(self.cfg, spec), self.student_data, teacher, self.device)
        return StudentRun(spec.run_id, model, method, self.student_recipe(spec), spec.seed)

    def run_cohort(self, cohort: list[RunSpec], teacher, teacher_info: dict,
                   teacher_test: TeacherTest | None = None) -> None:
        """Train ``cohort`` (same pair and seed); runs resumed at different epochs train as separate cohorts."""
        groups: dict[int, list[tuple[RunSpec, StudentRun, RunRecorder]]] = {}
        data_states: dict[int, Any] = {}
        built: list[tuple[RunSpec, StudentRun]] = []
        for spec in cohort:
            try:
                run = self.build_run(spec, teacher)
            except PairNotSupported as e:
                self.not_applicable(spec, e)
                continue
            except Exception as e:
                self.fail(spec, None, e, None)
                continue
            recorder = self.recorder(spec)
            data_state = recorder.resume(run)
            self.start_recording(spec, run, recorder, self.new_record(spec, teacher_info, run.method, run.model))
            if data_state is not None:
                data_states[run.epochs_done] = data_state
            groups.setdefault(run.epochs_done, []).append((spec, run, recorder))
            built.append((spec, run))
            if self.progress is not None:
                self.progress.skip(run.epochs_done, spec.pair)  # trained before this process: counted, not timed
        if built:
            self.log(cohort_line(built))
        for start, members in sorted(groups.items()):
            generator = torch.Generator().manual_seed(seed_for(cohort[0].seed, "data"))
            if start in data_states:
                generator.set_state(data_states[start])
            self.train_group(members, teacher, generator, teacher_test)

    def start_recording(self, spec: RunSpec, run: StudentRun, recorder: RunRecorder, rec: records.RunRecord) -> None:
        """``recorder`` (resumed or not) starts ``run``'s files with ``rec`` and its curves; a resumed run keeps
        its record's start time (hence its W&B run)."""
        old = self.readable_record(spec)
        if recorder.resumed and old is not None and old.started_at is not None:
            rec.started_at = old.started_at
        recorder.start(run, rec, self.open_curves(spec, rec),
                       {"method": spec.method, "pair": spec.pair, "seed": spec.seed,
                        "train": rec.config["train"], **rec.config["method"]})

    def open_curves(self, spec: RunSpec, rec: records.RunRecord) -> Curves:
        """The run's TensorBoard writer and, with ``--wandb``, its W&B one: a resumed run keeps its start time,
        hence its W&B id; a run started over gets a new W&B run."""
        writers: list = [CurveWriter(self.results_dir, spec.run_id)]
        if self.wandb is not None:
            key = f"{self.results_dir.resolve()}|{spec.run_id}|{rec.started_at}"
            writers.append(WandbWriter(self.wandb, spec.run_id, key))
        return Curves(writers)

    def readable_record(self, spec: RunSpec) -> records.RunRecord | None:
        try:
            return records.read_record(records.record_path(self.results_dir, spec.run_id))
        except (OSError, records.RecordError):
            return None

    def train_group(self, members, teacher, generator: torch.Generator,
                    teacher_test: TeacherTest | None = None) -> None:
        specs = {run.run_id: (spec, recorder) for spec, run, recorder in members}
        runs = [run for _, run, _ in members]
        scope = start_host_memory(self.device)

        def on_epoch_end(epoch: int, all_runs: list[StudentRun]) -> None:
            for r in all_runs:
                if r.error is not None or r.epochs_done != epoch + 1:  # failed, or done before this epoch
                    continue
                specs[r.run_id][1].epoch_end(r, generator)
            if self.progress is not None:
                # the last evaluated epoch of each (Recipe.eval_every)
                alive = [r for r in all_runs if evaluated(r.history) and r.error is None]
                if alive:
                    best = max(alive, key=lambda r: evaluated(r.history)[-1]["test_top1"])
                    s0 = specs[runs[0].run_id][0]
                    at = cohort_position([(specs[r.run_id][0].label, position(r, epoch))
                                          for r in all_runs if r.error is None and r.epochs_done == epoch + 1])
                    self.progress.set_postfix_str(f"{s0.pair} s{s0.seed} {at}: best {specs[best.run_id][0].label} "
                                                  f"{evaluated(best.history)[-1]['test_top1']:.1f}%")
                pair = specs[runs[0].run_id][0].pair  # a cohort is one pair's (and seed's)
                self.progress.update(sum(r.epochs_done == epoch + 1 for r in all_runs), pair)
                self.estimate()

        train_cohort(runs, self.student_data, self.device, teacher=teacher, data_generator=generator,
                     on_epoch_end=on_epoch_end, fast=self.fast, teacher_test=teacher_test)
        shared = cohort_cost([r.run_id for r in runs], scope)
        for r in runs:
            spec, recorder = specs[r.run_id]
            recorder.close_curves()
            if r.error is not None:
                self.fail(spec, recorder, r.error, getattr(r, "error_at", None), r)
            else:
                self.finish(recorder, r, shared)

    def finish(self, recorder: RunRecorder, run: StudentRun, shared: dict[str, Any]) -> None:
        """Record ``run`` complete (its record: the one ``recorder`` started); ``shared``: its cohort's cost
        fields (``cohort_cost``)."""
        rec = recorder.record
        hist = [h for h in run.history if "stage" not in h]  # the metrics are the main stage's
        # the best of the evaluated epochs (Recipe.eval_every); the last epoch is always evaluated
        best = max(evaluated(hist), key=lambda h: h["test_top1"])
        train_time = sum(h["time_s"] for h in hist)
        rec.status, rec.history, rec.finished_at = "complete", run.history, now()
        rec.metrics = records.Metrics(
            top1_last=hist[-1]["test_top1"], top5_last=hist[-1]["test_top5"], top1_best=best["test_top1"],
            top5_best=best["test_top5"], best_epoch=best["epoch"], epochs=len(hist),
            # chosen on the validation split, never the test set (the report's tuned table)
            val_top1_last=hist[-1].get("val_top1"))
        # epoch time: the run's own steps plus its share of the cohort's batch preparation and teacher pass
        rec.cost = dataclasses.replace(
            rec.cost, time_s=run.time_s, epoch_time_s=train_time / len(hist),
            images_per_s=len(hist) * self.student_data.num_train / train_time if train_time else None,
            **run_cost(run), **shared)
        if run.teacher_ece is not None:  # the teacher's test ECE (percent), from the cohort's one teacher pass
            rec.teacher_info = {**(rec.teacher_info or {}), "ece": run.teacher_ece}
        recorder.complete(run, len(hist))  # final weights, then the record, then the checkpoints it supersedes

    def bare_record(self, spec: RunSpec, config: dict | None = None, status: str = "failed",
                    teacher_info: dict | None = None, cost: records.Cost | None = None) -> records.RunRecord:
        """The record of a run that never trained (it failed to build, or cannot run its pair); with its
        ``teacher_info`` and ``cost``, ``new_record``'s of a run about to train."""
        return records.RunRecord(
            run_id=spec.run_id, status=status, method=spec.method, teacher=spec.teacher, student=spec.student,
            pair=spec.pair, seed=spec.seed, dataset=self.cfg["dataset"], preset=self.cfg["preset"],
            config=config or {}, env=self.env, teacher_info=teacher_info, cost=cost, started_at=now(),
            variant=spec.label if spec.sweep else None, sweep=dict(spec.sweep) if spec.sweep else None)

    def not_applicable(self, spec: RunSpec, error: PairNotSupported) -> None:
        """The method cannot run this pair, as its reference cannot (FSP: unequal channel counts): a record
        that says why, kept as done (not retried, not a failure); the report shows "n/a" there."""
        message = records.error_line(error)
        self.log(f"{spec.run_id}: not applicable: {message}")
        rec = self.bare_record(spec, {"fingerprint": self.fingerprint_of(spec)}, status="not_applicable")
        rec.finished_at, rec.history = now(), []
        rec.error = records.RunError(type(error).__name__, message)
        self.recorder(spec, trains=False).write(rec)
        if self.progress is not None:
            self.progress.skip(self.run_epochs(spec), spec.pair)  # done without training: counted, not timed

    def fail(self, spec: RunSpec, recorder: RunRecorder | None, error: BaseException, at,
             run: StudentRun | None = None):
        """Record ``spec``'s run failed: its record (``recorder``'s, or a bare one for a run that never
        started) with the error."""
        self.failed.append(spec.run_id)
        if self.progress is not None:  # the epochs it will not train: counted, not timed
            self.progress.skip(self.run_epochs(spec) - (run.epochs_done if run is not None else 0), spec.pair)
        message = records.error_line(error)
        self.log(f"{spec.run_id}: FAILED: {type(error).__name__}: {message}")
        if recorder is None:
            recorder = self.recorder(spec, trains=False)
        rec = recorder.record if recorder.record is not None else self.bare_record(spec)
        rec.status, rec.finished_at = "failed", now()
        rec.history = run.history if run is not None else []
        rec.error = records.RunError(type(error).__name__, message, epoch=(at[0] + 1) if at else None,
                                     step=at[1] if at else None,
                                     traceback="".join(traceback.format_exception(error))[-4000:])
        recorder.write(rec)
