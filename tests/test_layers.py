"""Layers point down: each layer, imported in a fresh interpreter, loads only the layers below it,
and no module of these layers hides an import inside a function (the usual way to dodge a cycle).

kdcore (the model/method contract) <- methods, benchmarks.models <- benchmarks <- reports
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("kdcore", "methods", "benchmarks", "reports")
MODEL_FILES = {"benchmarks.models.resnet", "benchmarks.models.wrn", "benchmarks.models.vgg"}


def loaded_by(module: str) -> set[str]:
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {OURS!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_kdcore_loads_nothing_of_ours():
    assert loaded_by("kdcore") == {"kdcore", "kdcore.contract"}


def test_methods_load_no_benchmarks_reports_or_model_file():
    mods = loaded_by("methods")
    assert {m.split(".")[0] for m in mods} == {"kdcore", "methods"}, mods
    assert not MODEL_FILES & mods


def test_models_load_no_method_implementation():
    mods = loaded_by("benchmarks.models")
    assert not {m for m in mods if m.split(".")[0] in ("methods", "reports")}, mods
    assert {m.split(".")[0] for m in mods} == {"kdcore", "benchmarks"}


OURS_PACKAGES = {"kdcore", "methods", "benchmarks", "reports"}


@pytest.mark.parametrize("folder", ["benchmarks", "reports"])
def test_no_function_level_import_of_our_own_code(folder):
    """benchmarks and reports import optional or heavy third-party packages lazily (timm, submitit, torchvision,
    sklearn, matplotlib); never a module of ours: that would hide a cycle (grid -> reports, run <-> scaleout,
    data <-> folder_data, teachers <-> grid were such cycles)."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level > 0 or
                                                              (inner.module or "").split(".")[0] in OURS_PACKAGES):
                        # reports/__init__.py: figures (matplotlib, seaborn) only when a report is drawn
                        if path.name == "__init__.py" and folder == "reports" and inner.names[0].name == "figures":
                            continue
                        bad.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
                    if isinstance(inner, ast.Import) and any(a.name.split(".")[0] in OURS_PACKAGES for a in inner.names):
                        bad.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert not bad, bad


def test_reports_sit_above_benchmarks_and_benchmarks_below_load_no_report():
    assert "reports" not in {m.split(".")[0] for m in loaded_by("benchmarks.train")}
    assert "reports" not in {m.split(".")[0] for m in loaded_by("benchmarks.config")}


@pytest.mark.parametrize("folder", ["kdcore", "methods", "benchmarks/models"])
def test_no_function_level_imports(folder):
    """Only a lazily imported optional third-party package (timm) is allowed inside a function."""
    bad = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import) and all(a.name == "timm" for a in inner.names):
                        continue
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        bad.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert not bad, bad
