"""Layers point one way: the library (``kdcore``: the contract, models, data, the loop, recipes, records,
presets) at the bottom; ``methods`` and ``reports`` on it; the application (``benchmarks``) on top.

Checked twice: statically (every import statement of every module, at module or function level, gives a
package edge that must be allowed, and the module graph has no cycle) and by loading each layer in a
fresh interpreter (what ``import reports`` really pulls in). The static check is run on a planted
wrong-way import too, so it is known to fail when it should.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("kdcore", "methods", "benchmarks", "reports")
MODEL_FILES = {"kdcore.models.resnet", "kdcore.models.wrn", "kdcore.models.vgg"}
LOOP = {"kdcore.train"}
# package -> the packages it may import (itself always)
ALLOWED = {
    "kdcore": set(),
    "methods": {"kdcore"},
    "reports": {"kdcore"},
    "benchmarks": {"kdcore", "methods", "reports"},
}
# the one module-level exception, and why: ``python -m reports`` is a command; it hands the method registry
# to the report (colours, the published protocol's hyperparameters); ``import reports`` never loads it
ALLOWED_MODULES = {("reports.__main__", "methods")}


def module_name(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def imports_of(root: Path, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of ours in ``path``; relative imports
    resolved; imports under ``if TYPE_CHECKING:`` left out (they never run)."""
    mod = module_name(root, path)
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            # ``from kdcore import records`` imports the module kdcore.records
            names = [f"{names[0]}.{a.name}" if (root / Path(*names[0].split("."), a.name)).with_suffix(".py").exists()
                     or (root / Path(*names[0].split("."), a.name, "__init__.py")).exists() else names[0]
                     for a in node.names]
        out += [(n, node.lineno, id(node) in in_function) for n in names if n.split(".")[0] in OURS]
    return out


def wrong_way_imports(root: Path) -> list[str]:
    """Every import of ours that goes against ``ALLOWED`` (at module or function level), as file:line."""
    bad = []
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            mod = module_name(root, path)
            for target, line, _ in imports_of(root, path):
                top = target.split(".")[0]
                if top != package and top not in ALLOWED[package] and (mod, top) not in ALLOWED_MODULES:
                    bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles among our modules through module-level imports (a package's import of its own submodule aside)."""
    graph: dict[str, set[str]] = {}
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            mod = module_name(root, path)
            graph[mod] = {t for t, _, inside in imports_of(root, path)
                          if not inside and t != mod and not t.startswith(mod + ".")}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if t not in graph:
                continue
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_every_import_goes_the_allowed_way():
    assert wrong_way_imports(ROOT) == []


def test_no_import_cycle_among_our_modules():
    assert import_cycles(ROOT) == []


@pytest.mark.parametrize("planted, where", [
    ("from benchmarks.grid import GridRunner\n", "kdcore/records.py"),   # the library reaching up
    ("from methods import list_methods\n", "reports/tables.py"),         # reports loading the methods
    ("import reports\n", "methods/kd.py"),                               # a method importing the reports
])
def test_the_edge_check_fails_on_a_planted_wrong_way_import(tmp_path, planted, where):
    for package in OURS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / where
    target.write_text(planted + target.read_text())
    bad = wrong_way_imports(tmp_path)
    assert [b for b in bad if b.startswith(f"{where}:1 ")] and len(bad) == 1, bad


def test_the_cycle_check_fails_on_a_planted_cycle(tmp_path):
    for package in OURS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "kdcore/text.py").write_text("from kdcore.records import read_json\n"
                                              + (tmp_path / "kdcore/text.py").read_text())
    (tmp_path / "kdcore/records.py").write_text("from kdcore.text import plural\n"
                                                 + (tmp_path / "kdcore/records.py").read_text())
    cycles = import_cycles(tmp_path)
    assert len(cycles) == 1 and set(cycles[0]) == {"kdcore.records", "kdcore.text"}, cycles


def loaded_by(module: str) -> set[str]:
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {OURS!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_kdcore_loads_only_the_contract():
    assert loaded_by("kdcore") == {"kdcore", "kdcore.contract"}


def test_methods_load_the_contract_and_no_model_loop_report_or_application():
    mods = loaded_by("methods")
    assert {m.split(".")[0] for m in mods} == {"kdcore", "methods"}, mods
    assert not MODEL_FILES & mods and not LOOP & mods, mods


def test_reports_load_no_method_no_loop_and_no_application():
    mods = loaded_by("reports")
    assert {m.split(".")[0] for m in mods} == {"kdcore", "reports"}, mods
    assert not LOOP & mods, mods


def test_models_load_only_the_library():
    mods = loaded_by("kdcore.models")
    assert {m.split(".")[0] for m in mods} == {"kdcore"}, mods
    assert MODEL_FILES <= mods and not LOOP & mods


def test_the_loop_loads_no_method_file_report_or_application():
    mods = loaded_by("kdcore.train")
    assert {m.split(".")[0] for m in mods} == {"kdcore"}, mods


@pytest.mark.parametrize("folder", ["kdcore", "methods", "benchmarks", "reports"])
def test_no_function_level_import_of_our_own_code(folder):
    """Optional or heavy third-party packages may be imported lazily (timm, submitit, torchvision, sklearn,
    matplotlib); a module of ours never: that would hide a cycle. One exception: ``reports.sections`` draws its
    figures (matplotlib, seaborn) only when a report is built."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for target, line, inside in imports_of(ROOT, path):
            if inside and not (module_name(ROOT, path) == "reports.sections" and target == "reports.figures"):
                bad.append(f"{path.relative_to(ROOT)}:{line} {target}")
    assert not bad, bad
