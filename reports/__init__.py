"""Reports of a benchmark grid: ``build_report(results_dir)`` writes ``report.md`` and ``figures/*.png``.

Command line: ``python -m reports results/<grid>``. Everything is computed from the run records
(``kdcore.records``) and the grid's ``grid.json``; re-running on the same records writes
byte-identical files (fixed orders, no timestamps, PNGs without software/date metadata).
"""
from __future__ import annotations

from pathlib import Path

from kdcore import MethodCatalogue, records
from kdcore.text import plural

from . import aggregate as agg
from . import significance as sig
from . import tables
from .aggregate import NoResultsError, load_results

__all__ = ["build_report", "render_report", "NoResultsError", "load_results"]


def _header(res: agg.Results) -> str:
    g = res.grid
    c = res.counts()
    runs = f"{c['complete']} complete, {c['failed']} failed, {c['missing']} missing"
    for s in ("running", "corrupt", "not_applicable"):
        if c[s]:
            runs += f", {c[s]} {s.replace('_', ' ')}"
    rows = len(agg.method_order(g))
    methods = plural(len(g.methods), 'method') + (f" ({rows} with their swept values)" if g.swept else "")
    runs += (f" (of {c['expected']} expected = {methods} × {plural(len(g.pairs), 'pair')}"
             f" × {plural(len(g.seeds), 'seed')})")
    proto = agg.protocol_summary(g.config)
    epochs = sorted({int(e) for e in res.complete["epochs"].dropna()})
    if epochs and "epochs=" not in proto:
        proto = (proto + ", " if proto else "") + "epochs run=" + "/".join(map(str, epochs))
    n_same = sum(agg.is_same_arch(*agg.parse_pair(p)) for p in g.pairs)
    lines = [
        f"- **Dataset**: {g.dataset} · **preset**: {g.preset} · **seeds**: {', '.join(map(str, g.seeds)) or '–'}",
        f"- **Runs**: {runs}",
        f"- **Methods**: {', '.join(g.methods) or '–'} · **pairs**: {len(g.pairs)} "
        f"({n_same} same-architecture, {len(g.pairs) - n_same} cross-architecture)",
        f"- **Protocol**: {proto or 'not recorded in grid.json'}",
    ]
    if g.val_fraction:
        lines.append(f"- **Validation split**: {g.val_fraction:g} of the training set, stratified and seeded, held "
                     f"out from teachers and students and evaluated every epoch (section 9)")
    if g.student_fraction != 1:
        lines.append(f"- **Student subset**: the students trained on {g.student_fraction:g} of the training set "
                     f"(stratified, seeded, the same images for every run); the teachers on all of it")
    if g.swept:
        lines.append("- **Sweeps**: " + "; ".join(f"{m}: {', '.join(g.labels(m))}" for m in g.methods
                                                   if g.labels(m) != [m]) + " (section 9)")
    if res.stale:
        were = "record made under another protocol was" if res.stale == 1 else \
            "records made under another protocol were"
        lines.append(f"- **{res.stale} {were} moved to runs/stale/ and are not in this report** "
                     "(the grid was rerun with a changed protocol; those runs were redone or are missing).")
    if not g.from_file:
        lines.append("- _No usable grid.json: methods, pairs and seeds are inferred from the records, and "
                     "a run counts as missing when that product lacks it._")
    return "\n".join(lines)


def render_report(res: agg.Results, published=None, catalogue: MethodCatalogue | None = None) -> str:
    """The markdown text (and, as a side effect, the figures under results_dir/figures). ``catalogue``: the method
    registry as ``methods.CATALOGUE`` gives it (colours, the published protocol's hyperparameters)."""
    from . import figures  # matplotlib is imported only when a report is built

    last = agg.cell_stats(res, "top1_last")
    best = agg.cell_stats(res, "top1_best")
    teacher = agg.teacher_top1(res)
    cost = agg.cost_table(res)
    fidelity = {col: agg.cell_stats(res, col) for col in agg.FIDELITY_COLUMNS}
    friedman = sig.friedman_test(res, last)
    paired = {r: sig.paired_differences(res, r) for r in (agg.VANILLA, agg.KD)}
    figs = figures.make_figures(res, last, teacher, cost, fidelity["agreement_last"], friedman, catalogue)
    cd_fig = next((f for f in figs if f.key == "cd"), None)
    figs = [f for f in figs if f.key != "cd"]  # drawn in section 9, beside its test

    groups = tables.teacher_groups(res)
    sec = [f"# KD benchmark report: {res.grid.name}",
           tables.summary_section(res, last, paired[agg.VANILLA], friedman),
           "**Grid**\n\n" + _header(res)]
    sec += tables.teacher_warnings(groups)
    sec.append("**Teachers**\n\n" + tables.teacher_section(res, groups)
               + "\n\nEach pair's teacher as its runs' records name it; test top-1 on this grid's test set."
               + tables.teacher_reference_note(res, groups))
    sec.append("## 1. Top-1 accuracy, last epoch (RepDistiller's convention)\n\n"
               + tables.accuracy_tables(res, last, teacher) + "\n\n" + tables.ACCURACY_FOOTNOTE)
    sec.append("## 2. Top-1 accuracy, best epoch (mdistiller's convention)\n\n"
               + tables.accuracy_tables(res, best, teacher)
               + "\n\nSame layout and marks as table 1, on each run's best-epoch test top-1 "
                 "(an optimistic number: the epoch is picked on the test set).")
    sec.append("## 3. Gains and average rank (last epoch)\n\n" + tables.gain_section(res, agg.mean_table(last))
               + " Whether these differences are more than seed noise: section 9.")
    sec.append("## 4. Published numbers\n\n" + tables.published_section(res, last, best, teacher, published, catalogue))
    sec.append("## 5. Training cost\n\n" + tables.cost_section(res, cost))
    sec.append("## 6. Run inventory\n\n" + tables.inventory_section(res))
    fig_md = []
    for f in figs:
        if f.made:
            fig_md.append(f"**{f.title}**: {f.caption}\n\n![{f.title}]({f.file})")
        else:
            fig_md.append(f"**{f.title}**: _skipped: {f.note}._")
    sec.append("## 7. Fidelity to the teacher (last epoch)\n\n"
               + tables.fidelity_section(res, fidelity, agg.teacher_ece(res)))
    sec.append("## 8. Figures\n\n" + "\n\n".join(fig_md))
    sec.append("## 9. Is the gain real? (last epoch)\n\n" + tables.significance_section(res, friedman, paired, cd_fig))
    if res.grid.swept or res.grid.val_fraction:  # a grid with neither keeps the report it always had
        val = agg.cell_stats(res, "val_top1_last") if res.grid.val_fraction else None
        sec.append("## 10. Sweeps: sensitivity and tuned results\n\n**Sensitivity** (test top-1 against each "
                   "swept value)\n\n" + tables.sensitivity_section(res, last, val)
                   + "\n\n**Tuned** (each method at its best value on the validation split)\n\n"
                   + tables.tuned_section(res, teacher))
    return "\n\n".join(sec).rstrip() + "\n"


def build_report(results_dir, published=None, catalogue: MethodCatalogue | None = None) -> Path:
    """Write ``results_dir/report.md`` and ``results_dir/figures/*.png``; return the report's path.

    published: the reference table (path or DataFrame); default: the packaged CIFAR-100 CSV.
    catalogue: the method registry (``methods.CATALOGUE``); without it, colours are reserved for the presets'
    methods only and method hyperparameters are not compared with the published protocol.
    Raises ``NoResultsError`` when the directory has neither grid.json nor run records.
    """
    res = load_results(results_dir)
    text = render_report(res, published, catalogue)
    path = Path(results_dir) / "report.md"
    records.atomic_write_text(path, text)  # UTF-8 whatever the locale (the tables hold ±, →, †)
    return path
