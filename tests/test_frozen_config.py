"""The resolved config is frozen once validated (``config.FrozenConfig``), and nothing below the command line
reads an ``argparse.Namespace`` (issue #12)."""
from __future__ import annotations

import ast
import copy
import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from kdcore import records
from benchmarks import speed
from kdcore.config import FrozenConfig, FrozenList, fingerprint, protocol, thaw
from benchmarks.grid import GridRunner, RunnerOptions, expand
from benchmarks.run import build_parser, resolve
from benchmarks.scaleout import LaunchOptions, launch

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--methods", "kd,vanilla", "--pairs", "resnet8:resnet8", "--seeds", "0", "--epochs", "1"]


def parse(tmp_path, *argv):
    return build_parser().parse_args(["--results", str(tmp_path / "results"), *argv])


def test_a_resolved_config_refuses_every_change(tmp_path):
    cfg = resolve(parse(tmp_path, *DIGITS))
    assert isinstance(cfg, FrozenConfig) and isinstance(cfg["train"], FrozenConfig)
    assert isinstance(cfg["methods"], FrozenList)
    changes = [
        lambda: cfg.__setitem__("dataset", "cifar10"),
        lambda: cfg.__delitem__("dataset"),
        lambda: cfg.setdefault("new", 1),
        lambda: cfg.update(dataset="cifar10"),
        lambda: cfg.pop("dataset"),
        lambda: cfg.popitem(),
        lambda: cfg.clear(),
        lambda: cfg["train"].__setitem__("lr", 1),  # cfg["train"]["lr"] = 1
        lambda: cfg["train"].update(lr=1),
        lambda: cfg["resolved_methods"]["resnet8:resnet8"]["kd"]["kd"].__setitem__("T", 1.0),
        lambda: cfg["grid_base"].__setitem__("explicit", "other"),
        lambda: cfg["methods"].append("crd"),
        lambda: cfg["methods"].__setitem__(0, "crd"),
        lambda: cfg["seeds"].extend([1]),
        lambda: cfg["pairs"].sort(),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="the resolved config is frozen"):
            change()
    with pytest.raises(TypeError, match="frozen"):
        cfg["train"]["lr"] = 1
    with pytest.raises(TypeError, match="frozen"):
        cfg |= {"dataset": "cifar10"}
    methods = cfg["methods"]
    with pytest.raises(TypeError, match="frozen"):
        methods += ["crd"]
    assert cfg["methods"] == ["kd", "vanilla"] and cfg["train"]["epochs"] == 1


def test_derive_thaw_copy_and_pickle(tmp_path):
    cfg = resolve(parse(tmp_path, *DIGITS))
    before = copy.deepcopy(cfg)
    derived = cfg.derive(dataset="cifar10", extra={"a": [1, 2]})
    assert isinstance(derived, FrozenConfig) and isinstance(derived["extra"]["a"], FrozenList)
    assert derived["dataset"] == "cifar10" and derived["train"] == cfg["train"]
    assert cfg == before and "extra" not in cfg  # the original is unchanged
    # a deep copy (and thaw) is plain and mutable, equal to the frozen config
    plain = thaw(cfg)
    assert type(plain) is dict and type(plain["train"]) is dict and type(plain["methods"]) is list
    assert type(before) is dict and before == cfg == plain
    plain["train"]["lr"] = 1  # fine: a copy
    assert cfg["train"]["lr"] != 1
    # pickles as itself (multiprocessing, submitit)
    again = pickle.loads(pickle.dumps(cfg))
    assert isinstance(again, FrozenConfig) and isinstance(again["train"], FrozenConfig) and again == cfg


def test_frozen_json_and_identity_are_the_plain_configs(tmp_path):
    """grid.json, records and fingerprints see the same bytes as from the plain config."""
    cfg = resolve(parse(tmp_path, *DIGITS, "--sweep", "kd.T=1,2", "--val-fraction", "0.1"))
    plain = thaw(cfg)
    assert records.dumps(cfg) == records.dumps(plain)
    assert json.dumps(cfg, sort_keys=True) == json.dumps(plain, sort_keys=True)
    assert json.dumps(cfg) == json.dumps(plain)
    assert fingerprint(protocol(cfg)) == fingerprint(protocol(plain))
    assert [s.run_id for s in expand(cfg)] == [s.run_id for s in expand(plain)]


def test_the_runner_derives_its_config_and_leaves_the_resolved_one_unchanged(tmp_path):
    args = parse(tmp_path, *DIGITS)
    cfg = resolve(args)
    before = copy.deepcopy(cfg)
    runner = GridRunner(cfg, RunnerOptions.from_namespace(args))
    assert cfg == before and "teachers" not in cfg
    assert isinstance(runner.cfg, FrozenConfig) and runner.cfg is not cfg
    assert runner.cfg["teachers"] == {} and runner.cfg["grid"] == cfg["grid"]
    assert {k: v for k, v in runner.cfg.items() if k != "teachers"} == cfg
    # a plain dict (a test's, an API caller's) is not written into either
    plain = thaw(cfg)
    runner = GridRunner(plain, RunnerOptions.from_namespace(args))
    assert plain == before and type(plain) is dict and "teachers" not in plain
    assert isinstance(runner.cfg, FrozenConfig) and "teachers" in runner.cfg


def test_grid_names_and_fingerprints_are_unchanged(tmp_path):
    """Measured on the commit before the config was frozen (72d6200: the same two resolves, a GridRunner each,
    ``cfg["grid"]`` and ``[runner.fingerprint_of(s) for s in expand(cfg)]``, printed by a throwaway script).
    The run fingerprints changed once on purpose since: the teacher's key joined them, with the teacher's
    own seeding (teachers.TEACHER_SEEDING 2), measured the same way; the grid names did not change."""
    expected = {(): ("digits-df5e8402", ["f38efc72c05b", "b1c254e5ee61"]),
                ("--set", "kd.T=2", "--val-fraction", "0.1"): ("digits-c97d06c1", ["33e260864885", "7ccb4ab7a0d6"])}
    for extra, (grid, prints) in expected.items():
        args = parse(tmp_path, *DIGITS, *extra)
        runner = GridRunner(resolve(args), RunnerOptions.from_namespace(args))
        assert runner.cfg["grid"] == grid
        assert [runner.fingerprint_of(s) for s in expand(runner.cfg)] == prints


def test_resolve_one_derives_the_approximation(tmp_path):
    from benchmarks.distributed import parser, resolve_one

    args = parser().parse_args(["--results", str(tmp_path / "r"), "--method", "rkd", "--pair", "resnet8:resnet8",
                                "--allow-approximate", "--epochs", "1"])
    cfg, spec = resolve_one(args)
    assert isinstance(cfg, FrozenConfig) and spec.run_id == "rkd__resnet8-resnet8__s0"
    assert "rkd" in cfg["distributed_approximate"]
    assert resolve(args) == {k: v for k, v in cfg.items() if k != "distributed_approximate"}


def test_launch_and_speed_options_are_frozen_and_leave_the_namespace_alone(tmp_path):
    args = parse(tmp_path, *DIGITS, "--workers", "2", "--wait")
    options = LaunchOptions.from_namespace(args)
    assert options.workers == 2 and options.wait and options.results == str(tmp_path / "results")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.workers = 3
    with pytest.raises(TypeError, match="launch takes LaunchOptions"):
        launch({"grid": "g"}, args, [], [])

    ns = speed.build_parser().parse_args(["--methods", "kd, vanilla", "--pair", "resnet8:resnet20", "--quick"])
    seen = dict(vars(ns))
    opts = speed.resolve(ns)
    assert vars(ns) == seen  # resolving does not write into the Namespace
    assert isinstance(opts, speed.SpeedOptions)
    assert opts.method_list == ("kd", "vanilla") and (opts.teacher, opts.student) == ("resnet8", "resnet20")
    assert (opts.steps, opts.warmup, opts.image_size, opts.num_train) == (3, 1, 16, speed.SYNTHETIC_TRAIN)
    assert opts.workers is None and opts.reductions and opts.reductions[0] == "steps 20 -> 3"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.steps = 1
    assert opts.derive(workers=0).workers == 0 and opts.workers is None


# functions that may take or read the command line's Namespace: the CLI's own
CLI_FUNCTIONS = {"main", "_main", "resolve", "build_parser", "parser", "from_namespace", "resolve_one",
                 "flags_for"}


def _namespace_readers(path: Path) -> list[str]:
    """Functions outside CLI_FUNCTIONS that take a parameter named ``args`` (or annotated ``Namespace``), or
    read attributes of a name ``args`` they did not get from ``parse_args`` themselves."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name in CLI_FUNCTIONS:
            continue
        params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        takes = [a.arg for a in params if a.arg == "args" or
                 (a.annotation is not None and "Namespace" in ast.unparse(a.annotation))]
        reads = any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args"
                    for n in ast.walk(node))
        parsed = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "parse_args"
                     for n in ast.walk(node))
        if takes or (reads and not parsed):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return out


def _namespace_writes(path: Path) -> list[str]:
    """``args.x = ...`` or ``setattr(args, ...)`` anywhere, the CLI functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args":
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and \
                node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "args":
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_nothing_below_the_cli_reads_a_namespace_and_nothing_writes_one():
    sources = sorted((ROOT / "benchmarks").rglob("*.py"))
    assert [f for path in sources for f in _namespace_readers(path)] == []
    assert [f for path in sources for f in _namespace_writes(path)] == []
