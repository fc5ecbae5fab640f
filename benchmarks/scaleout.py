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

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reports import build_report

from .config import ConfigError
from .grid import cohorts as grid_cohorts

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


def launch(cfg: dict[str, Any], args: argparse.Namespace, argv: list[str], specs) -> int:
    if args.shard:
        raise ConfigError("--shard selects one machine's part; it cannot be combined with --workers, --gpus "
                          "or --executor, which make the shards themselves")
    cohorts = len(grid_cohorts(specs))
    if args.executor:
        count = args.shards or cohorts
        return submit(cfg, args, argv, max(1, min(count, cohorts)))
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else []
    count = len(gpus) if gpus else args.workers
    if count < 1:
        raise ConfigError("--workers must be >= 1")
    return run_local_workers(cfg, args, argv, count, gpus)


def _report(cfg: dict[str, Any], args: argparse.Namespace) -> None:
    if args.no_report:
        return
    path = build_report(Path(args.results) / cfg["grid"])
    print(f"report: {path}", file=sys.stderr)


def run_local_workers(cfg, args, argv: list[str], count: int, gpus: list[str]) -> int:
    threads = max(1, (os.cpu_count() or 1) // count)
    procs = []
    for i in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        else:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        cmd = [sys.executable, "-m", "benchmarks.run", *worker_argv(argv, i, count)]
        print(f"worker {i}/{count}{' on GPU ' + gpus[i] if gpus else ''}: {' '.join(cmd[2:])}", file=sys.stderr)
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    _report(cfg, args)
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


def submit(cfg, args, argv: list[str], count: int) -> int:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor needs submitit: pip install 'kdbench[slurm]' (or pip install submitit)") \
            from None
    folder = Path(args.results) / cfg["grid"] / "jobs"
    if args.executor == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params = {"timeout_min": args.slurm_time, "gpus_per_node": args.slurm_gpus,
                  "cpus_per_task": args.slurm_cpus, "slurm_array_parallelism": args.slurm_parallelism,
                  "name": f"kdbench-{cfg['grid']}"}
        if args.slurm_partition:
            params["slurm_partition"] = args.slurm_partition
        executor.update_parameters(**params)
    else:
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=args.slurm_time)
    task = ShardTask(argv, count, os.getcwd())
    jobs = executor.map_array(task, list(range(count)))
    print(f"submitted {len(jobs)} task(s) ({args.executor}): {', '.join(j.job_id for j in jobs)}; "
          f"logs in {folder}", file=sys.stderr)
    if not args.wait:
        print(f"when they finish: python -m reports {Path(args.results) / cfg['grid']}", file=sys.stderr)
        return 0
    codes = []
    for job in jobs:
        try:
            codes.append(job.result())
        except Exception as e:  # a task that crashed outright (not a failed run, which is recorded)
            print(f"task {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr)
            codes.append(1)
    _report(cfg, args)
    return 1 if any(codes) else 0
