"""One record type (issue 12): ``RunRecord`` is what the runner writes (``write_record``) and what the report
reads (``read_record`` / ``iter_records``). Records of real tiny grids read back and written again are the
same bytes; a record of another schema version is one clear error naming the file, which the report lists
instead of crashing; a schema-1 record without the later optional fields still loads and reports.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import grid as grid_module
from kdcore import records
from benchmarks.run import main
from reports import aggregate as agg
from reports import build_report

ROOT = Path(__file__).resolve().parents[1]
KD = records.run_id("kd", "resnet8", "resnet8", 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """One kd run on digits, 1 epoch, with its report."""
    root = tmp_path_factory.mktemp("typed")
    assert main(["--results", str(root), "--grid", "g", "--methods", "kd", "--pairs", "resnet8:resnet8",
                 "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet"]) == 0
    return root / "g"


def record_files(grid_dir: Path) -> list[Path]:
    return sorted(p for p in (grid_dir / "runs").glob("*.json") if not p.name.endswith(".metrics.jsonl"))


def assert_round_trip(path: Path) -> records.RunRecord:
    text = path.read_text()
    rec = records.read_record(path)
    assert rec.dumps() == text  # same keys, same order, same optional keys, same numbers
    assert list(rec.to_json()) == list(json.loads(text))
    return rec


def test_a_real_record_reads_back_and_writes_the_same_bytes(tiny, tmp_path):
    (path,) = record_files(tiny)
    rec = assert_round_trip(path)
    assert rec.status == "complete" and rec.trained and rec.variant is None and rec.sweep is None
    assert rec.metrics.epochs == 1 and rec.metrics.val_top1_last is None
    assert rec.metrics.top1_last == rec.history[-1]["test_top1"]
    assert rec.cost.student_param_bytes > 0 and rec.cost.cohort == [KD] and rec.cost.peak_mem_mb is None
    assert rec.weights == f"{KD}.student.pt" and rec.weights_best == f"{KD}.best.pt"
    assert "ece" in rec.teacher_info and rec.error is None
    # the one writer writes it back, atomically, to the same place
    copy = tmp_path / "g"
    assert records.write_record(copy, rec) == records.record_path(copy, KD)
    assert records.record_path(copy, KD).read_bytes() == path.read_bytes()
    # and the running record new_record makes has the layout the finished one grew from
    running = records.RunRecord.from_json({**json.loads(path.read_text()), "status": "running", "metrics": None,
                                           "finished_at": None}, "x")
    running.weights = running.weights_best = None
    assert list(running.to_json())[-2:] == ["started_at", "finished_at"]


def test_sweep_validation_split_not_applicable_and_build_failure_round_trip(tmp_path, monkeypatch):
    """A swept run with a validation split, a method that cannot run its pair (FSP: unequal channels) and a
    run that fails to build: every layout the runner writes."""
    build = grid_module.GridRunner.build_run

    def build_run(self, spec, teacher):
        if spec.method == "vanilla":
            raise RuntimeError("no student today\nsecond line")
        return build(self, spec, teacher)

    monkeypatch.setattr(grid_module.GridRunner, "build_run", build_run)
    code = main(["--results", str(tmp_path), "--grid", "g", "--methods", "vanilla,kd,fsp",
                 "--pairs", "resnet8:wrn_16_2", "--sweep", "kd.T=2", "--val-fraction", "0.2", "--seeds", "0",
                 "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet"])
    assert code == 1  # the build failure
    recs = {p.name: assert_round_trip(p) for p in record_files(tmp_path / "g")}
    kd = recs["kd[T=2]__resnet8-wrn_16_2__s0.json"]
    assert kd.status == "complete" and kd.variant == "kd[T=2]" and kd.sweep == {"kd.T": 2.0}
    assert kd.label == "kd[T=2]" and kd.metrics.val_top1_last == kd.history[-1]["val_top1"]
    fsp = recs["fsp__resnet8-wrn_16_2__s0.json"]
    assert fsp.status == "not_applicable" and not fsp.trained and fsp.metrics is None
    assert fsp.error.epoch is None and "epoch" not in fsp.error.to_json()
    vanilla = recs["vanilla__resnet8-wrn_16_2__s0.json"]
    assert vanilla.status == "failed" and not vanilla.trained and vanilla.error.message == "no student today"
    assert vanilla.error.to_json()["epoch"] is None and "RuntimeError" in vanilla.error.traceback
    res = agg.load_results(tmp_path / "g")
    assert res.counts()["failed"] == 1 and res.counts()["not_applicable"] == 1 and res.counts()["complete"] == 1


@pytest.mark.parametrize("schema", [0, 2, None])
def test_another_schema_is_one_error_naming_the_file_and_the_report_lists_it(tiny, tmp_path, schema):
    root = tmp_path / "g"
    root.mkdir()
    (root / "grid.json").write_bytes((tiny / "grid.json").read_bytes())
    data = json.loads(records.record_path(tiny, KD).read_text())
    if schema is None:
        data.pop("schema")
    else:
        data["schema"] = schema
    path = records.record_path(root, KD)
    records.write_json(path, data)
    with pytest.raises(records.RecordSchemaError) as e:
        records.read_record(path)
    found = f"record schema {schema}" if schema is not None else "record without a schema version"
    line = f"{path}: {found}, this kdbench reads schema 1; rerun the grid or use an older kdbench"
    assert str(e.value) == line
    (got,) = records.iter_records(root)
    assert isinstance(got, records.UnreadableRecord) and got.run_id == KD and got.error.message == line
    out = subprocess.run([sys.executable, "-m", "reports", str(root)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    text = (root / "report.md").read_text()
    assert "0 complete, 0 running, 0 failed, 1 corrupt, 0 missing (of 1 expected)" in text
    assert f"| `{KD}` | {line} |" in text


def test_the_runner_redoes_a_run_whose_record_is_of_another_schema(tiny, tmp_path, capsys):
    root = tmp_path / "r"
    (root / "g" / "runs").mkdir(parents=True)
    (root / "teachers").mkdir()
    for f in (tiny.parent / "teachers").rglob("*"):  # the cached teacher: no retraining
        dest = root / "teachers" / f.relative_to(tiny.parent / "teachers")
        dest.mkdir(exist_ok=True) if f.is_dir() else dest.write_bytes(f.read_bytes())
    data = json.loads(records.record_path(tiny, KD).read_text())
    path = records.record_path(root / "g", KD)
    records.write_json(path, {**data, "schema": 2})
    assert main(["--results", str(root), "--grid", "g", "--methods", "kd", "--pairs", "resnet8:resnet8",
                 "--seeds", "0", "--epochs", "1", "--set", "teacher_train.epochs=1", "--quiet", "--no-report"]) == 0
    assert f"{path}: record schema 2, this kdbench reads schema 1" in capsys.readouterr().err
    assert records.read_record(path).schema == 1


def test_a_schema_1_record_without_the_later_optional_fields_loads_and_reports(tiny, tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    (root / "grid.json").write_bytes((tiny / "grid.json").read_bytes())
    data = json.loads(records.record_path(tiny, KD).read_text())
    # as the first kdbench wrote it: no byte or cohort costs, no views, no fidelity, no teacher ECE, no weights
    data["cost"] = {k: data["cost"][k] for k in ("extra_params", "student_params", "time_s", "epoch_time_s",
                                                 "images_per_s")}
    data["cost"]["peak_mem_mb"] = 900.0
    for h in data["history"]:
        for k in ("test_ece", "test_agreement", "test_kl_teacher"):
            h.pop(k, None)
    data["teacher_info"].pop("ece")
    data.pop("weights")
    data.pop("weights_best")
    path = records.record_path(root, KD)
    records.write_json(path, data)
    rec = records.read_record(path)
    assert rec.cost.student_param_bytes is None and rec.cost.peak_mem_mb == 900.0 and rec.cost.views is None
    assert rec.weights is None and "ece" not in rec.teacher_info
    assert rec.dumps() == path.read_text()  # the old layout survives a rewrite too
    res = agg.load_results(root)
    row = res.runs.set_index("run_id").loc[KD]
    assert row["status"] == "complete" and row["peak_mem_mb"] == 900.0 and row["views"] == ""
    assert all(row[c] != row[c] for c in ("student_param_bytes", "buffer_bytes", "agreement_last", "teacher_ece"))
    first = build_report(root).read_bytes()
    assert build_report(root).read_bytes() == first


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(colour="red"), "the record has field 'colour', which schema 1 has not"),
    (lambda d: d["cost"].update(peak_gpu_mb=1.0), "cost has field 'peak_gpu_mb', which schema 1 has not"),
    (lambda d: d.pop("run_id"), "not a run record: no 'run_id'"),
    (lambda d: d.update(seed="0"), "seed is a JSON str, not what a run record holds"),
    (lambda d: d.update(history={}), "history is a JSON dict, not what a run record holds"),
])
def test_a_record_that_is_not_schema_1_shaped_is_corrupt_naming_the_file(tiny, tmp_path, change, message):
    data = json.loads(records.record_path(tiny, KD).read_text())
    change(data)
    path = tmp_path / "x.json"
    records.write_json(path, data)
    with pytest.raises(records.CorruptRecordError) as e:
        records.read_record(path)
    assert str(e.value) == f"{path}: {message}"


def test_unreadable_json_is_one_plain_sentence(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"run_id": "a\nb"}')  # a raw newline inside a string
    with pytest.raises(records.CorruptRecordError) as e:
        records.read_json(bad)
    assert str(e.value) == f"{bad}: unreadable JSON (Invalid control character at line 1)"
