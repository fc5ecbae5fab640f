"""Issue 29: a report section is one function registered in order (``reports.sections``).

The built-in sections are registered in the report's order; the guide's example (docs/examples/
report_section_example.py), imported by path, adds its section to a report with the exact text computed below;
a user section is numbered on after the built-in ones, unnumbered among them; a duplicate registration raises.
Every section registered here is unregistered afterwards, so no other test sees it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kdcore.records import read_json, record_path, run_id, write_json
from reports import aggregate as agg
from reports import registered_sections, render_report, report_section, unregister_section
from test_reports import A, make_results
from cohorts import import_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "report_section_example.py"

BUILT_IN = [  # (name, order, number, title)
    ("title_block", 0, None, None),
    ("summary", 1, None, None),
    ("grid", 2, None, None),
    ("teacher_warnings", 3, None, None),
    ("teachers", 4, None, None),
    ("top1_last", 10, 1, "Top-1 accuracy, last epoch (RepDistiller's convention)"),
    ("top1_best", 20, 2, "Top-1 accuracy, best epoch (mdistiller's convention)"),
    ("gains", 30, 3, "Gains and average rank (last epoch)"),
    ("published", 40, 4, "Published numbers"),
    ("cost", 50, 5, "Training cost"),
    ("inventory", 60, 6, "Run inventory"),
    ("fidelity", 70, 7, "Fidelity to the teacher (last epoch)"),
    ("figures", 80, 8, "Figures"),
    ("significance", 90, 9, "Is the gain real? (last epoch)"),
    ("sweeps", 100, 10, "Sweeps: sensitivity and tuned results"),
]


@pytest.fixture
def registry():
    """Leaves the registry as it found it: every section registered during the test is removed."""
    before = {s.name for s in registered_sections()}
    yield
    for s in registered_sections():
        if s.name not in before:
            unregister_section(s.name)
    assert {s.name for s in registered_sections()} == before


def load_example():
    module = import_file(EXAMPLE, "report_section_example")
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The unit grid of test_reports (run times: vanilla 50 s, kd 60 s, crd 75 s: 5 epochs of 10, 12, 15 s),
    with kd on pair A, seed 1, made the slowest run of its pair: 200 s."""
    root = make_results(tmp_path_factory.mktemp("sections") / "unit")
    path = record_path(root, run_id("kd", *A.split(":"), 1))
    rec = read_json(path)
    rec["cost"]["time_s"] = 200.0
    write_json(path, rec)
    return root


def test_the_built_in_sections_are_registered_in_the_report_order():
    assert [(s.name, s.order, s.number, s.title) for s in registered_sections()] == BUILT_IN


def test_the_example_adds_its_section_at_the_end(registry, results):
    load_example()
    assert registered_sections()[-1].name == "slowest_run_per_pair"
    text = render_report(agg.load_results(results))
    # pair A: kd seed 1 at 200 s -> 200 / 60 = 3.33 min; pair B: crd at 75 s, seed 0 (the first of the ties)
    assert text.endswith(
        "\n\n## 10. Slowest run per pair\n\n"
        "| Pair | Method | Seed | Wall time |\n"
        "|:--|:--|--:|--:|\n"
        "| resnet32x4 → resnet8x4 | kd | 1 | 3.3 min |\n"
        "| vgg13 → MobileNetV2 | crd | 0 | 75.0 s |\n"
        "\n"
        "Each pair's longest complete run (its record's wall time, all epochs).\n")
    assert text.count("## 10.") == 1  # this grid has no sweeps section: the example takes the next number


def test_numbering_of_added_sections(registry, results):
    @report_section(order=55, title="Among the built-in ones")
    def among(ctx):
        return "between 5 and 6"

    @report_section(order=120, title="Left out")
    def left_out(ctx):
        return None

    @report_section(order=130, title="After them")
    def after(ctx):
        return "next number"

    @report_section(order=140, title="Never numbered", numbered=False)
    def plain(ctx):
        return "no number"

    @report_section(order=150)
    def untitled(ctx):
        return "no heading"

    text = render_report(agg.load_results(results))
    assert "\n\n## Among the built-in ones\n\nbetween 5 and 6\n\n## 6. Run inventory\n\n" in text
    assert "Left out" not in text
    assert text.endswith("\n\n## 10. After them\n\nnext number\n\n## Never numbered\n\nno number\n\nno heading\n")


def test_a_duplicate_registration_raises(registry):
    load_example()
    with pytest.raises(ValueError, match="slowest_run_per_pair"):
        load_example()  # imported twice: the same name again
    with pytest.raises(ValueError, match="already registered"):
        report_section(order=998, name="gains")(lambda ctx: "x")  # a built-in section's name
    with pytest.raises(ValueError, match="order 110 is already taken by 'slowest_run_per_pair'"):
        report_section(order=110, name="another")(lambda ctx: "x")
    with pytest.raises(KeyError):
        unregister_section("no such section")
