"""How many CPU threads a kdbench process computes with: the CPUs it may use, less those busy with other work.

Why: PyTorch starts one intra-op thread per core it sees. Two processes doing so on one 2-core machine make
each parallel op wait for a thread the other process has descheduled: a new user's digits teacher took 234 s
instead of 8 s beside a second job (issue #31), and two copies of a small digits grid measured here took
118 s each with 2 threads against 33 s with 1 (alone: 18 s and 20 s). So by default (``auto``) a process:

- counts the CPUs it may use: its affinity mask (``taskset``, Slurm's ``--cpus-per-task``), capped by its
  cgroup CPU quota (containers, ``docker --cpus``), rounded down;
- divides them between the local workers it is one of (``--workers N``);
- leaves out the CPUs that other processes keep busy: sampled from ``/proc/stat`` over a fifth of a second
  before it starts, then followed while it trains (``LoadFollower``: once an epoch, from the ticks other
  processes used since the previous look; a look less than a tenth of a second after the previous one waits for
  the next), so a job that starts or ends beside it, or a second copy of the grid started at the same moment,
  changes the count within an epoch.

``--threads N`` or ``OMP_NUM_THREADS`` fix the number instead. The thread count changes the order of float
sums, so bitwise reproduction needs the same count: every record says how many threads trained it and why.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_SECONDS = 0.2


def affinity_cpus() -> list[int]:
    """The CPU ids this process may run on (all of the machine's where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup and its ancestors, in CPUs (``cpu.max`` of cgroup v2,
    ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1); None without a quota or where none can be read."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            folders = [root / path.lstrip("/")]
            read = _v2_limit
        elif "cpu" in controllers.split(","):
            folders = [root / controllers / path.lstrip("/"), root / "cpu" / path.lstrip("/")]
            read = _v1_limit
        else:
            continue
        for folder in folders:
            for level in (folder, *folder.parents):  # a parent's quota caps its children's
                if level == root.parent:
                    break
                limit = read(level)
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def usable_cpus(cpus: list[int] | None = None, limit: float | None = None) -> int:
    """CPUs this process may keep busy: its affinity mask, capped by the cgroup quota (rounded down, >= 1)."""
    count = len(affinity_cpus() if cpus is None else cpus)
    if limit is not None:
        count = min(count, math.floor(limit))
    return max(1, count)


def cpu_times(stat: Path = Path("/proc/stat")) -> dict[int, tuple[int, int]]:
    """{cpu id: (busy jiffies, total jiffies)} from ``/proc/stat`` (empty where it cannot be read)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


LoadSample = tuple[dict[int, tuple[int, int]], "int | None"]  # (cpu_times(), own_ticks()) at one moment
# a look over less than this many ticks of one CPU (a tenth of a second at Linux's USER_HZ of 100) is noise: a
# cohort's first epoch looks right after the grid did, and one tick more or less flipped the count
MIN_LOOK_TICKS = 10


def elapsed_ticks(cpus: list[int], before: LoadSample, after: LoadSample) -> float:
    """Ticks one of ``cpus`` counted between two samples (0 where a counter is unreadable)."""
    if not cpus or any(c not in before[0] or c not in after[0] for c in cpus):
        return 0.0
    return sum(after[0][c][1] - before[0][c][1] for c in cpus) / len(cpus)


def others_busy(cpus: list[int], before: LoadSample, after: LoadSample) -> float | None:
    """How many of ``cpus`` processes other than this one kept busy between two samples: the CPUs' busy ticks
    less this process's own CPU time, over the ticks one CPU counted. None where a counter is unreadable or no
    tick passed."""
    (cpu_before, own_before), (cpu_after, own_after) = before, after
    ticks = elapsed_ticks(cpus, before, after)
    if own_before is None or own_after is None or ticks <= 0:
        return None
    busy = sum(cpu_after[c][0] - cpu_before[c][0] for c in cpus) - (own_after - own_before)
    return max(0.0, busy / ticks)


def busy_cpus(cpus: list[int], seconds: float = SAMPLE_SECONDS,
              sample: Callable[[], dict[int, tuple[int, int]]] = cpu_times,
              sleep: Callable[[float], None] = time.sleep,
              own: Callable[[], int | None] = lambda: 0) -> float | None:
    """How many of ``cpus`` other processes keep busy, sampled over ``seconds`` while this process sleeps
    (``others_busy``; ``own``: this process's ticks, ~0 while it sleeps). None where the counters cannot be read
    (not Linux)."""
    before = (sample(), own())
    sleep(seconds)
    return others_busy(cpus, before, (sample(), own()))


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count a process uses, and why (``source``: ``--threads``, ``OMP_NUM_THREADS`` or
    ``auto``; for ``auto``, the usable CPUs, this process's share of them and the CPUs found busy)."""

    threads: int
    source: str
    usable: int
    share: int
    busy: float | None = None

    def describe(self) -> str:
        if self.source != "auto":
            return f"threads: {self.threads} ({self.source})"
        cpus = f"{self.usable} usable CPU{'s' if self.usable != 1 else ''}"
        if self.share != self.usable:
            cpus += f", {self.share} for this worker"
        busy = "" if self.busy is None else f", {self.busy:.1f} busy with other work"
        return f"threads: {self.threads} (auto: {cpus}{busy}; --threads N fixes it)"

    def record(self) -> dict[str, object]:
        """What a run record keeps of it (``env``)."""
        return {"threads": self.threads, "threads_source": self.source, "usable_cpus": self.usable,
                "busy_cpus": None if self.busy is None else round(self.busy, 2)}


def choose_threads(requested: int | None = None, workers: int = 1, environ: Mapping[str, str] | None = None,
                   cpus: list[int] | None = None, usable: int | None = None,
                   busy: Callable[[list[int]], float | None] | None = None) -> ThreadChoice:
    """``--threads`` if given, else ``OMP_NUM_THREADS`` if set, else ``auto`` (see the module's docstring).
    ``cpus`` (the affinity mask), ``usable`` and ``busy`` default to this machine's (tests pass their own)."""
    environ = os.environ if environ is None else environ
    cpus = affinity_cpus() if cpus is None else cpus
    usable = usable_cpus(cpus, cgroup_cpu_limit()) if usable is None else usable
    share = max(1, usable // max(1, workers))
    if requested is not None:
        return ThreadChoice(requested, "--threads", usable, share)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS", usable, share)
    found = (busy or busy_cpus)(cpus)
    return ThreadChoice(free_threads(share, usable, found), "auto", usable, share, found)


def free_threads(share: int, usable: int, busy: float | None) -> int:
    """Threads for this process when other work keeps ``busy`` of the ``usable`` CPUs busy: what it leaves, rounded
    half up (0.3 CPU busy is noise; one busy CPU of two leaves one), at most this process's share, at least 1."""
    return max(1, share if busy is None else min(share, math.floor(usable - busy + 0.5)))


def own_ticks(stat: Path = Path("/proc/self/stat")) -> int | None:
    """This process's CPU time so far, all threads, in the clock ticks ``/proc/stat`` counts in (utime + stime)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


class LoadFollower:
    """An ``auto`` thread count that follows the load while the process trains: at each ``look`` (the training loop
    looks once an epoch), the CPUs that other processes kept busy since the previous look decide the count again.

    Why: a sample taken before training cannot see a job that starts later, and two copies of a grid started
    together both find the machine idle, take every CPU and then slow each other tenfold. Looking costs no wait:
    the CPUs' busy ticks (``/proc/stat``) less this process's own CPU time (``/proc/self/stat``) over the interval.
    """

    def __init__(self, choice: ThreadChoice, cpus: list[int], log: Callable[[str], None] | None = None,
                 sample: Callable[[], dict[int, tuple[int, int]]] = cpu_times,
                 own: Callable[[], int | None] = own_ticks):
        self.choice, self.cpus, self.log, self.sample, self.own = choice, cpus, log, sample, own
        self.last: LoadSample = (sample(), own())

    def others_busy(self) -> float | None:
        """CPUs of ``cpus`` kept busy by other processes since the previous look (``others_busy``); None where
        unreadable, or where less than ``MIN_LOOK_TICKS`` passed (the previous sample is then kept, so the next
        look measures the longer interval)."""
        now: LoadSample = (self.sample(), self.own())
        if elapsed_ticks(self.cpus, self.last, now) < MIN_LOOK_TICKS:
            return None
        before, self.last = self.last, now
        return others_busy(self.cpus, before, now)

    def look(self) -> ThreadChoice:
        """Set the thread count for what the load is now; a change is logged. Returns the choice in force."""
        busy = self.others_busy()
        threads = free_threads(self.choice.share, self.choice.usable, busy)
        if busy is not None and threads != self.choice.threads:
            before, self.choice = self.choice.threads, ThreadChoice(threads, "auto", self.choice.usable,
                                                                     self.choice.share, busy)
            torch.set_num_threads(threads)
            if self.log is not None:
                self.log(f"{self.choice.describe()}, was {before}")
        return self.choice


_follower: LoadFollower | None = None


def follow_load(choice: ThreadChoice, log: Callable[[str], None] | None = None) -> ThreadChoice:
    """Use ``choice`` now and, if it is ``auto``, let the training loop follow the load from here (``look``);
    a fixed count (``--threads``, ``OMP_NUM_THREADS``) stays as it is."""
    global _follower
    torch.set_num_threads(choice.threads)
    _follower = LoadFollower(choice, affinity_cpus(), log, cpu_times, own_ticks) if choice.source == "auto" else None
    return choice


def look_at_load() -> ThreadChoice | None:
    """The training loop's look, once an epoch: the choice now in force (None when no ``auto`` count is followed)."""
    return _follower.look() if _follower is not None else None


def stop_following() -> None:
    """The thread count stays as it is from here (a grid's end: later work in the process is not the grid's)."""
    global _follower
    _follower = None
