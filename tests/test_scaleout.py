"""Scale-out: deterministic shards, local worker processes, the submitit executor (local backend)."""
from __future__ import annotations

import pytest

from kdcore import records
from benchmarks.grid import RunSpec, shard
from benchmarks.run import main
from benchmarks.scaleout import worker_argv

TINY = ["--methods", "vanilla,kd", "--pairs", "resnet8:resnet8", "--seeds", "0,1", "--epochs", "1",
        "--set", "teacher_train.epochs=1", "--quiet"]
EXPECTED = {f"{m}__resnet8-resnet8__s{s}" for m in ("vanilla", "kd") for s in (0, 1)}


def test_shards_are_whole_cohorts_dealt_round_robin():
    specs = [RunSpec(m, "t", st, seed) for st in ("a", "b") for seed in (0, 1, 2) for m in ("kd", "crd")]
    parts = [shard(specs, i, 4) for i in range(4)]
    assert sorted(s.run_id for p in parts for s in p) == sorted(s.run_id for s in specs)  # a partition
    assert [[(s.student, s.seed) for s in p][::2] for p in parts] == [
        [("a", 0), ("b", 1)], [("a", 1), ("b", 2)], [("a", 2)], [("b", 0)]]
    for p in parts:  # both methods of a cohort land in the same shard
        assert all(sum(1 for s in p if (s.student, s.seed) == (x.student, x.seed)) == 2 for x in p)


def test_shard_flag_on_the_cli(capsys):
    assert main(["--dry-run", "--shard", "1/2", "--methods", "kd", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert ": 2 runs" in out and "kd__resnet20-resnet8__s1" in out and "kd__wrn_16_2-wrn_16_1__s1" in out
    assert main(["--dry-run", "--shard", "2/2"]) == 2
    assert "bad --shard '2/2'" in capsys.readouterr().err


def test_worker_argv_drops_launch_flags():
    argv = ["--methods", "kd", "--workers", "2", "--gpus=0,1", "--executor", "local", "--wait", "--epochs", "3"]
    assert worker_argv(argv, 1, 2) == ["--methods", "kd", "--epochs", "3", "--shard", "1/2", "--no-report",
                                       "--quiet"]


def test_local_workers_share_a_grid(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "--grid", "w", "--workers", "2", *TINY]) == 0
    got = {r.run_id: r for r in records.iter_records(tmp_path / "w")}
    assert set(got) == EXPECTED and all(r.status == "complete" for r in got.values())
    assert len({r.env["pid"] for r in got.values()}) == 2  # two processes did the work
    assert (tmp_path / "w" / "report.md").exists()


def test_submitit_executor_local_backend(tmp_path, capsys):
    pytest.importorskip("submitit")
    assert main(["--results", str(tmp_path), "--grid", "s", "--executor", "local", "--wait", *TINY]) == 0
    err = capsys.readouterr().err
    assert "submitted 2 task(s) (local)" in err
    got = {r.run_id: r for r in records.iter_records(tmp_path / "s")}
    assert set(got) == EXPECTED and all(r.status == "complete" for r in got.values())
    assert (tmp_path / "s" / "report.md").exists()


def test_shard_cannot_combine_with_workers(capsys):
    assert main(["--shard", "0/2", "--workers", "2", *TINY]) == 2
    assert "--shard selects one machine's part" in capsys.readouterr().err
