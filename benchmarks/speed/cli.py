"""The command line of ``python -m benchmarks.speed``: flags, their ``--quick`` defaults, and the run that
sets every measurement side by side and writes ``<out>/speed.md`` and ``<out>/speed.json``."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from methods import HyperparameterError, UnknownMethodError, method_stages, validate_method

from kdcore.config import ConfigError, OneLineParser, check_given, flags_for, split_list
from kdcore.data import DataError
from benchmarks.grid import environment as grid_environment, pick_device
from kdcore.models import UnknownModelError, create_model
from benchmarks.speed.breakdown import breakdown, breakdown_compare, render_breakdown
from benchmarks.speed.memory import memory_probe, peak_memory
from benchmarks.speed.render import TARGETS, best_of, cpu_model, render, summarise
from benchmarks.speed.repeats import measure, warm_up
from benchmarks.speed.options import SpeedOptions
from benchmarks.speed.setup import SYNTHETIC_TRAIN, Setup, layout, load_data, log

DESCRIPTION = "Training-step speed: ``python -m benchmarks.speed [--quick]``."
DEFAULT_METHODS = "vanilla,kd,fitnet,at,rkd,crd,triplet"
DEFAULT_PAIR = "resnet32x4:resnet8x4"
FULL = {"steps": 20, "warmup": 3, "repeats": 3, "image_size": 32}
QUICK = {"steps": 3, "warmup": 1, "repeats": 3, "image_size": 16}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmarks.speed", description=DESCRIPTION)
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated methods (default {DEFAULT_METHODS})")
    p.add_argument("--pair", default=DEFAULT_PAIR, help=f"teacher:student (default {DEFAULT_PAIR})")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic (default: uint8 noise, 100 classes, made in memory), cifar100, cifar10, digits")
    p.add_argument("--data-root", help="folder holding the dataset (CIFAR: the folder containing cifar-100-python/)")
    p.add_argument("--image-size", type=int, help="image side (default 32, --quick 16); real datasets are resized")
    p.add_argument("--num-train", type=int, help=f"training images (synthetic default {SYNTHETIC_TRAIN}; "
                                                 f"a real dataset is cut to this many)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, help=f"timed steps per measurement (default {FULL['steps']}, "
                                             f"--quick {QUICK['steps']})")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']}, "
                                              f"--quick {QUICK['warmup']})")
    p.add_argument("--repeats", type=int, help=f"interleaved repetitions, median reported (default "
                                               f"{FULL['repeats']}, --quick {QUICK['repeats']})")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="plain loop DataLoader workers (default: 8 on CUDA; on CPU 0 with "
                                               "<= 2 cores, else 2)")
    p.add_argument("--seed", type=int, default=0)
    fast = p.add_argument_group("harness fast paths (kdcore.recipe.FastPaths; auto = on for CUDA, off on CPU; "
                                "the plain loop is always fp32, NCHW, eager)")
    fast.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"], help="autocast dtype")
    fast.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--teacher-inference-mode", default="auto", choices=["auto", "on", "off"])
    fast.add_argument("--compile", action="store_true", help="torch.compile every model's forward (opt-in; "
                                                             "give --warmup enough steps to absorb compile time)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--breakdown", action="store_true",
                   help="then time the parts of the step (data, teacher, student forward, losses, backward, "
                        "optimizer) for every configuration, one more measurement each")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes for a small CPU (16x16 images, 3 timed steps, 1 warm-up); "
                        "flags given explicitly win")
    p.add_argument("--out", default="results/speed", help="output folder (default results/speed)")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one configuration in a subprocess
    return p


def resolve(args: argparse.Namespace) -> SpeedOptions:
    """The parsed flags, resolved once into a frozen ``SpeedOptions``: defaults filled (full or --quick; its
    ``reductions`` say what --quick reduced), the pair split, the methods listed, the sizes checked. ``workers``
    stays None when not given (its default depends on the device, ``_main`` fills it). ``args`` is not changed."""
    check_given(dataset=args.dataset, data_root=args.data_root, out=args.out)  # never the default instead
    flags = flags_for(SpeedOptions, args)
    base = QUICK if args.quick else FULL
    reductions = []
    for key in ("steps", "warmup", "repeats"):
        if flags[key] is None:
            flags[key] = base[key]
            if args.quick and base[key] != FULL[key]:
                reductions.append(f"{key} {FULL[key]} -> {base[key]}")
    size = flags["image_size"]
    if size is None and (args.dataset == "synthetic" or args.quick and args.dataset.startswith("cifar")):
        size = flags["image_size"] = base["image_size"]
        if args.quick and base["image_size"] != FULL["image_size"]:
            reductions.append(f"images {FULL['image_size']}x{FULL['image_size']} -> "
                              f"{size}x{size} (crop padding 4 -> "
                              f"{max(1, round(4 * size / 32))}; every network, the pair included, "
                              f"unchanged)")
    if flags["num_train"] is None and args.dataset == "synthetic":
        flags["num_train"] = SYNTHETIC_TRAIN
    if args.pair.count(":") != 1:
        raise ConfigError(f"--pair must be teacher:student, got {args.pair!r}")
    flags["teacher"], flags["student"] = (s.strip() for s in args.pair.split(":"))
    flags["method_list"] = tuple(split_list("--methods", args.methods, "vanilla,kd"))
    for name, least in (("steps", 1), ("repeats", 1), ("batch_size", 1), ("warmup", 0)):
        if flags[name] < least:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {least}, got {flags[name]}")
    return SpeedOptions(**flags, reductions=tuple(reductions))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except (ConfigError, DataError, UnknownModelError, UnknownMethodError, HyperparameterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    options = resolve(build_parser().parse_args(argv))
    for m in options.method_list:
        stages = method_stages(m, validate_method(m))
        if stages:  # its steps would include the stage's, which the timed loops do not count
            raise ConfigError(f"{m} trains a pre-training stage first ({stages[0].name}, {stages[0].epochs} epochs), "
                              f"which the speed benchmark does not time: leave it out of --methods")
    for name in (options.teacher, options.student):
        create_model(name)  # raises UnknownModelError listing the known models
    device = pick_device(options.device)
    if options.workers is None:
        # CUDA: RepDistiller's 8. CPU: workers share the cores with the training threads; on 2 cores the
        # plain loop is fastest with none (measured: 0 beats 1 and 2 workers for every method tried)
        options = options.derive(workers=8 if device.type == "cuda" else (0 if (os.cpu_count() or 1) <= 2 else 2))
    if options.memory_probe:
        print(json.dumps(memory_probe(options, options.memory_probe)))
        return 0
    t_start = time.perf_counter()
    data = load_data(options)
    if (options.warmup + options.steps) * options.batch_size > data.num_train:
        raise ConfigError(f"{options.warmup + options.steps} steps of {options.batch_size} need more than "
                          f"the {data.num_train} training images")
    c, h, w = data.input_shape
    options = options.derive(data_desc=f"{options.dataset} {h}x{w} uint8 ({data.num_train} train images, "
                                        f"{data.num_classes} classes, crop pad {data.pad}, "
                                        f"flip {'yes' if data.flip else 'no'})")
    env = {**grid_environment(device), "cpu_model": cpu_model()}
    setup = Setup(options, data, device)
    fast = {"device": str(device), **setup.fast}  # what the harness ran with (the plain loop: always fp32 eager)
    x = next(data.epoch_batches(options.batch_size, torch.Generator().manual_seed(0), device))[0]
    cl = bool(fast.get("channels_last"))
    layouts = {"harness": "channels_last (fast path)" if cl else f"{layout(x)} (as its on-device crop leaves them)",
               "harness_weights": "channels_last" if cl else "NCHW",
               "plain": "contiguous NCHW (ToTensor + default collate)", "plain_weights": "NCHW"}
    log(f"speed: {options.teacher} -> {options.student}, {options.data_desc}, methods "
        f"{', '.join(options.method_list)}, {options.repeats} x ({options.warmup} + {options.steps} steps of "
        f"{options.batch_size}) on {device}")

    phases = {"setup": time.perf_counter() - t_start}
    t_phase = time.perf_counter()
    warm_up(setup)
    phases["process_warmup"] = time.perf_counter() - t_phase
    t_phase = time.perf_counter()
    raw = measure(setup)
    phases["measurements"] = time.perf_counter() - t_phase
    t_phase = time.perf_counter()
    memory = peak_memory(options, argv, device, raw["cuda_peak_mb"])
    phases["memory"] = time.perf_counter() - t_phase
    summary = summarise(options, raw)
    best = summarise(options, best_of(raw))
    parts = None
    if options.breakdown:
        t_phase = time.perf_counter()
        log("breakdown: one more measurement of each configuration, its parts timed")
        parts = breakdown(setup, options.warmup, options.steps)
        phases["breakdown"] = time.perf_counter() - t_phase
    wall_s = time.perf_counter() - t_start
    text = render(options, summary, memory, env, list(options.reductions), fast, layouts, wall_s)
    if parts is not None:
        text += "\n" + render_breakdown(parts)
    print(text, end="")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(text)
    record: dict[str, Any] = {
        "config": {k: getattr(options, k) for k in ("methods", "pair", "teacher", "student", "dataset", "image_size",
                                                  "num_train", "batch_size", "steps", "warmup", "repeats",
                                                  "workers", "seed", "quick")},
        "data": data.describe(),
        "quick_reductions": list(options.reductions),
        "fast_paths": fast,
        "input_layouts": layouts,
        "throughput_definition": "images/s = (training images stepped, per student) x (number of students) "
                                 "/ wall time",
        "environment": {**env, "device": str(device)},
        "results": summary,
        "results_best_of_repeats": best,  # the same with the fastest repeat of each time (less load noise)
        "breakdown_ms_per_step": parts,
        "breakdown_cohort_vs_solo": breakdown_compare(parts) if parts is not None else None,
        "targets": TARGETS,
        "memory": memory,
        "raw_seconds": {"plain": raw["plain"], "solo": raw["solo"], "cohort": raw["cohort"],
                        "shared": raw["shared"]},
        "plain_data_needs": raw["plain_needs"],
        "wall_s": wall_s,
        "phases_s": phases,
    }
    (out / "speed.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    log(f"wrote {out / 'speed.md'} and {out / 'speed.json'} ({wall_s:.0f} s)")
    return 0
