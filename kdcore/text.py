"""Words shared by everything that prints or writes for people (the runner's terminal lines, the reports)."""
from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``0 student epochs``: a count and its noun, in the plural unless the count is 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
