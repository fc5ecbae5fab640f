"""DDP (benchmarks.distributed) on 2 CPU processes (gloo, loopback) equals one process on the global batch.

The 2-process parts run under ``torch.distributed.run``; this file is also the
worker script it starts (``python tests/test_distributed.py --worker OUT``).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kdcore import records  # noqa: E402
from kdcore.config import ConfigError  # noqa: E402
from kdcore.curves import curves_dir  # noqa: E402
from kdcore.data import InMemoryData, load_dataset  # noqa: E402
from benchmarks.distributed import DistributedRun, ShardedData, approximation, main, sync_batchnorm  # noqa: E402
from benchmarks.grid import RunSpec, build_student  # noqa: E402
from kdcore.models import create_model  # noqa: E402
from kdcore.train import StudentRun, freeze, seed_for, train_cohort  # noqa: E402
from kdcore.recipe import Recipe

CPU = torch.device("cpu")
METHODS = ["vanilla", "kd", "fitnet", "at"]  # fitnet: a method module with its own BN and parameters
STAGED = ["ab", "ft", "fsp"]  # a pre-training stage first (its own optimizer, outside DDP's forward)
DTYPES = [torch.float32, torch.float64]
# 99 samples, global batch 32: three full batches and a last one of 3, split 1 + 2 (uneven slices)
RECIPE = Recipe(epochs=1, batch_size=32, lr=0.05, lr_decay_epochs=[1])


class Digits64(InMemoryData):
    """The digits slice with float64 images: exactness shows beyond float32 rounding."""

    def normalise(self, images):
        return super().normalise(images).double()


def small_digits(dtype=torch.float32) -> InMemoryData:
    d = load_dataset("digits")
    cls = Digits64 if dtype == torch.float64 else InMemoryData
    return cls("digits-slice", d.train_images[:99], d.train_labels[:99], d.test_images[:96], d.test_labels[:96],
               10, d.mean, d.std, pad=1, flip=False)


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_teacher():
    torch.manual_seed(0)
    return freeze(create_model("resnet8", num_classes=10))


def trainable(run) -> dict[str, torch.nn.Parameter]:
    return {**{f"model.{k}": p for k, p in run.model.named_parameters()},
            **{f"method.{k}": p for k, p in run.method.named_parameters()}}


def state(run) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v.clone() for k, v in run.model.state_dict().items()},
            **{f"method.{k}": v.clone() for k, v in run.method.state_dict().items()}}


def snapshot(run, loss, steps: list) -> None:
    """After each step: the global loss; after the first, the gradients and parameters too."""
    first = not steps
    steps.append({"loss": float(loss),
                  "grads": {k: p.grad.clone() for k, p in trainable(run).items()} if first else None,
                  "params": {k: p.detach().clone() for k, p in trainable(run).items()} if first else None})


def worker(out: Path) -> None:
    """One rank: each method for one epoch (4 steps) through DistributedRun + train_cohort, then the CLI."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {}
    for dtype in DTYPES:
        with default_dtype(dtype):
            data, teacher = small_digits(dtype), make_teacher()
            for m in METHODS:
                model, method = build_student(RunSpec(m, "resnet8", "resnet8", 0), {}, data, teacher, CPU)
                run = DistributedRun(m, sync_batchnorm(model, CPU), sync_batchnorm(method, CPU), RECIPE, 0, CPU)
                steps: list = []
                train_cohort([run], ShardedData(data, dist.get_rank(), dist.get_world_size()), CPU,
                             teacher=teacher, data_generator=torch.Generator().manual_seed(seed_for(0, "data")),
                             on_step=lambda: snapshot(run, run.last_loss, steps))
                if run.error is not None:
                    raise run.error
                results[dtype, m] = {"steps": steps, "final": state(run), "history": run.history}
    with default_dtype(torch.float64):  # methods with a pre-training stage: its epoch, then a main one
        data, teacher = small_digits(torch.float64), make_teacher()
        for m in STAGED:
            run = staged_run(m, data, teacher, distributed=True)
            train_cohort([run], ShardedData(data, dist.get_rank(), dist.get_world_size()), CPU, teacher=teacher,
                         data_generator=torch.Generator().manual_seed(seed_for(0, "data")))
            if run.error is not None:
                raise run.error
            results["staged", m] = {"final": state(run), "history": run.history}
    if dist.get_rank() == 0:
        torch.save(results, out / "steps.pt")
    # the command line, in the same processes (one torchrun start is most of this test's time)
    code = main(["--method", "kd", *cli_flags(out), "--results", str(out / "ddp")])
    # a method trained on a second view (its loss couples the batch: approximate under DDP)
    code = code or main(["--method", "mlkd", "--allow-approximate", *cli_flags(out), "--results", str(out / "ddp")])
    dist.destroy_process_group()
    sys.exit(code)


def staged_run(m: str, data, teacher, distributed: bool) -> StudentRun:
    """``m`` with a one-epoch pre-training stage, then RECIPE's epoch."""
    model, method = build_student(RunSpec(m, "resnet8", "resnet8", 0), {m: {"init_epochs": 1}}, data, teacher, CPU)
    if not distributed:
        return StudentRun(m, model, method, RECIPE, 0)
    return DistributedRun(m, sync_batchnorm(model, CPU), sync_batchnorm(method, CPU), RECIPE, 0, CPU)


def cli_flags(out: Path) -> list[str]:
    return ["--pair", "resnet8:resnet8", "--epochs", "1", "--teacher-ckpt", f"resnet8={out / 'teacher.pt'}",
            "--quiet", "--no-report", "--channels-last", "on"]  # (a fast path that must precede DDP's buckets)


def reference(m: str, data, teacher) -> dict:
    """The same run in one process, stepping as train_cohort does on the global batches."""
    model, method = build_student(RunSpec(m, "resnet8", "resnet8", 0), {}, data, teacher, CPU)
    run = StudentRun(m, model, method, RECIPE, 0)
    run.begin_epoch(0)
    steps: list = []
    generator = torch.Generator().manual_seed(seed_for(0, "data"))
    for i, (x, y, index) in enumerate(data.epoch_batches(RECIPE.batch_size, generator, CPU)):
        with torch.no_grad():
            t_out = teacher.forward_kd(x, preact=method.needs_preact) if method.needs_teacher else None
        snapshot(run, run.step(x, y, index, t_out, data, CPU, 0, i), steps)
    run.end_epoch(0, data, CPU, 0.0)
    return {"steps": steps, "final": state(run), "history": run.history}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = _torchrun_raw(*args, timeout=timeout)
    assert proc.returncode == 0, \
        f"{' '.join(proc.args)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    """Two ranks under torchrun: the step-by-step results (steps.pt) and a CLI run's records (ddp/)."""
    out = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), out / "teacher.pt")
    torchrun(str(Path(__file__)), "--worker", str(out))
    return out


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core machine is shared with the 2 workers
    yield
    torch.set_num_threads(old)


def close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def test_ddp_equals_single_process(ddp_out, one_thread):
    """Same global batches, same init: loss, gradients, parameters, BN statistics and epoch log agree.

    float64 shows exactness (1e-9: nothing but rounding differs, uneven last slice included);
    float32 is held to the rounding a user sees (loss 1e-6, parameters after one step 1e-5).
    """
    ddp = torch.load(ddp_out / "steps.pt", weights_only=False)
    for dtype in DTYPES:
        tight = dtype == torch.float64
        with default_dtype(dtype):
            data, teacher = small_digits(dtype), make_teacher()
            for m in METHODS:
                ref, got = reference(m, data, teacher), ddp[dtype, m]
                what = f"{m} {dtype}"
                assert len(got["steps"]) == len(ref["steps"]) == 4, what
                assert close(got["steps"][0]["loss"], ref["steps"][0]["loss"], 1e-12 if tight else 1e-6), what
                g, r = got["steps"][0], ref["steps"][0]
                assert g["params"].keys() == r["params"].keys(), what
                for k in r["params"]:  # after one SGD step
                    torch.testing.assert_close(g["params"][k], r["params"][k], rtol=1e-12 if tight else 1e-5,
                                               atol=1e-12 if tight else 1e-5, msg=f"{what} param {k}")
                assert got["final"].keys() == ref["final"].keys(), what  # SyncBN keeps plain BN's state keys
                if not tight:
                    continue
                for a, b in zip(got["steps"], ref["steps"]):
                    assert close(a["loss"], b["loss"], 1e-9), (what, a["loss"], b["loss"])
                for k in r["grads"]:
                    torch.testing.assert_close(g["grads"][k], r["grads"][k], rtol=1e-9, atol=1e-12,
                                               msg=f"{what} grad {k}")
                for k, v in ref["final"].items():  # parameters and BN running statistics after 4 steps
                    torch.testing.assert_close(got["final"][k], v, rtol=1e-9, atol=1e-12, msg=f"{what} {k}")
                h, hr = got["history"][0], ref["history"][0]
                assert close(h["loss"], hr["loss"], 1e-9), (what, h, hr)
                assert (h["train_top1"], h["test_top1"]) == (hr["train_top1"], hr["test_top1"]), (what, h, hr)


def test_ddp_trains_pre_training_stages_as_one_process(ddp_out, one_thread):
    """ab, ft, fsp: a stage epoch (the stage's modules, their own optimizer, gradients averaged over the ranks)
    and a main epoch end with one process's parameters, BN statistics and epoch log (float64: rounding only)."""
    ddp = torch.load(ddp_out / "steps.pt", weights_only=False)
    with default_dtype(torch.float64):
        data, teacher = small_digits(torch.float64), make_teacher()
        for m in STAGED:
            ref = staged_run(m, data, teacher, distributed=False)
            train_cohort([ref], data, CPU, teacher=teacher,
                         data_generator=torch.Generator().manual_seed(seed_for(0, "data")))
            got = ddp["staged", m]
            assert [h.get("stage") for h in ref.history] == [h.get("stage") for h in got["history"]] == \
                [ref.stages[0].name, None], m
            changed = [k for k, v in state(ref).items() if v.is_floating_point() and
                       not torch.equal(v, state(staged_run(m, data, teacher, distributed=False))[k])]
            assert changed and (m != "ft" or any(k.startswith("method.paraphraser") for k in changed)), m
            for k, v in state(ref).items():
                torch.testing.assert_close(got["final"][k], v, rtol=1e-9, atol=1e-12, msg=f"{m} {k}")
            for h, hr in zip(got["history"], ref.history):
                assert close(h["loss"], hr["loss"], 1e-9), (m, h, hr)
                assert (h["train_top1"], h["test_top1"]) == (hr["train_top1"], hr["test_top1"]), (m, h, hr)


def test_cli_under_torchrun_writes_the_grid_record(ddp_out, tmp_path, one_thread):
    from benchmarks.run import main as grid_main

    runs = list((ddp_out / "ddp").glob("*/runs/kd__resnet8-resnet8__s0.json"))
    assert len(runs) == 1
    rec = records.read_json(runs[0])
    assert rec["status"] == "complete" and rec["config"]["distributed"]["world_size"] == 2
    assert rec["config"]["fast_paths"]["channels_last"] and rec["config"]["fast_paths"]["amp"] == "fp32"
    assert len(rec["history"]) == 1 and (runs[0].parent / rec["weights"]).exists()
    # rank 0 keeps the best epoch's weights (of one epoch: the final ones) and the run's TensorBoard curves
    best = torch.load(runs[0].parent / rec["weights_best"], weights_only=False)
    final = torch.load(runs[0].parent / rec["weights"], weights_only=False)
    assert best["epoch"] == final["epoch"] == 1 and best["student"].keys() == final["student"].keys()
    assert all(torch.equal(best["student"][k], v) for k, v in final["student"].items())
    assert list(curves_dir(runs[0].parent.parent, rec["run_id"]).glob("events.out.tfevents.*"))
    assert len(records.metrics_path(runs[0].parent.parent, rec["run_id"]).read_text().splitlines()) == 1
    # the grid runner, one process, same flags: same grid folder and fingerprint (so it counts the DDP
    # record as done) and the same epoch loss up to float32 rounding over 22 steps
    flags = cli_flags(ddp_out)
    assert grid_main(["--methods", "kd", "--seeds", "0", "--pairs", *flags[1:], "--results", str(tmp_path)]) == 0
    single = records.read_json(next(tmp_path.glob("*/runs/kd__resnet8-resnet8__s0.json")))
    assert single["config"]["fingerprint"] == rec["config"]["fingerprint"]
    assert next(tmp_path.glob("*/runs")).parent.name == runs[0].parent.parent.name
    assert close(single["history"][0]["loss"], rec["history"][0]["loss"], 1e-3)


def test_ddp_trains_a_second_view_cut_from_the_global_batch(ddp_out):
    rec = records.read_json(next((ddp_out / "ddp").glob("*/runs/mlkd__resnet8-resnet8__s0.json")))
    assert rec["status"] == "complete" and rec["config"]["distributed"]["world_size"] == 2
    assert rec["config"]["distributed"]["approximate"]  # MLKD's batch- and class-level terms
    assert rec["cost"]["views"] == ["strong"] and rec["cost"]["teacher_forwards_per_step"] == 2


def test_a_ranks_view_is_its_slice_of_the_global_batchs_view():
    """Each rank's strong view equals the single process's view of the global batch, cut to the rank's slice
    (uneven last batch included); drawn for the slice alone, the two ranks' first samples would share their
    random operations."""
    data = small_digits()
    single = list(data.epoch_batches(32, torch.Generator().manual_seed(5), CPU))
    for rank in range(2):
        sharded = ShardedData(data, rank, 2)
        for step, (x, y, index) in enumerate(sharded.epoch_batches(32, torch.Generator().manual_seed(5), CPU)):
            whole = single[step][2]
            cut = slice(whole.numel() * rank // 2, whole.numel() * (rank + 1) // 2)
            assert torch.equal(index, whole[cut])
            got = sharded.view("strong", index, torch.Generator().manual_seed(step), CPU)
            expected = data.view("strong", whole, torch.Generator().manual_seed(step), CPU)[cut]
            assert torch.equal(got, expected), (rank, step)
        assert step == len(single) - 1
    alone = data.view("strong", single[0][2][16:], torch.Generator().manual_seed(0), CPU)
    assert not torch.equal(alone, data.view("strong", single[0][2], torch.Generator().manual_seed(0), CPU)[16:])
    with pytest.raises(RuntimeError, match="slice of the last global batch"):
        ShardedData(data, 0, 2).view("strong", single[0][2][:16], torch.Generator(), CPU)


def test_approximate_methods_need_the_flag(capsys):
    assert main(["--method", "rkd", "--pair", "resnet8:resnet8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: rkd is not exact under DDP") and "--allow-approximate" in err[0]
    assert main(["--method", "rkd", "--pair", "resnet8:resnet8", "--allow-approximate", "--dry-run"]) == 0
    assert main(["--method", "kd,at", "--pair", "resnet8:resnet8"]) == 2
    for name, resolved, exact in [("kd", {"kd": {}}, True), ("crd+kd", {"crd": {}, "kd": {}}, False),
                                  ("triplet", {"triplet": {"negatives": "dataset"}}, True),
                                  ("pair", {"pair": {"negatives": "batch"}}, False)]:
        assert (approximation(resolved) is None) == exact, name


def test_sharded_batches_are_the_global_batch():
    data = small_digits()
    seeded = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    for world, batch in ((2, 32), (3, 33)):  # 99 samples: last batch 3 (split 1 + 2), or 3 x 33
        shards = [list(ShardedData(data, r, world).epoch_batches(batch, seeded(), CPU)) for r in range(world)]
        for i, (x, y, index) in enumerate(data.epoch_batches(batch, seeded(), CPU)):
            for k, whole in enumerate((x, y, index)):  # contiguous slices, in rank order
                assert torch.equal(torch.cat([s[i][k] for s in shards]), whole)
    # a last batch smaller than the world (3 < 4) is dropped on every rank
    assert len(list(ShardedData(data, 3, 4).epoch_batches(32, seeded(), CPU))) == 3
    with pytest.raises(ConfigError, match="not divisible by the 2 processes"):
        next(ShardedData(data, 0, 2).epoch_batches(33, seeded(), CPU))


def test_image_folder_ranks_decode_only_their_slices(tmp_path):
    from PIL import Image

    from kdcore.data.folder import FolderData

    for split in ("train", "val"):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (10, 10), (40 * i, 100 * c, 7)).save(tmp_path / split / f"c{c}" / f"{i}.png")
    data = FolderData(tmp_path, image_size=8, workers=0)
    seeded = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    shards = [list(ShardedData(data, r, 2).epoch_batches(4, seeded(), CPU)) for r in range(2)]
    order = torch.randperm(10, generator=seeded()).split(4)  # the global batches: 4, 4, 2
    assert [len(s) for s in shards] == [3, 3]
    for i, whole in enumerate(order):
        assert torch.equal(torch.cat([s[i][2] for s in shards]), whole)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), data.train_labels[whole])
        assert shards[0][i][0].shape == (len(whole) // 2, 3, 8, 8)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(Path(sys.argv[2]))


def _torchrun_raw(*args: str, env_extra: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_run_killed_in_a_checkpoint_write_resumes_bitwise(ddp_out, tmp_path):
    """triplet draws its negatives from each rank's own RNG: the resume must restore every rank's state."""
    flags = ["--method", "triplet", "--pair", "resnet8:resnet8", "--epochs", "4",
             "--teacher-ckpt", f"resnet8={ddp_out / 'teacher.pt'}", "--quiet", "--no-report"]
    ref = _torchrun_raw("-m", "benchmarks.distributed", *flags, "--results", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    # each rank dies (SIGKILL) in the middle of its 2nd checkpoint write, after epoch 2 (tests/kill_hook.py;
    # rank 0's best-epoch weights are not counted)
    killed = _torchrun_raw(str(ROOT / "tests" / "kill_hook.py"), "2:.ckpt.pt", "benchmarks.distributed", *flags,
                           "--results", str(tmp_path / "killed"))
    assert killed.returncode != 0
    runs = next((tmp_path / "killed").glob("*/runs"))
    assert sorted(p.name for p in runs.glob("*.rank*.ckpt.pt")) == [
        "triplet__resnet8-resnet8__s0.rank0.ckpt.pt", "triplet__resnet8-resnet8__s0.rank1.ckpt.pt"]
    resumed = _torchrun_raw("-m", "benchmarks.distributed", *flags, "--results", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stderr
    assert not list(runs.glob("*.ckpt.pt*"))  # removed once the run is complete
    a = torch.load(next((tmp_path / "ref").glob("*/runs/*.student.pt")), weights_only=False)
    b = torch.load(next(runs.glob("*.student.pt")), weights_only=False)
    for k in a["student"]:
        assert torch.equal(a["student"][k], b["student"][k]), k
    ra = records.read_json(next((tmp_path / "ref").glob("*/runs/*s0.json")))
    rb = records.read_json(next(runs.glob("*s0.json")))
    strip = lambda h: [{k: v for k, v in e.items() if "time" not in k and k != "images_per_s"} for e in h]  # noqa
    assert strip(ra["history"]) == strip(rb["history"]) and len(rb["history"]) == 4
    assert (runs / rb["weights_best"]).exists()  # rank 0's best-epoch weights survive the kill and the resume
