"""The documentation site: its examples train through the public path, the methods page comes from the
registry, and ``mkdocs build --strict`` passes (broken links, missing nav pages, mkdocstrings warnings fail).

The guides' examples (docs/examples/*.py) are imported by path, as a user would before calling the
runner; the registries are restored afterwards so no other test sees ``kd_tanneal`` or ``tiny_cnn``.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import methods
import methods.base as methods_base
from benchmarks.run import main
from kdcore import records
from kdcore.models import list_models
from kdcore.models import registry as model_registry
from cohorts import import_file

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TINY = ["--epochs", "1", "--set", "teacher_train.epochs=1", "--seeds", "0", "--quiet"]


def load_example(name: str):
    path = DOCS / "examples" / f"{name}.py"
    module = import_file(path, f"kdbench_docs_{name}")
    return module


@pytest.fixture
def registries():
    """Restore the method and model registries after the test (the examples register into them)."""
    saved_methods, saved_models = dict(methods_base._METHODS), dict(model_registry._MODELS)
    yield
    methods_base._METHODS.clear()
    methods_base._METHODS.update(saved_methods)
    model_registry._MODELS.clear()
    model_registry._MODELS.update(saved_models)


def complete_records(grid: Path) -> dict:
    recs = {r.run_id: r for r in records.iter_records(grid)}
    for r in recs.values():
        assert r.status == "complete", (r.run_id, r.status)
        assert r.metrics.epochs == 1 and math.isfinite(r.metrics.top1_last) and 0 <= r.metrics.top1_last <= 100
    return recs


def epoch_lines(grid: Path, run_id: str) -> list[dict]:
    return [json.loads(line) for line in (grid / "runs" / f"{run_id}.metrics.jsonl").read_text().splitlines()]


def test_examples_are_not_in_the_product():
    assert "kd_tanneal" not in methods.list_methods() and "tiny_cnn" not in list_models()


def test_method_example_trains_through_the_runner(registries, capsys, tmp_path):
    example = load_example("method_example")
    assert "kd_tanneal" in methods.list_methods()
    doc = example.__doc__
    assert len(doc) > 200 and "default" in doc.lower()  # the registry's docstring rule
    cls = methods.method_class("kd_tanneal")
    assert set(cls.ranges) == set(cls.defaults)

    code = main(["--results", str(tmp_path), "--grid", "g", "--pairs", "resnet8:resnet8",
                 "--methods", "vanilla,kd_tanneal", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    grid = tmp_path / "g"
    recs = complete_records(grid)
    assert set(recs) == {"vanilla__resnet8-resnet8__s0", "kd_tanneal__resnet8-resnet8__s0"}
    rec = recs["kd_tanneal__resnet8-resnet8__s0"]
    assert rec.config["method"] == {"kd_tanneal": {"T_start": 8.0, "T_end": 2.0, "gamma": 0.1, "alpha": 0.9}}
    # the method's own term was computed and logged: a positive, finite KL
    (line,) = epoch_lines(grid, rec.run_id)
    term = line["losses"]["kd_tanneal"]
    assert math.isfinite(term) and term > 0, line
    assert "kd_tanneal" in (grid / "report.md").read_text()

    # its ranges reach the CLI: a bad value is one line and exit 2, before any work
    code = main(["--results", str(tmp_path), "--grid", "bad", "--pairs", "resnet8:resnet8",
                 "--methods", "kd_tanneal", "--set", "kd_tanneal.T_start=0", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "error: kd_tanneal.T_start must be > 0" in err, err


def test_method_example_anneals_its_temperature(registries):
    load_example("method_example")
    from kdcore import Progress

    cls = methods.method_class("kd_tanneal")
    method = cls.__new__(cls)  # the schedule alone: no models needed
    method.T_start, method.T_end = 8.0, 2.0
    temps = []
    for epoch in (0.0, 5.0, 10.0):
        method.progress = Progress(epoch, 10)
        temps.append(method.temperature())
    assert temps == [8.0, 5.0, 2.0]


def test_model_example_trains_through_the_runner(registries, capsys, tmp_path):
    load_example("model_example")
    assert "tiny_cnn" in list_models()
    code = main(["--results", str(tmp_path), "--grid", "g", "--pairs", "resnet8:tiny_cnn",
                 "--methods", "vanilla,kd,fitnet", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    recs = complete_records(tmp_path / "g")
    assert set(recs) == {f"{m}__resnet8-tiny_cnn__s0" for m in ("vanilla", "kd", "fitnet")}
    # the student is the example's network: its weights file holds TinyCNN's parameters
    import torch

    state = torch.load(tmp_path / "g" / "runs" / "vanilla__resnet8-tiny_cnn__s0.student.pt", weights_only=True)
    flat = json.dumps(sorted(_keys(state)))
    assert "blocks.0.0.weight" in flat and "fc.weight" in flat, flat[:500]


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]


def test_guides_include_their_examples():
    for guide, example in (("method", "method_example"), ("model", "model_example")):
        text = (DOCS / "guides" / f"{guide}.md").read_text()
        assert f'--8<-- "docs/examples/{example}.py"' in text, guide


def _hooks():
    module = import_file(DOCS / "hooks.py", "kdbench_docs_hooks")
    return module


def test_methods_page_is_generated_from_the_registry():
    hooks = _hooks()
    page = hooks.catalogue_markdown()
    for name in methods.list_methods():
        assert f"### `{name}`" in page, name
    dkd = page[page.index("### `dkd`"):].split("\n### ", 1)[0]
    assert '- **Paper:** dkd: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022.' in dkd
    assert "[megvii-research/mdistiller](https://github.com/megvii-research/mdistiller)" in dkd
    assert "`T=4.0`" in dkd and "`beta=8.0`" in dkd
    assert "`tests/test_method_logit.py`" in dkd
    triplet = page[page.index("### `triplet`"):].split("\n### ", 1)[0]
    assert "i13abe/Triplet-Loss-for-Knowledge-Distillation" in triplet and "`tests/test_method_triplet.py`" in triplet
    assert hooks.MARKER in (DOCS / "methods.md").read_text()


def test_mkdocs_build_strict(tmp_path):
    """The site builds with --strict: a broken link or anchor, a nav page that is missing, a snippet that
    does not exist or a mkdocstrings warning fails it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    methods_html = (tmp_path / "site" / "methods" / "index.html").read_text()
    assert all(f"<code>{name}</code>" in methods_html for name in methods.list_methods())
    guide = (tmp_path / "site" / "guides" / "method" / "index.html").read_text()
    assert "KDTemperatureAnneal" in guide  # the snippet was included
    assert re.search(r"ModelOutput", (tmp_path / "site" / "api" / "contract" / "index.html").read_text())
