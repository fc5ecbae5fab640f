"""``SpeedOptions``: the speed benchmark's command line, resolved once (``cli.resolve``) and frozen; every
measurement reads it, nothing below the CLI reads an ``argparse.Namespace``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedOptions:
    """The flags of ``python -m benchmarks.speed`` with their defaults filled (full or ``--quick``), plus what
    the CLI derives from them: ``teacher``/``student`` (from ``pair``), ``method_list`` (from ``methods``),
    ``reductions`` (what ``--quick`` reduced), ``workers`` (its device-dependent default) and ``data_desc``
    (the loaded data, as the table names it)."""

    methods: str
    pair: str
    teacher: str
    student: str
    method_list: tuple[str, ...]
    dataset: str = "synthetic"
    data_root: str | None = None
    image_size: int | None = None
    num_train: int | None = None
    batch_size: int = 64
    steps: int = 20
    warmup: int = 3
    repeats: int = 3
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    amp: str = "auto"
    channels_last: str = "auto"
    teacher_inference_mode: str = "auto"
    compile: bool = False
    no_memory: bool = False
    breakdown: bool = False
    quick: bool = False
    out: str = "results/speed"
    memory_probe: str | None = None
    reductions: tuple[str, ...] = ()
    data_desc: str = ""

    def derive(self, **changes) -> "SpeedOptions":
        """A new SpeedOptions with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
