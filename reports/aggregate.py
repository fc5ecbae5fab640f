"""Load a results directory (grid.json + run records) into pandas tables and summarise them.

Everything here is pure computation: no formatting, no plotting. Orders are fixed
(grid order for methods, pairs and seeds) so that every table built from these
frames comes out the same on every run.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import scipy.stats

from kdcore.metrics import Metric, list_metrics
from kdcore.models.registry import model_family
from kdcore.records import (Cost, Metrics, RunRecord, UnreadableRecord, iter_records, metrics_path,
                                run_id as make_run_id)

__all__ = [
    "Grid",
    "Results",
    "NoResultsError",
    "load_results",
    "family",
    "is_same_arch",
    "parse_pair",
    "t_quantile",
    "cell_stats",
    "best_and_indistinguishable",
    "mean_table",
    "gain_table",
    "collapsed_cells",
    "COLLAPSE_FRACTION",
    "average_ranks",
    "cost_table",
    "cohort_memory_table",
    "teacher_top1",
    "FIDELITY_COLUMNS",
    "teacher_column",
    "method_order",
    "not_applicable_cells",
    "tuned_choice",
    "protocol_summary",
    "count_stale",
]

TEACHER = "teacher"
VANILLA = "vanilla"
KD = "kd"
STATUSES = ("complete", "running", "failed", "corrupt", "missing", "not_applicable")


class NoResultsError(FileNotFoundError):
    """The directory has neither a grid.json nor any run record."""


# ---------------------------------------------------------------------------- model families
def family(model: str) -> str:
    """Architecture family of a model name (``kdcore.models.registry.model_family``):
    resnet8, ResNet50 and timm:resnet18 are all ``resnet``; MobileNetV2 is ``mobilenet``."""
    return model_family(model)


def is_same_arch(teacher: str, student: str) -> bool:
    return family(teacher) == family(student)


def parse_pair(pair: str) -> tuple[str, str]:
    """``"teacher:student"`` -> (teacher, student); ``timm:<name>`` models keep their prefix."""
    tokens = pair.split(":")
    models: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "timm" and i + 1 < len(tokens):
            models.append(f"timm:{tokens[i + 1]}")
            i += 2
        else:
            models.append(tokens[i])
            i += 1
    if len(models) != 2:
        raise ValueError(f"cannot read pair {pair!r}: expected 'teacher:student'")
    return models[0], models[1]


# ---------------------------------------------------------------------------- statistics
def t_quantile(df: int) -> float:
    """Two-sided 95% Student-t critical value t_{0.975, df} (``scipy.stats.t``; NaN for df < 1)."""
    if df < 1:
        return float("nan")
    return float(scipy.stats.t.ppf(0.975, df))


# ---------------------------------------------------------------------------- loading
@dataclass
class Grid:
    name: str
    preset: str
    dataset: str
    methods: list[str]
    pairs: list[str]
    seeds: list[int]
    config: dict = field(default_factory=dict)
    from_file: bool = True
    # a swept method's runs (grid.json "variants"): method -> [{"label": "kd[T=2]", "sweep": {"kd.T": 2.0}}]
    variants: dict = field(default_factory=dict)

    def labels(self, method: str) -> list[str]:
        """A method's rows: its swept variants' labels (``kd[T=2]``), or the method itself."""
        return [str(v["label"]) for v in self.variants.get(method, [])] or [method]

    def base_method(self) -> dict[str, str]:
        """Row label -> its method (``kd[T=2]`` -> ``kd``)."""
        return {label: m for m in self.methods for label in self.labels(m)}

    def sweep_of(self) -> dict[str, dict]:
        """Row label -> its swept values (``{}`` for a method no sweep touched)."""
        out = {m: {} for m in self.methods}
        for m, vs in self.variants.items():
            for v in vs:
                out[str(v["label"])] = dict(v.get("sweep") or {})
        return out

    @property
    def swept(self) -> bool:
        return any(self.labels(m) != [m] for m in self.methods)

    @property
    def val_fraction(self) -> float:
        return _num(self.config.get("val_fraction")) if self.config.get("val_fraction") else 0.0

    @property
    def student_fraction(self) -> float:
        """The fraction of the training set the students trained on (1: all of it, as the teachers)."""
        return _num(self.config.get("student_fraction")) if self.config.get("student_fraction") else 1.0

    def expected_ids(self) -> list[tuple[str, str, str, int]]:
        """(run_id, row label, pair, seed) for every expected run: methods (each swept value of a swept one)
        x pairs x seeds, grid order."""
        out = []
        for m in self.methods:
            for label in self.labels(m):
                for p in self.pairs:
                    t, s = parse_pair(p)
                    for seed in self.seeds:
                        out.append((make_run_id(label, t, s, seed), label, p, seed))
        return out


@dataclass
class Results:
    results_dir: Path
    grid: Grid
    runs: pd.DataFrame  # one row per expected run (grid order), then records outside the grid
    history: pd.DataFrame  # per-epoch test accuracy of complete runs
    stale: int = 0  # records under runs/stale/ (moved there when the grid's protocol changed)

    @property
    def in_grid(self) -> pd.DataFrame:
        return self.runs[self.runs["in_grid"]]

    @property
    def complete(self) -> pd.DataFrame:
        return self.runs[(self.runs["status"] == "complete") & self.runs["in_grid"]]

    def counts(self) -> dict[str, int]:
        g = self.in_grid
        c = {s: int((g["status"] == s).sum()) for s in STATUSES}
        c["other"] = int((~g["status"].isin(STATUSES)).sum())
        c["expected"] = len(g)
        c["extra"] = int((~self.runs["in_grid"]).sum())
        return c


class _FidelityColumns(Mapping):
    """Column -> the history entry's field, of every registered metric with a report column
    (``kdcore.metrics``), read from the registry on each use, so a metric registered later is in it:
    ``{"agreement_last": "test_agreement", "kl_teacher_last": "test_kl_teacher", "ece_last": "test_ece", ...}``."""

    def _columns(self) -> dict[str, str]:
        return {m.column: m.key for m in list_metrics() if m.column is not None}

    def __getitem__(self, column: str) -> str:
        return self._columns()[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns())

    def __len__(self) -> int:
        return len(self._columns())

    def __repr__(self) -> str:
        return f"FIDELITY_COLUMNS({self._columns()!r})"


# the evaluation's metrics at the last epoch (kdcore.metrics; agreement, KL, ECE: kdcore.fidelity): column ->
# the history entry's field
FIDELITY_COLUMNS = _FidelityColumns()


def teacher_column(metric: Metric) -> str | None:
    """The per-run column of the teacher's own value of ``metric`` (its ``teacher_info`` key: the ECE's
    ``teacher_ece``), or None."""
    return f"teacher_{metric.teacher_info}" if metric.teacher_info is not None else None


def _teacher_columns() -> list[str]:
    return [teacher_column(m) for m in list_metrics() if m.column is not None and m.teacher_info is not None]


def _run_columns() -> list[str]:
    """The per-run frame's columns: the registered metrics' (and their teachers') as they are now."""
    return [
        "run_id", "method", "base_method", "teacher", "student", "pair", "seed", "status", "in_grid", "val_top1_last",
        "top1_last", "top1_best", "best_epoch", "epochs", "teacher_top1",
        "time_s", "epoch_time_s", "images_per_s", "peak_mem_mb", "extra_params", "student_params",
        *FIDELITY_COLUMNS, *_teacher_columns(),
        "student_param_bytes", "method_param_bytes", "optimizer_state_bytes", "buffer_bytes", "cuda_peak_mb",
        "cuda_step_mb", "cohort", "cohort_peak_rss_mb", "cohort_peak_rss_scope",
        "views", "error_type", "error_message", "error_epoch", "error_step", "epochs_done",
        "dataset", "config", "teacher_info",
    ]


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def _first_line(text: Any) -> str:
    if text is None:
        return ""
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _read_grid(results_dir: Path) -> dict | None:
    path = results_dir / "grid.json"
    if not path.is_file():
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _infer_grid(results_dir: Path, records: list[RunRecord | UnreadableRecord], raw: dict | None) -> Grid:
    raw = raw or {}
    good = [r for r in records if isinstance(r, RunRecord)]
    # each once: a grid.json written before duplicates were refused (--methods kd,kd) lists them twice
    methods = list(dict.fromkeys(raw.get("methods") or []))
    pairs = list(dict.fromkeys(raw.get("pairs") or []))
    seeds = list(dict.fromkeys(raw.get("seeds") or []))
    from_file = bool(raw)
    if not (methods and pairs and seeds):  # no usable grid.json: take what the records hold
        from_file = from_file and bool(methods and pairs and seeds)
        ms = {r.method for r in good}
        methods = methods or ([VANILLA] if VANILLA in ms else []) + sorted(ms - {VANILLA})
        pairs = pairs or list(dict.fromkeys(r.pair for r in good))
        seeds = seeds or sorted({r.seed for r in good})

    def first(values) -> str:
        return next((str(v) for v in values if v), "?")

    return Grid(
        name=str(raw.get("name") or results_dir.resolve().name),
        preset=str(raw.get("preset") or first(r.preset for r in good)),
        dataset=str(raw.get("dataset") or first(r.dataset for r in good)),
        methods=[str(m) for m in methods],
        pairs=[str(p) for p in pairs],
        seeds=[int(s) for s in seeds],
        config=raw.get("config") if isinstance(raw.get("config"), dict) else {},
        from_file=from_file,
        variants=raw.get("variants") if isinstance(raw.get("variants"), dict) else {},
    )


def _history_of(results_dir: Path, rec: RunRecord) -> list[dict]:
    """The main stage's per-epoch entries (a pre-training stage's, marked ``"stage"``, are left out): the
    record's, or, while it runs (its record's history is empty until it ends), its metrics.jsonl's."""
    if rec.history:
        return [h for h in rec.history if "stage" not in h]
    path = metrics_path(results_dir, rec.run_id)
    out = []
    if path.is_file():
        with open(path) as f:
            for line in f:
                try:
                    h = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(h, dict) and "stage" not in h:
                    out.append(h)
    return out


def _memory_fields(cost: Cost) -> dict:
    """A record's memory costs (NaN / "" in records written before they were kept)."""
    return {
        **{k: _num(getattr(cost, k)) for k in ("student_param_bytes", "method_param_bytes", "optimizer_state_bytes",
                                               "cuda_peak_mb", "cuda_step_mb", "cohort_peak_rss_mb")},
        "buffer_bytes": _num(cost.student_buffer_bytes) + _num(cost.method_buffer_bytes),
        "cohort": ",".join(map(str, cost.cohort)) if cost.cohort is not None else "",
        "cohort_peak_rss_scope": cost.cohort_peak_rss_scope or "",
    }


def _row_from_record(rec: RunRecord, hist: list[dict]) -> dict:
    metrics = rec.metrics or Metrics()
    cost = rec.cost or Cost()
    err = rec.error
    tinfo = rec.teacher_info or {}
    return {
        "run_id": rec.run_id,
        "method": rec.label,  # a swept run's row: its label, kd[T=2]
        "base_method": rec.method,
        # the validation split's top-1 at the last epoch (NaN without a split)
        "val_top1_last": _num(hist[-1].get("val_top1")) if hist else float("nan"),
        "teacher": rec.teacher,
        "student": rec.student,
        "pair": rec.pair,
        "seed": rec.seed,
        "status": rec.status,
        "top1_last": _num(metrics.top1_last),
        "top1_best": _num(metrics.top1_best),
        "best_epoch": _num(metrics.best_epoch),
        "epochs": _num(metrics.epochs),
        "teacher_top1": _num(tinfo.get("top1")),
        "time_s": _num(cost.time_s),
        "epoch_time_s": _num(cost.epoch_time_s),
        "images_per_s": _num(cost.images_per_s),
        "peak_mem_mb": _num(cost.peak_mem_mb),
        "extra_params": _num(cost.extra_params),
        "student_params": _num(cost.student_params),
        # NaN where the record predates the field, or its run had no teacher
        **{col: _num(hist[-1].get(key)) if hist else float("nan") for col, key in FIDELITY_COLUMNS.items()},
        # the teacher's own value (the ECE's: teacher_info["ece"]); NaN in records without it
        **{teacher_column(m): _num(tinfo.get(m.teacher_info)) for m in list_metrics()
           if m.column is not None and m.teacher_info is not None},
        **_memory_fields(cost),
        # other views of each batch (MLKD's strong one): a different augmentation protocol, more passes
        "views": "+".join(str(v) for v in cost.views or []),
        "error_type": err.type if err is not None else "",
        "error_message": _first_line(err.message) if err is not None else "",
        "error_epoch": _num(err.epoch) if err is not None else float("nan"),
        "error_step": _num(err.step) if err is not None else float("nan"),
        "epochs_done": float(len(hist)),
        "dataset": rec.dataset,
        "config": rec.config,
        "teacher_info": tinfo,
    }


def _unreadable_row(rec: UnreadableRecord) -> dict:
    """A file under runs/ that is no record this kdbench reads (damaged, another schema): listed, with why."""
    return {"run_id": rec.run_id, "status": rec.status, "error_type": rec.error.type,
            "error_message": _first_line(rec.error.message)}


def load_results(results_dir: Path | str) -> Results:
    results_dir = Path(results_dir)
    raw = _read_grid(results_dir)
    records = list(iter_records(results_dir)) if results_dir.is_dir() else []
    if not results_dir.is_dir():
        what = "a file, not a folder" if results_dir.exists() else "no such folder"
        raise NoResultsError(f"{results_dir}: {what}; pass a grid's folder, <results>/<grid> (python -m "
                             f"benchmarks.run prints it: 'grid NAME: ... -> FOLDER')")
    if raw is None and not records:
        grids = sorted(p.parent.name for p in results_dir.glob("*/grid.json")) if results_dir.is_dir() else []
        hint = (f"; it holds the grids {', '.join(grids)}: pass one, e.g. python -m reports {results_dir / grids[0]}"
                if grids else "")
        raise NoResultsError(f"{results_dir}: no grid.json and no run records under runs/{hint}")
    grid = _infer_grid(results_dir, records, raw)
    if not grid.expected_ids():  # grid.json unreadable and no record readable: nothing names a run
        raise NoResultsError(f"{results_dir}: grid.json is unreadable or incomplete and none of the "
                             f"{len(records)} files under runs/ is a readable run record; rerun the grid's "
                             f"python -m benchmarks.run command to redo them")

    by_id: dict[str, RunRecord | UnreadableRecord] = {}
    for rec in records:
        by_id.setdefault(rec.run_id, rec)  # iter_records is sorted by file name; first wins

    rows, hist_rows = [], []
    expected = grid.expected_ids()
    expected_set = {e[0] for e in expected}
    base = grid.base_method()
    for rid, method, pair, seed in expected:
        teacher, student = parse_pair(pair)
        rec = by_id.get(rid)
        if rec is None:
            row = {"run_id": rid, "status": "missing"}
        elif isinstance(rec, UnreadableRecord):
            row = _unreadable_row(rec)
        else:
            hist = _history_of(results_dir, rec)
            row = _row_from_record(rec, hist)
            if row["status"] == "complete":
                for h in hist:
                    ep, acc = _num(h.get("epoch")), _num(h.get("test_top1"))
                    if not (math.isnan(ep) or math.isnan(acc)):
                        hist_rows.append({"run_id": rid, "method": method, "pair": pair,
                                          "seed": seed, "epoch": int(ep), "test_top1": acc})
        # the grid decides where a run belongs; a record's own fields only fill in the rest
        row.update(method=method, base_method=base.get(method, method), pair=pair, teacher=teacher, student=student,
                   seed=seed, in_grid=True)
        rows.append(row)
    for rid in sorted(set(by_id) - expected_set):
        rec = by_id[rid]
        if isinstance(rec, UnreadableRecord):
            row = _unreadable_row(rec)
        else:
            row = _row_from_record(rec, _history_of(results_dir, rec))
        row["in_grid"] = False
        rows.append(row)

    runs = pd.DataFrame(rows, columns=_run_columns())
    runs["in_grid"] = runs["in_grid"].fillna(False).astype(bool)
    history = pd.DataFrame(hist_rows, columns=["run_id", "method", "pair", "seed", "epoch", "test_top1"])
    return Results(results_dir=results_dir, grid=grid, runs=runs, history=history,
                   stale=count_stale(results_dir))


def count_stale(results_dir: Path | str) -> int:
    """Run records under ``runs/stale/``: made under another protocol, moved aside by the runner."""
    stale = Path(results_dir) / "runs" / "stale"
    if not stale.is_dir():
        return 0
    # runs/stale/<fingerprint>/<run_id>.json (older runners moved the record alone: runs/stale/<run_id>.json)
    return sum(1 for f in [*stale.glob("*.json"), *stale.glob("*/*.json")] if f.is_file())


# ---------------------------------------------------------------------------- summaries
def method_order(grid: Grid) -> list[str]:
    """Student rows of the tables: vanilla first, then the grid's method order (a swept method: one row per
    swept value, ``kd[T=2]``, in sweep order)."""
    methods = ([VANILLA] if VANILLA in grid.methods else []) + [m for m in grid.methods if m != VANILLA]
    return [label for m in methods for label in grid.labels(m)]


def not_applicable_cells(res: Results) -> dict[tuple[str, str], str]:
    """(method, pair) -> why, for the cells whose in-grid runs all say the method cannot run the pair."""
    g = res.in_grid
    out = {}
    for (m, p), runs in g.groupby(["method", "pair"], sort=False):
        if len(runs) and (runs["status"] == "not_applicable").all():
            out[(str(m), str(p))] = str(runs["error_message"].iloc[0])
    return dict(sorted(out.items()))


def tuned_choice(res: Results) -> pd.DataFrame:
    """Per (method, pair), grid order: the row label whose mean validation top-1 at the last epoch (over its
    complete seeds) is highest, the first in sweep order on a tie, never looking at the test set. Columns:
    ``label``, ``val_mean``, ``val_n`` and the label's test top-1 (last epoch) ``mean``, ``std``, ``n``,
    ``half`` (``cell_stats``); label "" where no row of the method has a validation number."""
    val = cell_stats(res, "val_top1_last")
    test = cell_stats(res, "top1_last")
    g = res.grid
    methods = ([VANILLA] if VANILLA in g.methods else []) + [m for m in g.methods if m != VANILLA]
    rows = []
    for m in methods:
        for p in g.pairs:
            best, best_val = "", float("nan")
            for label in g.labels(m):
                v = val.at[(label, p), "mean"]
                if not math.isnan(v) and (math.isnan(best_val) or v > best_val):
                    best, best_val = label, v
            row = {"method": m, "pair": p, "label": best, "val_mean": best_val,
                   "val_n": int(val.at[(best, p), "n"]) if best else 0}
            row.update(test.loc[(best, p)].to_dict() if best else {"n": 0, "mean": float("nan"),
                                                                    "std": float("nan"), "half": float("nan")})
            rows.append(row)
    return pd.DataFrame(rows, columns=["method", "pair", "label", "val_mean", "val_n", "n", "mean", "std", "half"]
                        ).set_index(["method", "pair"])


def cell_stats(res: Results, metric: str = "top1_last") -> pd.DataFrame:
    """Per (method, pair): n, mean, std (ddof=1), half-width of the 95% t-interval, over seeds.

    Index: MultiIndex (method, pair) covering every grid cell, in grid order (n = 0 where no data).
    """
    done = res.complete.dropna(subset=[metric])
    out = []
    for m in method_order(res.grid):
        for p in res.grid.pairs:
            vals = done.loc[(done["method"] == m) & (done["pair"] == p), metric].to_numpy(dtype=float)
            n = len(vals)
            mean = float(np.mean(vals)) if n else float("nan")
            std = float(np.std(vals, ddof=1)) if n >= 2 else float("nan")
            half = t_quantile(n - 1) * std / math.sqrt(n) if n >= 2 else float("nan")
            out.append({"method": m, "pair": p, "n": n, "mean": mean, "std": std, "half": half})
    return pd.DataFrame(out).set_index(["method", "pair"])


def best_and_indistinguishable(col: pd.DataFrame) -> tuple[set[str], set[str]]:
    """For one pair's rows (index = method; columns mean, half): (bold methods, dagger methods).

    Bold: the highest mean (all of them on an exact tie). Dagger: not bold, and the cell's 95%
    t-interval overlaps the interval of some best cell. A cell or best with n < 2 has no interval.
    """
    col = col.dropna(subset=["mean"])
    if col.empty:
        return set(), set()
    top = col["mean"].max()
    best = {m for m, v in col["mean"].items() if abs(v - top) <= 1e-9}
    dagger = set()
    for m, row in col.iterrows():
        if m in best or math.isnan(row["half"]):
            continue
        for b in sorted(best):
            hb = col.at[b, "half"]
            if not math.isnan(hb) and abs(col.at[b, "mean"] - row["mean"]) <= hb + row["half"]:
                dagger.add(m)
    return best, dagger


def mean_table(stats: pd.DataFrame) -> pd.DataFrame:
    """methods x pairs of mean top-1 (NaN where no complete run), grid order kept."""
    t = stats["mean"].unstack("pair")
    methods = list(dict.fromkeys(stats.index.get_level_values("method")))
    pairs = list(dict.fromkeys(stats.index.get_level_values("pair")))
    return t.reindex(index=methods, columns=pairs)


def gain_table(means: pd.DataFrame, reference: str) -> pd.DataFrame | None:
    """Mean top-1 minus the reference method's mean top-1, per pair (None if no such row)."""
    if reference not in means.index:
        return None
    return means - means.loc[reference]


COLLAPSE_FRACTION = 0.5  # a cell whose mean top-1 is below this fraction of vanilla's on its pair collapsed


def collapsed_cells(means: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    """(method, pair) -> (its mean top-1, vanilla's) for every cell whose mean is below ``COLLAPSE_FRACTION``
    of the vanilla student's on the same pair (grid order; empty without a vanilla row)."""
    if VANILLA not in means.index:
        return {}
    out = {}
    for m in means.index:
        for p in means.columns:
            v, ref = float(means.at[m, p]), float(means.at[VANILLA, p])
            if m != VANILLA and not (math.isnan(v) or math.isnan(ref)) and v < COLLAPSE_FRACTION * ref:
                out[(str(m), str(p))] = (v, ref)
    return out


def average_ranks(means: pd.DataFrame) -> pd.DataFrame:
    """Rank per pair (1 = best mean; ties share the average rank) and its average over pairs.

    Returns a frame indexed by method with columns ``avg_rank`` and ``n_pairs`` (pairs ranked in).
    """
    ranks = means.rank(axis=0, ascending=False, method="average")
    return pd.DataFrame({"avg_rank": ranks.mean(axis=1, skipna=True), "n_pairs": ranks.notna().sum(axis=1)})


def teacher_top1(res: Results, column: str = "teacher_top1") -> dict[str, list[float]]:
    """Per pair, the distinct teacher top-1 values (or another teacher ``column``, e.g. ``teacher_ece``)
    found in its records (complete runs first)."""
    out: dict[str, list[float]] = {}
    g = res.in_grid
    for p in res.grid.pairs:
        sub = g[g["pair"] == p]
        order = pd.concat([sub[sub["status"] == "complete"], sub[sub["status"] != "complete"]])
        vals = [float(v) for v in order[column].dropna()]
        out[p] = list(dict.fromkeys(round(v, 6) for v in vals))
    return out


def cost_table(res: Results) -> pd.DataFrame:
    """Per method, averages over its complete runs of the cost fields (grid order)."""
    done = res.complete
    cols = ["epoch_time_s", "images_per_s", "student_param_bytes", "method_param_bytes", "optimizer_state_bytes",
            "buffer_bytes", "cuda_peak_mb", "cuda_step_mb", "extra_params", "time_s"]
    rows = []
    for m in method_order(res.grid):
        sub = done[done["method"] == m]
        row = {"method": m, "runs": len(sub)}
        for c in cols:
            v = sub[c].dropna()
            row[c] = float(v.mean()) if len(v) else float("nan")
        row["time_total_s"] = float(sub["time_s"].dropna().sum()) if sub["time_s"].notna().any() else float("nan")
        row["views"] = ", ".join(sorted({v for v in sub["views"] if v}))
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def _rank(items: list, x) -> int:
    return items.index(x) if x in items else len(items)


def cohort_memory_table(res: Results) -> pd.DataFrame:
    """One row per cohort whose complete runs recorded a process peak RSS (CPU runs): pair, seed, its
    methods (grid order), the peak and what it covers ("cohort" or "process"); in grid order."""
    done = res.complete
    done = done[done["cohort_peak_rss_mb"].notna() & (done["cohort"] != "")]
    methods, pairs, seeds = method_order(res.grid), list(res.grid.pairs), list(res.grid.seeds)
    rows = []
    for key, sub in done.groupby("cohort", sort=True):
        first = sub.iloc[0]
        rows.append({"pair": first["pair"], "seed": first["seed"],
                     "methods": ", ".join(sorted(sub["method"], key=lambda m: _rank(methods, m))),
                     "peak_rss_mb": float(sub["cohort_peak_rss_mb"].max()),
                     "scope": first["cohort_peak_rss_scope"], "cohort": key})
    rows.sort(key=lambda r: (_rank(pairs, r["pair"]), _rank(seeds, r["seed"]), r["cohort"]))
    return pd.DataFrame(rows, columns=["pair", "seed", "methods", "peak_rss_mb", "scope", "cohort"])


# ---------------------------------------------------------------------------- protocol line
_PROTOCOL_KEYS = [
    "epochs", "batch_size", "optimizer", "lr", "learning_rate", "lr_schedule", "schedule",
    "lr_decay_epochs", "milestones", "lr_decay_rate", "gamma", "momentum", "weight_decay",
    "warmup_epochs", "amp", "augment", "augmentation", "subset", "num_train",
]


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}{k}."))
    else:
        out.append((prefix[:-1], d))
    return out


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def protocol_summary(config: dict, max_items: int = 10) -> str:
    """A short ``key=value`` line of the training recipe found in the grid's config."""
    flat = _flatten(config or {})
    chosen: dict[str, str] = {}
    # skip per-method hyper-parameters; keep the shared recipe
    flat_recipe = [(k, v) for k, v in flat if not re.search(r"(^|\.)(methods?|hparams|overrides?)\.", k)]
    for key in _PROTOCOL_KEYS:
        for path, v in flat_recipe:
            leaf = path.rsplit(".", 1)[-1]
            if leaf == key and key not in chosen and not isinstance(v, dict):
                chosen[key] = _short(v)
    if not chosen:
        for path, v in flat_recipe:
            if "." not in path and isinstance(v, (int, float, str, bool)):
                chosen[path] = _short(v)
            if len(chosen) >= max_items:
                break
    return ", ".join(f"{k}={v}" for k, v in list(chosen.items())[:max_items])
