"""Training-step speed: ``python -m benchmarks.speed [--quick]``.

Measures images/s of the *training step* (data + frozen-teacher forward +
student step(s); no evaluation) for a list of methods on one teacher:student
pair, three ways, side by side in one process:

  plain   a RepDistiller-style loop written here: a torchvision-``datasets``-like
          Dataset over the same uint8 images returning PIL images through
          ``transforms.Compose([RandomCrop(size, padding), RandomHorizontalFlip(),
          ToTensor(), Normalize(...)])``, a ``DataLoader(shuffle=True,
          num_workers=W)``, fp32, one method at a time: per batch the teacher
          forward under no_grad, the student forward, the method's losses
          (kdbench's own method objects, so only the loop and the data differ),
          backward, SGD step. Methods that draw training samples (triplet/pair
          with negatives="dataset") get their negative images from the Dataset,
          as the triplet authors' dataset does; CRD gets the sample index and its
          K contrast indices from the Dataset, as RepDistiller's
          ``CIFAR100InstanceSample`` (``np.random.choice`` per sample).
  solo    kdbench's ``train_cohort``, each method as a cohort of one, with the
          fast paths of ``kdcore.recipe.FastPaths`` (``--amp``,
          ``--channels-last``, ``--teacher-inference-mode``, ``--compile``;
          ``auto``: on for CUDA, off on CPU), passed by ``harness_kwargs``.
  cohort  kdbench's ``train_cohort``, all methods in one cohort (one batch
          stream, one teacher forward per batch).

Every measurement builds fresh models, runs ``--warmup`` steps, then times
``--steps`` steps; measurements are interleaved (each repeat runs plain and
solo of every method and the cohort, as a cycle rotated by a fraction of its
length per repeat, plain/solo swapped on odd repeats) and the median over
``--repeats`` is reported, so load from other processes hits all candidates
alike (the JSON also has the best-of-repeats figures). One untimed pass of the
cohort and the plain loop first absorbs the process's one-off start-up cost.
Each repeat also times the *shared part* alone: drawing and augmenting a batch
and the teacher forward, as ``train_cohort`` does them once per batch for all
its students. From it the output states what sharing alone can give: the solo
runs' total time over that total minus the work a cohort does once instead of
once per run (M - 1 batch draws, U - 1 teacher forwards for the U methods that
use the teacher), i.e. cohort/solo if the cohort's students stepped exactly as
fast as solo ones. ``--breakdown`` then times the parts of the step (data,
teacher forward, prepare, student forward, extra fetch, losses, backward,
optimizer) of every configuration, and sets the cohort against the solo runs
summed, split into the shared parts and the students' own parts: whether the
students step as fast in the cohort as alone. The parts are timed from inside
the loops: ``train_cohort(step_timer=...)`` and the plain loop open
``kdcore.steptimer.StepTimer`` sections around their own calls (CUDA
events on a GPU, ``perf_counter`` on the CPU); nothing is patched.

On CPU the harness's batches come out of its on-device crop channels_last-
strided (model weights stay NCHW); oneDNN convolutions are faster on them, and
the output says so. The plain loop's DataLoader workers default to 0 on <= 2
cores (they would compete with the training threads; measured slower).

Throughput: images/s = (training images stepped, per student) x (number of
students) / wall time. A triplet step counts its batch once, though it also
runs the student on the batch's negatives.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of each solo run and
of the cohort (in process); on CPU the peak RSS increase (Linux VmHWM, reset
through ``/proc/self/clear_refs``) of a subprocess per configuration, over the
process's RSS once the data and the teacher are loaded.

Writes ``<out>/speed.md`` (the printed table) and ``<out>/speed.json`` (raw
per-repeat times, settings, environment).

The package: ``setup`` (data, ``StepLimited``, ``Setup``), ``plain`` (the plain
loop and its Dataset), ``harness`` (``train_cohort`` solo/cohort and the shared
part), ``repeats`` (the interleaved schedule), ``breakdown`` (``--breakdown``),
``memory`` (peak memory, the probe subprocess), ``render`` (summaries and the
table), ``options`` (``SpeedOptions``: the flags resolved once, frozen; what all
of them read), ``cli`` (flags, their resolution and the run; ``__main__`` calls it).
"""
from __future__ import annotations

from kdcore.steptimer import PARTS, StepTimer
from kdcore.recipe import FastPaths
from benchmarks.speed.breakdown import SHARED_PARTS, breakdown, breakdown_compare, render_breakdown
from benchmarks.speed.cli import DEFAULT_METHODS, DEFAULT_PAIR, FULL, QUICK, build_parser, main, resolve
from benchmarks.speed.harness import harness_kwargs, time_harness, time_shared
from benchmarks.speed.memory import measure_cpu_memory, memory_probe
from benchmarks.speed.options import SpeedOptions
from benchmarks.speed.plain import PlainDataset, plain_needs, time_plain
from benchmarks.speed.render import TARGETS, best_of, cohort_bound, render, summarise
from benchmarks.speed.setup import SYNTHETIC_TEST, SYNTHETIC_TRAIN, Setup, StepLimited, load_data, resized, synthetic_data

__all__ = ["PARTS", "StepTimer", "FastPaths", "SHARED_PARTS", "breakdown", "breakdown_compare", "render_breakdown",
           "DEFAULT_METHODS", "DEFAULT_PAIR", "FULL", "QUICK", "build_parser", "main", "resolve", "harness_kwargs",
           "time_harness", "time_shared", "measure_cpu_memory", "memory_probe", "PlainDataset", "plain_needs",
           "time_plain", "TARGETS", "best_of", "cohort_bound", "render", "summarise", "SYNTHETIC_TEST",
           "SYNTHETIC_TRAIN", "Setup", "StepLimited", "load_data", "resized", "synthetic_data", "SpeedOptions"]
