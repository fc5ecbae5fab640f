"""Issue 17: cost columns that mean what they say, --wandb, and a terminal a person can read.

Costs: each run's exact bytes (student and method parameters, optimizer state, buffers) checked against
counts made here by hand; the CUDA per-step peaks through a monkeypatched ``torch.cuda``; the CPU's process
peak RSS reset per cohort and reported once per cohort; old records still report. W&B: offline runs read
back from their transaction logs (when the ``wandb`` package is installed), a fake ``wandb`` module for the
resume and failure paths, and the one-line refusals. Terminal: a simulated TTY keeps the bar on one line.
"""
from __future__ import annotations

import io
import json
import mmap
import re
import shutil
import struct
import sys
import types
from pathlib import Path

import pytest
import torch

from kdcore import costs, records
from benchmarks import distributed, grid
from kdcore.curves import WandbProject, WandbWriter, scalars
from kdcore.models import create_model
from benchmarks.progress import BarProgress, LineProgress, make_progress
from benchmarks.run import main
from kdcore.data import load_dataset
from benchmarks.grid import RunSpec, build_student
from kdcore.train import StudentRun, freeze, train_cohort
from kdcore.recipe import Recipe
from reports import build_report

PAIR = "resnet8:resnet8"
TINY = ["--pairs", PAIR, "--seeds", "0", "--epochs", "2", "--set", "teacher_train.epochs=1"]
RID = {m: records.run_id(m, "resnet8", "resnet8", 0) for m in ("vanilla", "kd", "crd")}


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory) -> Path:
    """vanilla, kd, crd as one cohort on digits, 2 epochs, with its report."""
    root = tmp_path_factory.mktemp("costs")
    assert main(["--results", str(root), "--grid", "g", "--quiet", "--methods", "vanilla,kd,crd", *TINY]) == 0
    return root / "g"


def record(root: Path, method: str) -> dict:
    return records.read_json(records.record_path(root, RID[method]))


def section5(text: str) -> str:
    start = text.index("## 5.")
    return text[start:text.index("\n## 6.", start)]


def cells(text: str) -> dict[str, list[str]]:
    return {r[0]: r[1:] for r in ([c.strip() for c in line.strip().strip("|").split("|")]
                                  for line in text.splitlines() if line.startswith("| "))}


# ---------------------------------------------------------------------------- exact bytes per run
def bn_buffer_bytes(model: torch.nn.Module) -> int:
    """Each BN layer: running mean and variance (float32, C each) and num_batches_tracked (one int64)."""
    return sum(2 * 4 * m.num_features + 8 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_records_hold_exact_bytes(grid_dir):
    student = create_model("resnet8", num_classes=10)
    n_params = sum(p.numel() for p in student.parameters())
    for method in ("vanilla", "kd", "crd"):
        cost = record(grid_dir, method)["cost"]
        assert cost["student_params"] == n_params
        assert cost["student_param_bytes"] == 4 * n_params  # float32
        assert cost["student_buffer_bytes"] == bn_buffer_bytes(student)
        # every parameter (student and method) took a step: one float32 momentum buffer each
        assert cost["optimizer_state_bytes"] == cost["student_param_bytes"] + cost["method_param_bytes"]
        assert "peak_mem_mb" not in cost and "cuda_peak_mb" not in cost  # CPU: no per-method "peak"
    assert record(grid_dir, "kd")["cost"]["method_param_bytes"] == 0
    assert record(grid_dir, "kd")["cost"]["method_buffer_bytes"] == 0
    crd = record(grid_dir, "crd")
    # CRD: two 64 -> 128 linear embeddings (weights and biases), two memory banks of n_data x 128 float32
    # and its two float32 normalisation constants
    assert crd["cost"]["method_param_bytes"] == 4 * 2 * (64 * 128 + 128) == 4 * crd["cost"]["extra_params"]
    n_data = crd["config"]["data"]["num_train"]
    assert crd["cost"]["method_buffer_bytes"] == 2 * n_data * 128 * 4 + 2 * 4


def test_optimizer_state_is_counted_from_optimizer_state():
    layer = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    assert costs.optimizer_state_bytes([sgd]) == 0  # no momentum before the first step
    layer(torch.ones(1, 3)).sum().backward()
    sgd.step()
    assert costs.optimizer_state_bytes([sgd]) == 4 * (3 * 2 + 2)
    plain = torch.optim.SGD(layer.parameters(), lr=0.1)  # momentum 0: state holds None
    plain.step()
    assert costs.optimizer_state_bytes([plain]) == 0
    assert costs.tensor_bytes([torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.int8)]) == 26


# ---------------------------------------------------------------------------- CUDA peaks (no GPU needed)
class FakeAllocator:
    def __init__(self):
        self.allocated, self.peak, self.resets = 0, 0, 0

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def install(self, monkeypatch) -> None:
        def reset(device=None):
            self.resets += 1
            self.peak = self.allocated
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)


def test_cuda_step_peak_with_a_fake_allocator(monkeypatch):
    fake = FakeAllocator()
    fake.install(monkeypatch)
    cuda, peaks = torch.device("cuda"), {}
    fake.alloc(1000)  # resident before the run's steps: other students, teacher, batch
    fake.alloc(5000)
    fake.alloc(-5000)  # an earlier spike, not this run's: reset before its step
    with costs.cuda_step_peak(peaks, cuda):
        fake.alloc(300)
        fake.alloc(-300)
    assert peaks == {"peak": 1300, "step": 300} and fake.resets == 1
    fake.alloc(100)
    with costs.cuda_step_peak(peaks, cuda):
        fake.alloc(250)
        fake.alloc(-250)
    assert peaks == {"peak": 1350, "step": 300}  # the max over the run's steps, of each figure
    with costs.cuda_step_peak(peaks, torch.device("cpu")):  # elsewhere: nothing measured
        fake.alloc(10**6)
    assert peaks == {"peak": 1350, "step": 300} and fake.resets == 2


def test_cuda_peaks_reach_the_record_and_the_report(grid_dir, tmp_path):
    run = types.SimpleNamespace(cuda_peaks={"peak": 3 * costs.MB, "step": costs.MB // 2},
                                memory_bytes=lambda: {"student_param_bytes": 24})
    assert grid.run_cost(run) == {"student_param_bytes": 24, "cuda_peak_mb": 3.0, "cuda_step_mb": 0.5}
    assert grid.start_host_memory(torch.device("cuda")) is None
    assert grid.cohort_cost(["a"], None) == {}  # on CUDA no process RSS is recorded
    root = tmp_path / "g"
    shutil.copytree(grid_dir, root)
    for method, peak in (("vanilla", 100.0), ("kd", 110.0), ("crd", 150.0)):
        path = records.record_path(root, RID[method])
        rec = records.read_json(path)
        for k in ("cohort", "cohort_peak_rss_mb", "cohort_peak_rss_scope"):
            rec["cost"].pop(k)
        rec["cost"].update(cuda_peak_mb=peak, cuda_step_mb=peak / 10)
        records.write_json(path, rec)
    text = section5(build_report(root).read_text())
    assert "peak CUDA memory (MB)²" in text and "² CUDA: the peak allocated memory during the run's own steps" in text
    row = cells(text)["crd"]
    header = cells(text)["method"]
    assert row[header.index("peak CUDA memory (MB)²")] == "150"
    assert row[header.index("CUDA step memory (MB)²")] == "15"
    assert "per cohort" not in text


def test_train_cohort_measures_every_step_of_every_run(monkeypatch):
    calls = []
    real = costs.cuda_step_peak

    def spy(peaks, device):
        calls.append(id(peaks))
        return real(peaks, device)

    monkeypatch.setattr("kdcore.train.cuda_step_peak", spy)
    data = load_dataset("digits")
    recipe = Recipe(epochs=1, batch_size=512)
    runs = []
    for m in ("vanilla", "kd"):
        spec = RunSpec(m, "resnet8", "resnet8", 0)
        model, method = build_student(spec, {}, data, None if m == "vanilla" else _frozen_teacher(data), "cpu")
        runs.append(StudentRun(spec.run_id, model, method, recipe, 0))
    train_cohort(runs, data, torch.device("cpu"), teacher=_frozen_teacher(data))
    steps = -(-data.num_train // 512)
    assert [calls.count(id(r.cuda_peaks)) for r in runs] == [steps, steps]
    assert all(r.cuda_peaks == {} for r in runs)  # CPU: nothing measured, nothing recorded
    assert "cuda_peaks" in runs[0].state_dict()


def _frozen_teacher(data):
    torch.manual_seed(0)
    return freeze(create_model("resnet8", num_classes=data.num_classes))


# ---------------------------------------------------------------------------- CPU: process peak per cohort
def test_peak_rss_is_reset_per_cohort(tmp_path):
    if not costs.reset_peak_rss():
        pytest.skip("this kernel refuses to reset the peak RSS")
    base = costs.peak_rss_mb()
    # 64 MiB of fresh anonymous pages, each touched: a tensor may reuse memory the process already holds
    # (after a long test session it did, and the peak did not move)
    big = mmap.mmap(-1, 64 * 2**20)
    for offset in range(0, len(big), mmap.PAGESIZE):
        big[offset] = 1
    assert costs.peak_rss_mb() >= base + 60
    big.close()
    assert costs.reset_peak_rss()
    assert costs.peak_rss_mb() < base + 30  # the earlier spike is not the next cohort's
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n")
    assert costs.peak_rss_mb(status) == 2.0
    assert not costs.reset_peak_rss(tmp_path / "no" / "clear_refs")


def test_cohort_rss_is_shown_once_per_cohort_and_epoch_time_is_labelled(grid_dir):
    recs = [record(grid_dir, m) for m in ("vanilla", "kd", "crd")]
    assert all(r["cost"]["cohort"] == [RID["vanilla"], RID["kd"], RID["crd"]] for r in recs)
    assert len({r["cost"]["cohort_peak_rss_mb"] for r in recs}) == 1
    assert all(r["cost"]["cohort_peak_rss_scope"] == "cohort" for r in recs)
    text = section5((grid_dir / "report.md").read_text())
    table = cells(text)
    assert table["method"][:7] == ["runs", "epoch time (s)¹", "images/s¹", "student params", "method params",
                                   "optimizer state", "buffers"]
    assert "peak" not in " ".join(table["method"])  # no per-method peak column on the CPU
    assert "its share of its cohort's shared work (drawing and augmenting the batches, the teacher's" in text
    # buffers: CRD's two banks over the digits default's 70 student images, 2 * 70 * 128 * 4 + 2 * 4 = 71,688 B,
    # plus resnet8's BN buffers (2,764 B): 74,452 B = 72.7 KiB
    assert table["crd"][3:7] == ["304.9 KiB", "65.0 KiB", "369.9 KiB", "72.7 KiB"]
    assert table["kd"][4] == "0 B"
    assert "**Process peak memory per cohort (CPU)**" in text
    assert table[PAIR] == ["0", "vanilla, kd, crd", f"{recs[0]['cost']['cohort_peak_rss_mb']:,.0f}"]
    assert "one figure per cohort, not a cost of any one method" in text


def test_old_records_still_report(grid_dir, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(grid_dir, root)
    path = records.record_path(root, RID["crd"])
    rec = records.read_json(path)
    rec["cost"] = {k: v for k, v in rec["cost"].items() if k in ("time_s", "epoch_time_s", "images_per_s",
                                                                  "extra_params", "student_params")}
    rec["cost"]["peak_mem_mb"] = 900.0  # the old process-wide figure
    records.write_json(path, rec)
    first = build_report(root).read_bytes()
    text = section5(first.decode())
    assert cells(text)["crd"][3:7] == ["–", "–", "–", "–"]
    assert cells(text)["kd"][3] == "304.9 KiB"
    assert cells(text)[PAIR][1] == "vanilla, kd"  # the cohort's runs that recorded it
    assert build_report(root).read_bytes() == first  # byte-identical on rerun


# ---------------------------------------------------------------------------- W&B
def wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``: a 7-byte header, then 32 KiB blocks
    of records, each with a 7-byte header: checksum, length, type; FULL=1, FIRST=2, MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        buf += raw[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_logs_what_tensorboard_logs(tmp_path, monkeypatch):
    import wandb  # noqa: F401  (the test extra installs it: this test runs, it never skips)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()

    assert main(["--results", str(tmp_path), "--grid", "g", "--quiet", "--no-report", "--methods", "vanilla,kd",
                 "--wandb", "kdbench-test", *TINY]) == 0
    seen = offline_wandb_runs(tmp_path / "wb")
    assert set(seen) == {RID["vanilla"], RID["kd"]}  # one W&B run per kdbench run
    check_wandb_run_matches_record(seen[RID["kd"]], tmp_path / "g")


def offline_wandb_runs(wandb_dir: Path) -> dict[str, tuple]:
    """The offline W&B runs under ``wandb_dir``: {run name: (run, config, {step: logged values})}."""
    seen = {}
    for log in sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        run = next(r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run")
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        history = {int(r.history.step.num): {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                             for i in r.history.item}
                   for r in wandb_records(log) if r.WhichOneof("record_type") == "history"}
        assert run.display_name not in seen
        seen[run.display_name] = (run, config, history)
    return seen


def check_wandb_run_matches_record(seen_run: tuple, grid_dir: Path) -> None:
    """The kd run's W&B run (2 epochs, grid "g") holds its record's config and, per epoch, exactly the
    TensorBoard tags and values."""
    from test_resume import event_steps

    run, config, history = seen_run
    assert run.run_group == "g" and run.project == "kdbench-test"
    assert config["kd.T"] == 4.0 and config["method"] == "kd" and config["pair"] == PAIR and config["seed"] == 0
    rec = record(grid_dir, "kd")
    assert config["train.lr"] == rec["config"]["train"]["lr"]
    tb = event_steps(grid_dir, RID["kd"])
    assert sorted(history) == [1, 2]
    for epoch, logged in history.items():
        mine = {k: v for k, v in logged.items() if not k.startswith("_")}
        assert mine == pytest.approx(scalars(rec["history"][epoch - 1]))
        assert set(mine) == set(tb)  # the same tags as the TensorBoard writer
        assert all(dict(tb[tag])[epoch] == pytest.approx(v) for tag, v in mine.items())


class FakeRun:
    def __init__(self, step: int = 0, **kwargs):
        self.kwargs, self.step, self.logged, self.finished = kwargs, step, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch, init) -> types.ModuleType:
    mod = types.ModuleType("wandb")
    mod.Settings = lambda **kw: kw
    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return mod


def entry(epoch: int) -> dict:
    return {"epoch": epoch, "lr": 0.1, "loss": 1.0, "losses": {"ce": 1.0}, "weighted_losses": {"ce": 1.0},
            "train_top1": 50.0, "test_top1": 40.0, "test_top5": 90.0, "time_s": 1.0}


def test_wandb_writer_names_groups_and_resumes(monkeypatch, tmp_path):
    opened = []

    def init(**kwargs):
        opened.append(FakeRun(step=3 if len(opened) else 0, **kwargs))  # the second open: W&B has steps 1, 2
        return opened[-1]

    fake_wandb(monkeypatch, init)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    project = WandbProject("proj", "grid-a", tmp_path / "grid-a", print)
    writer = WandbWriter(project, "kd__a-b__s0", "root|kd__a-b__s0|2024-01-01T00:00:00")
    writer.start({"method": "kd", "kd": {"T": 4.0}}, [])
    writer.epoch(entry(1))
    writer.epoch(entry(2))
    writer.close()
    first = opened[0]
    assert first.finished and [s for s, _ in first.logged] == [1, 2]
    assert first.kwargs["name"] == "kd__a-b__s0" and first.kwargs["group"] == "grid-a"
    assert first.kwargs["project"] == "proj" and first.kwargs["config"] == {"method": "kd", "kd.T": 4.0}
    assert first.kwargs["dir"] == str(tmp_path / "grid-a") and first.kwargs["resume"] == "allow"
    assert first.kwargs["settings"]["console"] == "off"  # W&B never writes over the progress bar
    # resumed from a checkpoint at epoch 2: same key (same start time), same W&B id; only new epochs are sent
    again = WandbWriter(project, "kd__a-b__s0", "root|kd__a-b__s0|2024-01-01T00:00:00")
    again.start({"method": "kd"}, [entry(1), entry(2)])
    again.epoch(entry(3))
    assert opened[1].kwargs["id"] == first.kwargs["id"] and [s for s, _ in opened[1].logged] == [3]
    other = WandbWriter(project, "kd__a-b__s0", "root|kd__a-b__s0|2024-02-02T00:00:00")  # started over
    other.start({}, [])
    assert opened[2].kwargs["id"] != first.kwargs["id"]


def test_wandb_refusing_a_run_is_said_once_and_the_grid_goes_on(monkeypatch, tmp_path, capsys):
    tries = []

    def init(**kwargs):
        tries.append(kwargs)
        raise RuntimeError("api_key not configured (no-tty)\ncall wandb.login(key=[your_api_key])")

    fake_wandb(monkeypatch, init)
    assert main(["--results", str(tmp_path), "--grid", "g", "--quiet", "--no-report", "--methods", "vanilla,kd",
                 "--wandb", "proj", *TINY]) == 0
    err = capsys.readouterr().err
    assert len(tries) == 1
    assert err.count("wandb: cannot open a run (RuntimeError: api_key not configured (no-tty)); curves go to "
                     "TensorBoard only\n") == 1
    assert record(tmp_path / "g", "kd")["status"] == "complete"


@pytest.mark.parametrize("project, message", [
    ("proj", "error: --wandb needs the wandb package, which is not installed: pip install 'kdbench[wandb]' "
             "(or pip install wandb)"),
    ("a/b", "error: bad --wandb 'a/b': a W&B project name, at most 128 characters, none of / \\ # ? % :"),
])
def test_wandb_bad_flag_is_one_line_before_any_work(monkeypatch, tmp_path, capsys, project, message):
    if project == "proj":
        monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert main(["--results", str(tmp_path / "r"), "--methods", "kd", "--wandb", project, *TINY]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- the terminal
class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: "\\r" returns to the line's start, "\\n" moves down."""
    lines, row, col = [""], 0, 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
    return [line.rstrip() for line in lines]


def test_on_a_terminal_log_lines_never_break_the_bar(monkeypatch, tmp_path):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(["--results", str(tmp_path), "--grid", "g", "--no-report", "--methods", "vanilla,kd", *TINY]) == 0
    raw = tty.getvalue()
    assert "\x1b" not in raw  # one bar, no cursor movement
    starts = ["cohort resnet8:resnet8 s0: 2 runs"]
    for line in starts + ["estimate: about "]:
        at = raw.index(line)
        # the bar was cleared before the line (it starts a fresh line), the line ends with a newline, and the
        # bar is drawn again right after it
        assert raw[at - 1] in "\r\n"
        end = raw.index("\n", at)
        assert raw[end + 1:].startswith("\rstudents:")
    shown = screen(raw)
    assert "cohort resnet8:resnet8 s0: 2 runs" in shown  # a whole line, no bar fragment before or after
    bars = [i for i, line in enumerate(shown) if line.startswith("students:")]
    assert len(bars) == 1 and "4/4" in shown[bars[0]]  # the bar is one line, left below the log
    # the bar's estimate is the grid's (tqdm's rate would count the teacher's time), gone once all is done
    assert "4/4 [00:" in shown[bars[0]] and "<" not in shown[bars[0]] and "/s" not in shown[bars[0]]
    assert "left" not in shown[bars[0]] and ", resnet8:resnet8 s0 ep 2/2: best " in shown[bars[0]]
    assert re.search(r"\| 2/4 \[00:\d\d, about \d:\d\d left; resnet8:resnet8 s0 ep 1/2: best ", raw)
    assert not any("students:" in line for i, line in enumerate(shown) if i not in bars)
    assert shown[bars[0] + 1].startswith("done in ")


def test_off_a_terminal_progress_comes_at_a_modest_rate(capsys, tmp_path):
    assert isinstance(make_progress(10, "x", FakeTTY()), BarProgress)
    line = make_progress(10, "x", io.StringIO())
    assert isinstance(line, LineProgress) and line.interval >= 30
    assert main(["--results", str(tmp_path), "--grid", "g", "--no-report", "--methods", "vanilla,kd", *TINY]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert len(progress) == 1 and progress[0].startswith("progress: 4/4")  # a short run: the final count only
    # one line per cohort, none per run
    assert [line for line in err.splitlines() if line.startswith(("cohort ", "run "))] == [
        "cohort resnet8:resnet8 s0: 2 runs"]


def test_distributed_logs_curves_wandb_and_best_weights_as_the_grid_runner(tmp_path, monkeypatch):
    """benchmarks.distributed (a world of one here) keeps what a grid run keeps: TensorBoard curves, the W&B
    run with --wandb (offline), the best epoch's weights named by the record."""
    import wandb  # noqa: F401  (the test extra installs it)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # so the W&B files go to the grid's folder (README)
    torch.manual_seed(0)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), tmp_path / "teacher.pt")
    assert distributed.main(["--results", str(tmp_path), "--grid", "g", "--quiet", "--no-report", "--method", "kd",
                             "--pair", PAIR, "--seed", "0", "--epochs", "2",
                             "--teacher-ckpt", f"resnet8={tmp_path / 'teacher.pt'}", "--wandb", "kdbench-test"]) == 0
    seen = offline_wandb_runs(tmp_path / "g")
    assert list(seen) == [RID["kd"]]
    check_wandb_run_matches_record(seen[RID["kd"]], tmp_path / "g")
    rec = record(tmp_path / "g", "kd")
    best_epoch = max(range(2), key=lambda i: (rec["history"][i]["test_top1"], -i)) + 1  # the first of equals
    best = torch.load(tmp_path / "g" / "runs" / rec["weights_best"], weights_only=False)
    assert rec["config"]["distributed"]["world_size"] == 1 and best["epoch"] == best_epoch
