"""Spreading a grid over processes, GPUs and Slurm nodes.

Every worker is the same runner on the same results directory with a
``--shard i/n`` of its own: shards are whole (pair, seed) cohorts dealt
deterministically, run locks keep two workers off the same run, teacher locks
make one worker train a teacher the others then reuse, and runs resume from
their checkpoints, so a requeued or restarted worker simply carries on.

* ``--workers N`` / ``--gpus 0,1,..``: N local processes (one per GPU, with
  ``CUDA_VISIBLE_DEVICES`` set; on CPU the cores are split between them).
* ``--executor slurm``: a submitit job array, one task per shard; tasks that
  are preempted or time out are requeued by submitit and resume.
  ``--executor local`` runs the same tasks as local subprocesses (tests).
The report is written once, by the launcher, after the workers end.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from methods import CATALOGUE
from reports import build_report

from kdcore.config import ConfigError, flags_for
from kdcore.cpus import choose_threads
from benchmarks.grid import cohorts as grid_cohorts

# flags that configure the launch itself; a worker gets the rest of the command line
_LAUNCH_VALUE_FLAGS = {"--workers", "--gpus", "--executor", "--shards", "--shard", "--slurm-partition",
                       "--slurm-time", "--slurm-gpus", "--slurm-cpus", "--slurm-parallelism"}
_LAUNCH_BOOL_FLAGS = {"--wait", "--no-report"}


def worker_argv(argv: list[str], index: int, count: int) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in _LAUNCH_VALUE_FLAGS:
            skip = "=" not in token
            continue
        if name in _LAUNCH_BOOL_FLAGS:
            continue
        out.append(token)
    return out + ["--shard", f"{index}/{count}", "--no-report", "--quiet"]


@dataclass(frozen=True)
class LaunchOptions:
    """How a grid is spread (``--workers``, ``--gpus``, ``--executor`` and the Slurm flags), resolved from the
    command line once (``from_namespace``); frozen: nothing below the CLI reads an ``argparse.Namespace``."""

    results: str = "results"
    shard: str | None = None
    workers: int = 1
    gpus: str | None = None
    executor: str | None = None
    shards: int | None = None
    slurm_partition: str | None = None
    slurm_time: int = 24 * 60
    slurm_gpus: int = 1
    slurm_cpus: int = 8
    slurm_parallelism: int = 64
    wait: bool = False
    no_report: bool = False
    threads: int | None = None

    @classmethod
    def from_namespace(cls, args: Any) -> "LaunchOptions":
        """The fields of the CLI's parsed arguments (``benchmarks.run.build_parser``) this type names."""
        return cls(**flags_for(cls, args))


def launch(cfg: Mapping[str, Any], options: LaunchOptions, argv: list[str], specs) -> int:
    """Run the grid's shards as local workers or submitted tasks. ``cfg``: the runner's config (its ``grid``
    names the folder); ``options``: the launch flags; ``argv``: the command line, which the workers rerun."""
    if not isinstance(options, LaunchOptions):
        raise TypeError("launch takes LaunchOptions (LaunchOptions.from_namespace(args) in the CLI)")
    if options.shard:
        raise ConfigError("--shard selects one machine's part; it cannot be combined with --workers, --gpus "
                          "or --executor, which make the shards themselves")
    cohorts = len(grid_cohorts(specs))
    if options.executor:
        count = options.shards or cohorts
        return submit(cfg, options, argv, max(1, min(count, cohorts)))
    gpus = [g.strip() for g in options.gpus.split(",") if g.strip()] if options.gpus else []
    count = len(gpus) if gpus else options.workers
    if count < 1:
        raise ConfigError("--workers must be >= 1")
    return run_local_workers(cfg, options, argv, count, gpus)


def _report(cfg: Mapping[str, Any], options: LaunchOptions) -> None:
    if options.no_report:
        return
    path = build_report(Path(options.results) / cfg["grid"], catalogue=CATALOGUE)
    print(f"report: {path}", file=sys.stderr)


def run_local_workers(cfg: Mapping[str, Any], options: LaunchOptions, argv: list[str], count: int,
                      gpus: list[str]) -> int:
    threads = choose_threads(options.threads, count)  # the workers' share; each keeps it (OMP_NUM_THREADS)
    if not gpus:
        print(f"workers: {count}, {threads.describe()} each", file=sys.stderr)
    procs = []
    for i in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        else:
            env.setdefault("OMP_NUM_THREADS", str(threads.threads))
        cmd = [sys.executable, "-m", "benchmarks.run", *worker_argv(argv, i, count)]
        print(f"worker {i}/{count}{' on GPU ' + gpus[i] if gpus else ''}: {' '.join(cmd[2:])}", file=sys.stderr)
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    _report(cfg, options)
    if any(c == 2 for c in codes):
        return 2
    return 1 if any(codes) else 0


class ShardTask:
    """One array task: the runner on one shard. submitit pickles it; ``checkpoint`` makes it requeueable."""

    def __init__(self, argv: list[str], count: int, cwd: str):
        self.argv, self.count, self.cwd = argv, count, cwd

    def __call__(self, index: int) -> int:
        # the shard runs as local workers do: the runner's command line in a child process
        return subprocess.call([sys.executable, "-m", "benchmarks.run", *worker_argv(self.argv, index, self.count)],
                               cwd=self.cwd)

    def checkpoint(self, index: int):
        # preempted or out of time: requeue the same shard; its runs resume from their checkpoints
        import submitit

        return submitit.helpers.DelayedSubmission(ShardTask(self.argv, self.count, self.cwd), index)


def submit(cfg: Mapping[str, Any], options: LaunchOptions, argv: list[str], count: int) -> int:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor needs submitit: pip install 'kdbench[slurm]' (or pip install submitit)") \
            from None
    folder = Path(options.results) / cfg["grid"] / "jobs"
    if options.executor == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params = {"timeout_min": options.slurm_time, "gpus_per_node": options.slurm_gpus,
                  "cpus_per_task": options.slurm_cpus, "slurm_array_parallelism": options.slurm_parallelism,
                  "name": f"kdbench-{cfg['grid']}"}
        if options.slurm_partition:
            params["slurm_partition"] = options.slurm_partition
        executor.update_parameters(**params)
    else:
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=options.slurm_time)
    task = ShardTask(argv, count, os.getcwd())
    jobs = executor.map_array(task, list(range(count)))
    print(f"submitted {len(jobs)} task(s) ({options.executor}): {', '.join(j.job_id for j in jobs)}; "
          f"logs in {folder}", file=sys.stderr)
    if not options.wait:
        print(f"when they finish: python -m reports {Path(options.results) / cfg['grid']}", file=sys.stderr)
        return 0
    codes = []
    for job in jobs:
        try:
            codes.append(job.result())
        except Exception as e:  # a task that crashed outright (not a failed run, which is recorded)
            print(f"task {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr)
            codes.append(1)
    _report(cfg, options)
    return 1 if any(codes) else 0
