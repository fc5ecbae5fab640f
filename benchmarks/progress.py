"""The grid's progress display: a tqdm bar on a terminal, plain lines elsewhere (CI, a log file).

Log lines go through ``log`` so a bar stays one line (tqdm clears the bar, prints the line with its newline
on the bar's own stream, then redraws the bar below it); off a terminal, carriage-return redraws would
fill a log with fragments, so ``LineProgress`` prints one complete line at most every ``interval``
seconds (and at the end), with the elapsed time and an estimate of what is left.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm.auto import tqdm


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    def __init__(self, total: int, unit: str, file: TextIO, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.unit, self.file, self.interval, self.clock = total, unit, file, interval, clock
        self.n = 0
        self.postfix = ""
        self.start = clock()
        self.last_print = self.start
        self.printed: str | None = None

    def line(self) -> str:
        elapsed = self.clock() - self.start
        text = f"progress: {self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f}%), " \
               f"{hms(elapsed)} elapsed"
        if 0 < self.n < self.total:
            text += f", about {hms(elapsed / self.n * (self.total - self.n))} left"
        return text + (f"; {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last_print >= self.interval:
            self.print_line()

    def print_line(self) -> None:
        self.last_print = self.clock()
        self.printed = self.line()
        self.write(self.printed)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, msg: str, file: TextIO | None = None) -> None:
        print(msg, file=file or self.file, flush=True)

    def log(self, msg: str) -> None:
        """One whole log line on the progress's stream."""
        self.write(msg)

    def close(self) -> None:
        if self.printed is None or not self.printed.startswith(f"progress: {self.n}/"):
            self.print_line()  # the final count, unless the last line already said it


class BarProgress(tqdm):
    """tqdm's bar, with ``log``: the line goes to the bar's own stream, so tqdm clears the bar first and
    redraws it after (``tqdm.write`` to another stream would leave the bar's fragment on the line)."""

    def log(self, msg: str) -> None:
        self.write(msg, file=self.fp)


def make_progress(total: int, unit: str, file: TextIO | None = None):
    """A tqdm bar when ``file`` (default: the current stderr) is a terminal, else ``LineProgress``."""
    file = file or sys.stderr
    if file.isatty():
        return BarProgress(total=total, unit=unit, desc="students", dynamic_ncols=True, file=file)
    return LineProgress(total, unit, file)
