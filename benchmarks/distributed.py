"""One large run (e.g. ImageNet) trained with DistributedDataParallel under torchrun.

    python -m torch.distributed.run --nproc_per_node=8 -m benchmarks.distributed \\
        --method kd --pair resnet34:resnet18 --dataset imagefolder --data-root /data/imagenet \\
        --set train.batch_size=256 --teacher-ckpt resnet34=teacher.pth --results results

Flags are the grid runner's (preset, ``--set``, ``--teacher-ckpt``, ...), for ONE
method, pair and seed (``--method``/``--pair``/``--seed``; seed defaults to the
preset's first). Rank 0 writes the run record where ``benchmarks.run`` would,
with the same fingerprint, so a grid treats it as done. The speed flags
(``--amp``, ``--channels-last``, ...) are the grid runner's too (auto: on for
CUDA). Without torchrun it runs as a world of one.

Equivalence with a single-process run: every rank draws the same global batch
from an identically seeded generator and keeps its contiguous slice (the batch
size must divide by the world size; a last partial batch is split unevenly and
each rank's loss is scaled by world * n_rank / n_global, a last batch smaller
than the world is dropped). The student and the method's trainable modules
form one module wrapped in DDP (its forward runs the student and the losses),
so DDP averages every trainable gradient. BatchNorm uses the global batch:
``nn.SyncBatchNorm`` on CUDA; on CPU, whose kernels SyncBatchNorm lacks,
``CPUSyncBatchNorm`` computes the same statistics with all-reduces. Hence:

  exact (same loss, gradients and updates as one process on the global batch,
  up to float rounding): every method whose loss is a per-sample mean, i.e.
  that does not declare ``couples_batch`` (vanilla, kd, fitnet, at); triplet
  and pair with negatives="dataset" are exact in distribution (every anchor's
  negative is drawn independently; per-rank streams differ from a single
  process's). A method that couples the samples of a batch (its class says so,
  and ``coupling`` says how: rkd's relations, crd's memory banks, in-batch
  negatives) sees only its rank's slice and needs ``--allow-approximate``.

A pre-training stage (ab, ft, fsp) runs the student's forward outside DDP, on the stage's modules; its
gradients are all-reduced and weighted as DDP's, so the stage is exact too.

A second view (MLKD's strong one) is drawn for the whole global batch on every rank, from the
generator a single process uses, and cut to the rank's slice: each sample gets the same view as in
one process.

Image folders: each rank decodes only its slice of every global batch (same
samples per global batch as the shuffled order; augmentation draws differ from
a single-process run). Teacher: rank 0 loads it from the grid runner's cache
(``benchmarks.teachers``) or ``--teacher-ckpt`` and broadcasts the weights; a
missing cache entry is an error (train it with ``benchmarks.run`` first).
"""
from __future__ import annotations

import inspect
import os
import sys
import warnings
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from methods import Batch, method_class, method_needs

from kdcore import checkpoints
from kdcore.config import ConfigError, FrozenConfig, method_overrides, parse_pair, student_recipe, teacher_recipe, thaw
from kdcore.data import load_dataset
from kdcore.data.folder import _Indexed
from kdcore.models import create_model
from kdcore.recorder import RunCheckpoint, RunRecorder
from kdcore.cpus import choose_threads, follow_load
from benchmarks.grid import (GridRunner, RunnerOptions, RunSpec, build_student, cohort_cost, environment, split_data,
                   start_host_memory)
from benchmarks.run import BAD_INPUT, build_parser, check_threads, print_listing, resolve
from benchmarks.teachers import TeacherError, get_teacher, teacher_available, teacher_path
from kdcore.train import StudentRun, compute_terms, freeze, seed_for, train_cohort

# torch >= 2.12 names broadcast_buffers forward_sync_buffers
_NO_BUFFER_SYNC = next(k for k in ("forward_sync_buffers", "broadcast_buffers")
                       if k in inspect.signature(DistributedDataParallel).parameters)
# 1x1 convs' gradients come with other strides than DDP's buckets: a copy per step, not an error
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

def approximation(resolved: dict[str, dict]) -> str | None:
    """Why a method (``{part: hparams}``) is not exact under DDP, or None when it is: what each part that
    couples the samples of a batch declares (``Distiller.coupling``); each rank sees only its slice."""
    why = [f"{part}: {note}" for part, hp in resolved.items() if (note := method_class(part).coupling(hp))]
    return "; ".join(why) or None


def check_batch_size(batch_size: int, world: int) -> None:
    if batch_size % world:
        near = batch_size // world * world or world
        raise ConfigError(f"train.batch_size={batch_size} (the global batch) is not divisible by the {world} "
                          f"processes; use a multiple of {world}, e.g. --set train.batch_size={near}")


# --- global-batch BatchNorm on CPU -----------------------------------------------
class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all-reduced gradient (every rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``nn.SyncBatchNorm``'s maths for CPU tensors (gloo): training statistics of the global batch."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        in_dtype = x.dtype
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 under amp
        sums = _SumOverRanks.apply(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n  # two passes, as accurate as one process
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        return out.to(in_dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with global-batch BatchNorm: SyncBatchNorm on CUDA; on CPU, plain BatchNorm{1,2,3}d become
    CPUSyncBatchNorm (other BN subclasses, e.g. timm's BatchNormAct2d, keep per-rank statistics there)."""
    if device.type == "cuda":
        try:  # timm's converter also handles its BatchNormAct layers (torch's would drop their activation)
            from timm.layers import convert_sync_batchnorm
        except ImportError:
            convert_sync_batchnorm = nn.SyncBatchNorm.convert_sync_batchnorm
        return convert_sync_batchnorm(module)
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        bn = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats).to(device)
        bn.load_state_dict(module.state_dict())
        return bn.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, device))
    return module


# --- this rank's share of the data -------------------------------------------------
class ShardedData:
    """The dataset as one rank sees it: each global batch cut to the rank's contiguous slice."""

    def __init__(self, data, rank: int, world: int):
        self.data, self.rank, self.world = data, rank, world
        self._global_index: torch.Tensor | None = None  # the global batch the rank's last slice was cut from

    def __getattr__(self, name):  # everything else (fetch, test_batches, num_train, ...) is the dataset's
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)

    def _slice(self, n: int) -> slice:
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def epoch_batches(self, batch_size, generator, device):
        check_batch_size(batch_size, self.world)
        if hasattr(self.data, "train_set"):  # image folders: decode only this rank's images
            yield from self._folder_batches(batch_size, generator, device)
            return
        for x, y, index in self.data.epoch_batches(batch_size, generator, device):
            if y.numel() >= self.world:
                s = self._slice(y.numel())
                self._global_index = index
                yield x[s], y[s], index[s]

    def view(self, name: str, index: torch.Tensor, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """View ``name`` (MLKD's strong one) of the rank's slice ``index``: drawn for the whole global batch and
        cut, so each sample gets the augmentation a single process gives it (drawn for the slice alone, the
        ranks' k-th samples would share their random operations)."""
        whole = self._global_index
        s = slice(0, 0) if whole is None else self._slice(whole.numel())
        if whole is None or not torch.equal(whole[s], index):
            raise RuntimeError("ShardedData.view: views are drawn for the slice of the last global batch only")
        return self.data.view(name, whole, generator, device)[s]

    def _folder_batches(self, batch_size, generator, device):
        order = torch.randperm(self.data.num_train, generator=generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        mine = [b[self._slice(b.numel())].tolist() for b in order.split(batch_size) if b.numel() >= self.world]
        loader = torch.utils.data.DataLoader(
            _Indexed(self.data.train_set), batch_sampler=mine, num_workers=self.data.workers,
            pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed_for(seed, self.rank)))
        for x, y, i in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), i.to(device)


# --- the run -------------------------------------------------------------------------
class StudentWithMethod(nn.Module):
    """Student + method in one module, so DDP's forward produces the loss terms of every trainable parameter."""

    def __init__(self, student: nn.Module, method: nn.Module):
        super().__init__()
        self.student, self.method = student, method

    def forward(self, x, y, teacher_out, batch: Batch, extra_x=None, view_inputs=None):
        return compute_terms(self.student, self.method, x, y, teacher_out, batch, extra_x, view_inputs)


class DistributedRun(StudentRun):
    """A StudentRun whose step goes through DDP; ``step`` returns (and ``last_loss`` keeps) the global loss."""

    def __init__(self, run_id, model, method, recipe, seed, device: torch.device):
        super().__init__(run_id, model, method, recipe, seed)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world > 1:  # the methods' draws (negatives) must be independent across ranks
            self.generator.manual_seed(seed_for(seed, method.name, "method", "rank", self.rank, self.world))
        # BN buffers are equal on every rank (global statistics): synced at init, never broadcast per step;
        # device_ids=None: the inputs are on the device already and DDP passes them (dataclasses) untouched
        # a method with a pre-training stage has modules its main loss may leave unused (ab's connectors)
        self.ddp = DistributedDataParallel(StudentWithMethod(model, method), find_unused_parameters=bool(self.stages),
                                           **{_NO_BUFFER_SYNC: False})
        self.last_loss = None

    def forward_terms(self, x, y, teacher_out, batch, extra_x, view_inputs=None):
        return self.ddp(x, y, teacher_out, batch, extra_x, view_inputs)  # through DDP: gradients all-reduced

    def global_total(self, total, n):
        # one all-reduce: the global batch size and mean loss (so every rank agrees on divergence)
        stats = torch.stack([total.detach() * n, total.new_tensor(float(n))])
        dist.all_reduce(stats)
        self._global_n = float(stats[1])
        self.last_loss = stats[0] / stats[1]
        return self.last_loss

    def backward(self, total, n):
        scale = self.world * n / self._global_n  # DDP averages over ranks; uneven slices weigh by size
        (total if scale == 1.0 else total * scale).backward()

    def stage_backward(self, total, n, optimizer):
        """A pre-training stage's forward is the student's own (not DDP's; DDP's hooks wait for its forward), so
        its gradients are averaged over the ranks here, in one all-reduce, weighted as ``backward`` weighs them."""
        self.backward(total, n)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and self.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def end_epoch(self, epoch, data, device, shared_time, teacher_test=None):
        """Sum the epoch's training statistics over ranks; rank 0 evaluates and keeps the history."""
        ks, kw = list(self._sums), list(self._weighted)
        f64 = dict(dtype=torch.float64, device=device)
        vec = torch.stack([torch.as_tensor(self._sums[k], **f64) for k in ks] +
                          [torch.as_tensor(self._weighted[k], **f64) for k in kw] +
                          [torch.as_tensor(self._correct, **f64), torch.tensor(float(self._seen), **f64)])
        dist.all_reduce(vec)
        self._sums = dict(zip(ks, vec[:len(ks)]))
        self._weighted = dict(zip(kw, vec[len(ks):len(ks) + len(kw)]))
        self._correct, self._seen = vec[-2], int(vec[-1])
        if self.rank == 0:
            return super().end_epoch(epoch, data, device, shared_time, teacher_test)
        self.epochs_done = epoch + 1
        self.time_s += self._epoch_time + shared_time
        self.history.append({"epoch": epoch + 1})
        return self.history[-1]


# --- CLI -----------------------------------------------------------------------------
def parser():
    p = build_parser()
    p.prog = "python -m torch.distributed.run --nproc_per_node=N -m benchmarks.distributed"
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--method", dest="methods", help="the method to train (one)")
    p.add_argument("--pair", dest="pairs", help="teacher:student (one)")
    p.add_argument("--seed", dest="seeds", help="the student seed (default: the preset's first)")
    p.add_argument("--allow-approximate", action="store_true",
                   help="train methods whose loss couples the samples of a batch (rkd, crd, ...) anyway")
    return p


def resolve_one(args) -> tuple[FrozenConfig, RunSpec]:
    """The CLI's one run: the resolved config (frozen), derived with ``distributed_approximate`` (why the
    method is not exact under DDP, or None), and its RunSpec."""
    launch = [f for f in ("shard", "workers", "gpus", "executor") if getattr(args, f, None) not in (None, 1)]
    if launch:
        raise ConfigError(f"--{launch[0]} is the grid runner's; here torchrun starts the processes")
    cfg = resolve(args)
    if cfg["sweep"]:
        raise ConfigError("benchmarks.distributed trains one run: sweeps are the grid runner's "
                          "(python -m benchmarks.run --sweep); give the value with --set")
    if len(cfg["methods"]) != 1 or len(cfg["pairs"]) != 1 or (args.seeds and len(cfg["seeds"]) != 1):
        raise ConfigError(f"benchmarks.distributed trains one run: give one --method, --pair and --seed "
                          f"(got methods {cfg['methods']}, pairs {cfg['pairs']}, seeds {cfg['seeds']})")
    teacher, student = parse_pair(cfg["pairs"][0])
    spec = RunSpec(cfg["methods"][0], teacher, student, cfg["seeds"][0])
    why = approximation(cfg["resolved_methods"][spec.pair][spec.method])
    if why and not args.allow_approximate:
        raise ConfigError(f"{spec.method} is not exact under DDP ({why}); pass --allow-approximate to train it anyway")
    return cfg.derive(distributed_approximate=why), spec


def init_distributed(requested: str) -> tuple[torch.device, str]:
    cuda = requested != "cpu" and torch.cuda.is_available()
    if requested.startswith("cuda") and not cuda:
        raise ConfigError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if dist.is_initialized():  # called from a program that set up its process group itself
        return device, dist.get_backend()
    if "WORLD_SIZE" in os.environ:  # launched by torchrun (or an env:// launcher)
        dist.init_process_group(backend, device_id=device if cuda else None)
    else:  # plain python: a world of one
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return device, backend


def load_teacher(runner: GridRunner, cfg: Mapping[str, Any], spec: RunSpec, data, device, log):
    """Rank 0 loads the teacher (cache or checkpoint) and broadcasts its weights; others wait for them."""
    arch, info = spec.teacher, {}
    model = create_model(arch, num_classes=data.num_classes)
    if dist.get_rank() == 0:
        recipe, ckpt = teacher_recipe(cfg, arch), runner.teacher_ckpts.get(arch)
        # the imported store (python -m benchmarks.teachers import) or the trained cache, as the grid finds it
        amp = runner.fast["amp"]  # the grid runner's teacher of the same flags (a bf16 one is another teacher)
        if ckpt is None and not teacher_available(runner.teacher_dir, data.describe(), arch, recipe,
                                                  cfg["teacher_seed"], amp):
            path = teacher_path(runner.teacher_dir, data.describe(), arch, recipe, cfg["teacher_seed"], amp)
            raise TeacherError(f"teacher {arch} is neither imported nor in the cache ({path}); train it with the "
                               f"grid runner and the same preset/--set flags (python -m benchmarks.run ... --methods "
                               f"vanilla --pairs {spec.pair}), import it (python -m benchmarks.teachers import DIR) "
                               f"or pass --teacher-ckpt {arch}=PATH")
        model, info = get_teacher(arch, data, recipe, cfg["teacher_seed"], device, runner.teacher_dir, ckpt, log,
                                  fast=runner.fast)
    model = freeze(model.to(device))
    for t in model.state_dict().values():
        dist.broadcast(t, 0)
    return model, info


def train(cfg: Mapping[str, Any], spec: RunSpec, runner: GridRunner, options: RunnerOptions, device: torch.device,
          backend: str) -> int:
    """Train ``spec`` on this rank. ``cfg``: the runner's config; ``options``: the runner's (``runner.options``),
    resolved from the command line once."""
    rank, world = dist.get_rank(), dist.get_world_size()
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if rank == 0 else (lambda msg: None)
    # the ranks on this node share its CPUs (torchrun sets OMP_NUM_THREADS=1 unless the user set it)
    threads = follow_load(choose_threads(options.threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1))), log)
    recipe = student_recipe(cfg, spec.student)
    done = [False]
    if rank == 0:
        runner.check_writable()
        done = [runner.is_done(spec)]
    dist.broadcast_object_list(done, 0)
    if done[0]:
        log(f"{spec.run_id}: already complete in {runner.results_dir}")
        return 0
    data_opts = thaw(cfg.get("data", {}))
    if options.data_root:
        data_opts["data_root"] = options.data_root
    if rank == 0:  # first: it may download
        data = load_dataset(cfg["dataset"], **data_opts, download=options.download)
    dist.barrier()
    if rank != 0:
        data = load_dataset(cfg["dataset"], **data_opts, download=False)
    data, student_data = split_data(data, cfg)  # the grid runner's split and subset, recomputed identically
    needs_teacher = method_needs(spec.method, "needs_teacher")
    teacher, teacher_info = load_teacher(runner, cfg, spec, data, device, log) if needs_teacher else (None, {})
    model, method = build_student(spec, method_overrides(cfg, spec.pair), student_data, teacher, device)
    model, method = sync_batchnorm(model, device), sync_batchnorm(method, device)
    if runner.fast["channels_last"]:  # before DDP builds its gradient buckets (train_cohort would do it after)
        model.to(memory_format=torch.channels_last)
    run = DistributedRun(spec.run_id, model, method, recipe, spec.seed, device)
    data_generator = torch.Generator().manual_seed(seed_for(spec.seed, "data"))
    # every rank keeps its own checkpoint: the model and optimizer are equal across ranks, but each rank's
    # method RNG (and an approximate method's memory) is its own; rank 0 also keeps the run's record,
    # metrics, curves and best-epoch weights (it alone evaluates; its model equals every rank's)
    checkpoint = AllRanksCheckpoint(rank_checkpoint(runner, spec, rank), runner.fingerprint_of(spec),
                                    runner.checkpoint_every, spec.run_id, world)
    recorder = runner.recorder(spec, checkpoint) if rank == 0 else RunRecorder(checkpoint)
    data_state = recorder.resume(run)
    if data_state is not None:
        data_generator.set_state(data_state)
    if rank == 0:
        runner.data, runner.student_data = data, student_data
        runner.env = {**environment(device, threads), "world_size": world, "backend": backend}
        runner.write_grid()
        rec = runner.new_record(spec, teacher_info, method, model)
        rec.config.update(cohort=False)
        rec.config["distributed"] = {"world_size": world, "backend": backend, "rank_batch_size":
                                     recipe.batch_size // world, "approximate": cfg["distributed_approximate"]}
        runner.start_recording(spec, run, recorder, rec)
        log(f"{spec.run_id}: {world} x {device.type} ({backend}), global batch {recipe.batch_size} "
            f"-> {runner.results_dir}" + (f"; resuming after epoch {run.epochs_done}" if recorder.resumed else ""))

    def on_epoch_end(epoch, runs):
        if run.error is not None:
            return
        if rank == 0 and not options.quiet:
            h = run.history[-1]
            test = f", test top-1 {h['test_top1']:.2f}" if "test_top1" in h else ""  # Recipe.eval_every
            log(f"epoch {h['epoch']}/{recipe.epochs}: loss {h['loss']:.4f}{test}, {h['images_per_s']:.0f} img/s")
        recorder.epoch_end(run, data_generator)  # rank 0's metrics line; every rank's checkpoint when due

    scope = start_host_memory(device)
    train_cohort([run], ShardedData(student_data, rank, world), device, teacher=teacher, fast=runner.fast,
                 data_generator=data_generator, on_epoch_end=on_epoch_end)
    recorder.close_curves()
    if run.error is not None:
        if rank == 0:  # logs it and records it
            runner.fail(spec, recorder, run.error, getattr(run, "error_at", None), run)
        else:
            print(f"[rank {rank}] {spec.run_id}: FAILED: {type(run.error).__name__}: {run.error}", file=sys.stderr)
        return 1
    if rank == 0:
        runner.finish(recorder, run, cohort_cost([spec.run_id], scope))
        if not options.no_report:
            runner.write_report()
    dist.barrier()  # no rank removes its checkpoint before the record says complete
    recorder.remove_checkpoint()
    return 0


def rank_checkpoint(runner: GridRunner, spec: RunSpec, rank: int):
    return runner.checkpoint_path(spec).with_name(f"{spec.run_id}.rank{rank}.ckpt.pt")


class AllRanksCheckpoint(RunCheckpoint):
    """One rank's checkpoint of the run (``rank_checkpoint``), saved with the world size; a resume restores
    every rank from the newest epoch that all ranks have a readable checkpoint of.

    Each rank keeps two generations; a kill while ranks were writing leaves them one epoch apart,
    so the ranks agree (all_gather) on the newest epoch they share, or start over together.
    """

    def __init__(self, path, fingerprint: str, every: int, name: str, world: int):
        # an unreadable checkpoint is said on every rank (each reads its own)
        super().__init__(path, fingerprint, every, name, lambda msg: print(msg, file=sys.stderr), world=world)
        self.world = world

    def resume(self, run):
        states = {}
        for state in checkpoints.generations(self.path, self.log):
            if state.get("fingerprint") == self.fingerprint and state.get("world") == self.world:
                states[state["run"]["epochs_done"]] = state
        epochs: list[list[int]] = [[] for _ in range(self.world)]
        dist.all_gather_object(epochs, sorted(states))
        common = set(epochs[0]).intersection(*map(set, epochs[1:]))
        if not common:
            return None
        state = states[max(common)]
        run.load_state_dict(state["run"])
        return state["data_generator"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print_listing()
        return 0
    rank = int(os.environ.get("RANK", 0))
    owner = not dist.is_initialized()
    try:
        check_threads(args.threads)
        cfg, spec = resolve_one(args)
        check_batch_size(student_recipe(cfg, spec.student).batch_size, int(os.environ.get("WORLD_SIZE", 1)))
        runner = GridRunner(cfg, RunnerOptions.from_namespace(args))
        if args.dry_run:
            print(f"{spec.run_id} -> {runner.results_dir} (approximate: {runner.cfg['distributed_approximate']})")
            return 0
        device, backend = init_distributed(args.device)
    except BAD_INPUT as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return train(runner.cfg, spec, runner, runner.options, device, backend)
    except BAD_INPUT as e:
        print(f"[rank {rank}] error: {e}", file=sys.stderr)
        return 2
    finally:
        if owner:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
