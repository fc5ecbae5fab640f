"""``[teacher_reference]`` (issue 26): a preset may quote the published test top-1 range of comparable networks on
its data. A teacher under its ``min_top1`` stops the grid with one line, exit 2, before any student trains; the
report's Teachers block shows each teacher beside the range and its source.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kdcore.config import ConfigError, check_teacher_reference
from benchmarks.run import main

SOURCE = "a table somebody published"


def preset(tmp_path: Path, reference: str) -> str:
    path = tmp_path / "ref.toml"
    path.write_text(f'''description = "digits with a teacher reference"
dataset = "digits"
methods = ["vanilla", "kd"]
pairs = ["resnet8:resnet8"]
seeds = [0]
[train]
epochs = 1
batch_size = 64
[teacher_train]
epochs = 1
{reference}
''')
    return str(path)


def reference(lo: float, hi: float = 100.0) -> str:
    return f'[teacher_reference]\nmin_top1 = {lo}\nmax_top1 = {hi}\nsource = "{SOURCE}"\n'


def test_a_teacher_under_the_range_stops_the_grid_before_any_student(tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["--preset", preset(tmp_path, reference(99.9)), "--results", str(results), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith("error: teacher resnet8 reached ") and "% test top-1 on digits, under the 99.9-100% " \
        f"published for comparable networks ({SOURCE}): train it longer (--set teacher_train.epochs=N) or give a " \
        "better one (--teacher-ckpt resnet8=PATH); --set teacher_reference.min_top1=0 accepts it" in err
    runs = results / "ref" / "runs"
    assert not any(p.name.endswith(".student.pt") for p in runs.glob("*")) if runs.exists() else True
    assert not (results / "ref" / "report.md").exists()
    # the teacher it trained is kept (cached): accepting it from the command line trains only the students
    assert main(["--preset", preset(tmp_path, reference(99.9)), "--results", str(results), "--quiet",
                 "--set", "teacher_reference.min_top1=0"]) == 0
    report = next(results.glob("ref*/report.md")).read_text()
    assert f"Published test top-1 of comparable networks on this data: 0–100% ({SOURCE}); here: resnet8 " in report
    assert "% (within)." in report


def test_the_report_marks_a_teacher_below_and_above(tmp_path):
    results = tmp_path / "results"
    assert main(["--preset", preset(tmp_path, reference(0.0, 1.0)), "--results", str(results), "--quiet"]) == 0
    report = (results / "ref" / "report.md").read_text()
    assert f"comparable networks on this data: 0–1% ({SOURCE}); here: resnet8 " in report and "% (above)." in report


def test_a_grid_without_a_reference_has_no_such_line(tmp_path):
    results = tmp_path / "results"
    assert main(["--preset", preset(tmp_path, ""), "--results", str(results), "--quiet"]) == 0
    assert "comparable networks" not in (results / "ref" / "report.md").read_text()


@pytest.mark.parametrize("ref,message", [
    ({"min_top1": 90.0, "max_top1": 95.0}, "teacher_reference needs exactly the keys max_top1, min_top1, source"),
    ({"min_top1": 96.0, "max_top1": 95.0, "source": SOURCE}, "min_top1 (96.0) is above max_top1 (95.0)"),
    ({"min_top1": "90", "max_top1": 95.0, "source": SOURCE}, "teacher_reference.min_top1 must be a percentage"),
    ({"min_top1": 90.0, "max_top1": 101, "source": SOURCE}, "teacher_reference.max_top1 must be a percentage"),
    ({"min_top1": 90.0, "max_top1": 95.0, "source": " "}, "teacher_reference.source must say where"),
    ("90-95", "teacher_reference must be a table"),
])
def test_a_bad_reference_is_one_line(ref, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_teacher_reference(ref)


def test_a_bad_reference_from_the_command_line_exits_2_before_training(tmp_path, capsys):
    code = main(["--preset", preset(tmp_path, reference(90.0, 95.0)), "--results", str(tmp_path / "r"),
                 "--set", "teacher_reference.min_top1=120"])
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        "error: teacher_reference.min_top1 must be a percentage in [0, 100], got 120"
    assert not (tmp_path / "r").exists()
