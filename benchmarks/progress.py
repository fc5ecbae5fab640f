"""The grid's progress display: a tqdm bar on a terminal, plain lines elsewhere (CI, a log file).

Log lines go through ``log`` so a bar stays one line (tqdm clears the bar, prints the line with its newline
on the bar's own stream, then redraws the bar below it); off a terminal, carriage-return redraws would
fill a log with fragments, so ``LineProgress`` prints one complete line at most every ``interval``
seconds (and at the end), with the elapsed time and an estimate of what is left.

The estimate (``Remaining``) comes from timed work only: the students' pace from the student epochs this
process trained (a resumed run's epochs, a run that cannot run its pair, count as done but took no time),
over the time spent outside the teachers, kept per group (the grid's pairs: a resnet8 epoch may cost three of
a smaller student's) and the whole grid's pace for a group not timed yet; the teachers still to train at the
pace of one this grid trained, or "estimating..." until one is.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, TextIO


from tqdm.auto import tqdm

from kdcore.text import plural


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Remaining:
    """What is left of a grid's students (``total`` run-epochs) and of its teachers still to train
    (``teachers``: arch -> epochs), and how long it should take.

    ``trained(n)``: n student epochs trained now; ``counted(n)``: n counted as done without training (resumed,
    not applicable, failed); ``teacher_begins()`` / ``teacher_ready(arch, info)`` around getting a teacher
    (``teachers.get_teacher``), whose time is not the students'.
    """

    def __init__(self, total: int, teachers: Mapping[str, int] | None = None,
                 clock: Callable[[], float] = time.monotonic, groups: Mapping[str, int] | None = None):
        self.total, self.clock = total, clock
        self.start = clock()
        self.done = 0  # student epochs done, trained or not
        self.timed = 0  # student epochs trained by this process
        self.student_s = 0.0  # the time they took: elapsed at the last one, less the teachers' time
        # per group (the grid's pairs: group -> its student epochs): epochs done, epochs timed, their time
        self.groups = dict(groups or {})
        self.group_done: dict[str, int] = {}
        self.group_timed: dict[str, int] = {}
        self.group_s: dict[str, float] = {}
        self.teachers_left = dict(teachers or {})
        self.teacher_s = 0.0  # time spent getting teachers (trained, waited for or loaded)
        self.teacher_epoch_s: list[float] = []  # seconds per epoch of each teacher trained (train and eval)
        self.teacher_since: float | None = None

    def trained(self, n: int, group: str | None = None) -> None:
        """``n`` student epochs of ``group`` trained now: the student time since the last ones is theirs."""
        self.done += n
        self.timed += n
        before, self.student_s = self.student_s, self.clock() - self.start - self.teacher_s
        if group is not None:
            self.group_done[group] = self.group_done.get(group, 0) + n
            self.group_timed[group] = self.group_timed.get(group, 0) + n
            self.group_s[group] = self.group_s.get(group, 0.0) + self.student_s - before

    def counted(self, n: int, group: str | None = None) -> None:
        self.done += n
        if group is not None:
            self.group_done[group] = self.group_done.get(group, 0) + n

    def teacher_begins(self) -> None:
        self.teacher_since = self.clock()

    def teacher_ready(self, arch: str, info: Mapping[str, Any]) -> None:
        """``arch``'s teacher is there (``info``: ``get_teacher``'s); one trained now sets the teachers' pace."""
        if self.teacher_since is not None:
            self.teacher_s += self.clock() - self.teacher_since
            self.teacher_since = None
        self.teachers_left.pop(arch, None)
        if info.get("source") == "trained" and info.get("epochs") and info.get("time_s") is not None:
            self.teacher_epoch_s.append(info["time_s"] / info["epochs"])

    def students_s(self) -> float | None:
        """Seconds for the student epochs left, each group's at its own pace (the whole grid's until one of the
        group's was timed); None before any was."""
        if not self.timed:
            return None
        pace = self.student_s / self.timed
        if not self.groups:
            return pace * (self.total - self.done)
        left = 0.0
        for group, total in self.groups.items():
            timed = self.group_timed.get(group, 0)
            left += (total - self.group_done.get(group, 0)) * (self.group_s[group] / timed if timed else pace)
        return left

    def teachers_s(self) -> float | None:
        """Seconds for the teachers left, at the mean pace per epoch of those trained; None before one was."""
        if not self.teacher_epoch_s:
            return None
        return sum(self.teachers_left.values()) * sum(self.teacher_epoch_s) / len(self.teacher_epoch_s)

    def text(self) -> str | None:
        """``about 0:30 left``; ``about 5:30 left (students 0:30, 1 teacher to train 5:00)``;
        ``students: estimating...; 1 teacher to train: about 5:00``; None when nothing is left."""
        if self.done >= self.total:  # every student epoch done: no teacher is needed either
            return None
        parts = [("students", self.students_s())]
        if self.teachers_left:
            parts.append((f"{plural(len(self.teachers_left), 'teacher')} to train", self.teachers_s()))
        known = [s for _, s in parts if s is not None]
        if len(known) == len(parts):
            text = f"about {hms(sum(known))} left"
            return text + (f" ({', '.join(f'{name} {hms(s)}' for name, s in parts)})" if len(parts) > 1 else "")
        out = []
        for name, s in parts:
            guess = "estimating..." if s is None else f"about {hms(s)}" + (" left" if name == "students" else "")
            out.append(f"{name}: {guess}")
        return "; ".join(out)


class Counting:
    """What both displays count: ``update(n)``, n student epochs trained (timed); ``skip(n)``, n done without
    training (a resumed run's, a run that cannot run its pair, a failed run's rest): counted, not timed."""

    remaining: Remaining

    def update(self, n: int = 1, group: str | None = None) -> None:
        self.remaining.trained(n, group)
        self.advance(n)

    def skip(self, n: int, group: str | None = None) -> None:
        if n:  # a run that starts afresh: nothing to count, nothing to show
            self.remaining.counted(n, group)
            self.advance(n)

    def advance(self, n: int) -> None:
        raise NotImplementedError


class LineProgress(Counting):
    def __init__(self, total: int, unit: str, file: TextIO, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, teachers: Mapping[str, int] | None = None,
                 groups: Mapping[str, int] | None = None):
        self.total, self.unit, self.file, self.interval, self.clock = total, unit, file, interval, clock
        self.remaining = Remaining(total, teachers, clock, groups)
        self.n = 0
        self.postfix = ""
        self.start = clock()
        self.last_print = self.start
        self.printed: str | None = None  # the last line printed
        self.printed_left = False  # whether it gave an estimate

    def line(self, final: bool = False) -> str:
        """The progress line; ``final``: the grid is over, so no estimate (whatever was not done never will be)."""
        text = f"progress: {self.n}/{plural(self.total, self.unit)} ({100 * self.n / max(self.total, 1):.0f}%), " \
               f"{hms(self.clock() - self.start)} elapsed"
        left = None if final else self.remaining.text()
        return text + (f", {left}" if left else "") + (f"; {self.postfix}" if self.postfix else "")

    def advance(self, n: int) -> None:
        self.n += n
        if self.clock() - self.last_print >= self.interval:
            self.print_line()

    def print_line(self, final: bool = False) -> None:
        self.last_print = self.clock()
        self.printed = self.line(final)
        self.printed_left = not final and self.remaining.text() is not None
        self.write(self.printed)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, msg: str, file: TextIO | None = None) -> None:
        print(msg, file=file or self.file, flush=True)

    def log(self, msg: str) -> None:
        """One whole log line on the progress's stream."""
        self.write(msg)

    def close(self) -> None:
        # the final count, without an estimate, unless the last line already said just that
        if self.printed is None or not self.printed.startswith(f"progress: {self.n}/") or self.printed_left:
            self.print_line(final=True)


class BarProgress(Counting, tqdm):
    """tqdm's bar, with ``log``: the line goes to the bar's own stream, so tqdm clears the bar first and
    redraws it after (``tqdm.write`` to another stream would leave the bar's fragment on the line).

    The bar shows ``Remaining``'s estimate, not tqdm's: tqdm's rate counts a resumed run's epochs and the
    time a teacher trained."""

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, *args, teachers: Mapping[str, int] | None = None, groups: Mapping[str, int] | None = None,
                 **kwargs):
        super().__init__(*args, bar_format=self.BAR_FORMAT, **kwargs)
        self.remaining = Remaining(self.total, teachers, groups=groups)
        self.best = ""
        tqdm.set_postfix_str(self, self.remaining.text() or "")  # "estimating..." until a student epoch is timed

    def advance(self, n: int) -> None:
        tqdm.set_postfix_str(self, "; ".join(t for t in (self.remaining.text(), self.best) if t), refresh=False)
        tqdm.update(self, n)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.best = s
        tqdm.set_postfix_str(self, "; ".join(t for t in (self.remaining.text(), s) if t), refresh=refresh)

    def close(self) -> None:
        tqdm.set_postfix_str(self, getattr(self, "best", ""), refresh=False)  # the grid is over: no estimate
        tqdm.close(self)

    def log(self, msg: str) -> None:
        self.write(msg, file=self.fp)


def make_progress(total: int, unit: str, file: TextIO | None = None, teachers: Mapping[str, int] | None = None,
                  groups: Mapping[str, int] | None = None):
    """A tqdm bar when ``file`` (default: the current stderr) is a terminal, else ``LineProgress``;
    ``teachers``: the teachers still to train (arch -> epochs), ``groups``: the epochs of each group timed apart
    (the grid's pairs), for the estimate."""
    file = file or sys.stderr
    if file.isatty():
        return BarProgress(total=total, unit=unit, desc="students", dynamic_ncols=True, file=file, teachers=teachers,
                           groups=groups)
    return LineProgress(total, unit, file, teachers=teachers, groups=groups)
