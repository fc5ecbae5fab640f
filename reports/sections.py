"""The report's sections: each one function, registered in order with ``@report_section``.

A section is a function ``f(ctx: ReportContext) -> str | None``: it returns its markdown (without its heading),
or None to be left out of this report. ``render(ctx)`` calls the registered sections in ``order`` and joins
what they return with blank lines. Everything the built-in sections compute from the run records (cell
statistics, the teachers' top-1, the cost table, the significance tests, the figures) lives on the
``ReportContext``, computed on first use and shared by every section after it.

Headings. A section registered with a ``title`` gets a ``## `` heading above its text; one without a title
writes its text as it is (the title block, the summary, the grid, the teachers). The built-in sections 1 to 10
carry fixed numbers (``number=``), since the report's text refers to them ("section 9"). A titled section
added without a number:

- placed after every built-in numbered section (``order`` above ``LAST_BUILTIN_ORDER``, e.g. 110, 120, ...) is
  numbered on from the last number this report shows: ``## 10. <title>`` in a report without the sweeps
  section (10 is left out when a grid has neither a sweep nor a validation split), ``## 11. <title>`` in one
  with it, the next one ``## 12.``, and so on;
- placed among the built-in sections (``order`` between two of theirs) is unnumbered, ``## <title>``, so that
  no built-in section's number, nor a reference to it, ever shifts;
- registered with ``numbered=False`` is unnumbered wherever it is.

A section left out (its function returned None) takes no number.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import pandas as pd

from kdcore import MethodCatalogue
from kdcore.text import plural

from . import aggregate as agg
from . import significance as sig
from . import tables

__all__ = ["ReportContext", "Section", "report_section", "unregister_section", "registered_sections", "render",
           "grid_header", "LAST_BUILTIN_ORDER"]


class ReportContext:
    """What a section reads: ``res`` (``aggregate.Results``), ``published`` (the reference table: a path, a
    DataFrame or None for the packaged one), ``catalogue`` (the method registry or None), and the values computed
    from them, each computed once per report, on first use:

    - ``last``, ``best``: ``aggregate.cell_stats`` of last-epoch and best-epoch test top-1;
    - ``teacher``: each pair's teacher top-1 (``aggregate.teacher_top1``); ``cost``: ``aggregate.cost_table``;
    - ``fidelity``: column -> ``cell_stats`` for each of ``aggregate.FIDELITY_COLUMNS``;
    - ``friedman``: ``significance.friedman_test`` on ``last``; ``paired``: reference ("vanilla", "kd") ->
      ``significance.paired_differences``;
    - ``figures``: the figures drawn under results_dir/figures (drawn when first asked for), the critical-difference
      diagram aside, which is ``cd_figure`` (None when not drawn);
    - ``groups``: each pair's teachers as the records name them (``tables.teacher_groups``).
    """

    def __init__(self, res: agg.Results, published=None, catalogue: MethodCatalogue | None = None):
        self.res = res
        self.published = published
        self.catalogue = catalogue

    @cached_property
    def last(self) -> pd.DataFrame:
        return agg.cell_stats(self.res, "top1_last")

    @cached_property
    def best(self) -> pd.DataFrame:
        return agg.cell_stats(self.res, "top1_best")

    @cached_property
    def teacher(self):
        return agg.teacher_top1(self.res)

    @cached_property
    def cost(self) -> pd.DataFrame:
        return agg.cost_table(self.res)

    @cached_property
    def fidelity(self) -> dict[str, pd.DataFrame]:
        return {col: agg.cell_stats(self.res, col) for col in agg.FIDELITY_COLUMNS}

    @cached_property
    def friedman(self) -> sig.Friedman:
        return sig.friedman_test(self.res, self.last)

    @cached_property
    def paired(self) -> dict[str, Any]:
        return {r: sig.paired_differences(self.res, r) for r in (agg.VANILLA, agg.KD)}

    @cached_property
    def _all_figures(self) -> list:
        from . import figures  # matplotlib is imported only when a report is built
        return figures.make_figures(self.res, self.last, self.teacher, self.cost, self.fidelity["agreement_last"],
                                    self.friedman, self.catalogue)

    @cached_property
    def figures(self) -> list:
        return [f for f in self._all_figures if f.key != "cd"]  # the diagram is drawn in section 9, beside its test

    @cached_property
    def cd_figure(self):
        return next((f for f in self._all_figures if f.key == "cd"), None)

    @cached_property
    def groups(self) -> dict:
        return tables.teacher_groups(self.res)


SectionFunction = Callable[[ReportContext], "str | None"]


@dataclass(frozen=True)
class Section:
    """One registered section: ``render(ctx)`` gives its text (None: left out of this report)."""
    name: str
    order: float
    title: str | None
    number: int | None  # a fixed number (the built-in sections 1 to 10)
    numbered: bool
    render: SectionFunction


_SECTIONS: dict[str, Section] = {}
LAST_BUILTIN_ORDER = 100  # the order of the last built-in section (10. Sweeps); see the module's docstring


def report_section(order: float, title: str | None = None, *, name: str | None = None, number: int | None = None,
                   numbered: bool = True) -> Callable[[SectionFunction], SectionFunction]:
    """Register the decorated function ``f(ctx: ReportContext) -> str | None`` as a report section.

    order: where it goes (the built-in sections: 0 to 4 for the title block, the summary, the grid, the
    teacher warnings and the teachers, then ``10 * n`` for section n, up to 100); title: its ``## `` heading
    (None: no heading); name: its key in the registry (default: the function's name); number: a fixed number
    (the built-in sections); numbered: False for a titled section that never takes a number. How a titled section
    without a fixed number is numbered: the module's docstring. Raises ``ValueError`` when the name or the order
    is already registered. The function is returned unchanged.
    """
    def register(fn: SectionFunction) -> SectionFunction:
        key = name or fn.__name__
        if key in _SECTIONS:
            raise ValueError(f"a report section named {key!r} is already registered")
        clash = next((s.name for s in _SECTIONS.values() if s.order == order), None)
        if clash is not None:
            raise ValueError(f"report section {key!r}: order {order!r} is already taken by {clash!r}")
        _SECTIONS[key] = Section(key, order, title, number, numbered, fn)
        return fn
    return register


def unregister_section(name: str) -> Section:
    """Remove the section registered under ``name`` and return it (``KeyError`` when there is none)."""
    return _SECTIONS.pop(name)


def registered_sections() -> list[Section]:
    """The registered sections in the order they are rendered."""
    return sorted(_SECTIONS.values(), key=lambda s: s.order)


def render(ctx: ReportContext) -> str:
    """The report's markdown: every registered section's text, in order, under its heading, joined by blank
    lines; the ones that return None are left out."""
    parts: list[str] = []
    shown = 0  # the highest number shown so far
    for s in registered_sections():
        body = s.render(ctx)
        if body is None:
            continue
        if s.title is None:
            parts.append(body)
            continue
        n = s.number
        if n is None and s.numbered and s.order > LAST_BUILTIN_ORDER:
            n = shown + 1
        if n is not None:
            shown = max(shown, n)
        parts.append(f"## {'' if n is None else f'{n}. '}{s.title}\n\n{body}")
    return "\n\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------- the built-in sections
def grid_header(res: agg.Results) -> str:
    """The grid's lines under **Grid**: dataset, runs, methods and pairs, protocol and what is special."""
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


@report_section(order=0)
def title_block(ctx: ReportContext) -> str:
    return f"# KD benchmark report: {ctx.res.grid.name}"


@report_section(order=1)
def summary(ctx: ReportContext) -> str:
    return tables.summary_section(ctx.res, ctx.last, ctx.paired[agg.VANILLA], ctx.friedman)


@report_section(order=2)
def grid(ctx: ReportContext) -> str:
    return "**Grid**\n\n" + grid_header(ctx.res)


@report_section(order=3)
def teacher_warnings(ctx: ReportContext) -> str | None:
    return "\n\n".join(tables.teacher_warnings(ctx.groups)) or None  # one paragraph per pair with mixed teachers


@report_section(order=4)
def teachers(ctx: ReportContext) -> str:
    return ("**Teachers**\n\n" + tables.teacher_section(ctx.res, ctx.groups)
            + "\n\nEach pair's teacher as its runs' records name it; test top-1 on this grid's test set."
            + tables.teacher_reference_note(ctx.res, ctx.groups))


@report_section(order=10, title="Top-1 accuracy, last epoch (RepDistiller's convention)", number=1)
def top1_last(ctx: ReportContext) -> str:
    return tables.accuracy_tables(ctx.res, ctx.last, ctx.teacher) + "\n\n" + tables.ACCURACY_FOOTNOTE


@report_section(order=20, title="Top-1 accuracy, best epoch (mdistiller's convention)", number=2)
def top1_best(ctx: ReportContext) -> str:
    return (tables.accuracy_tables(ctx.res, ctx.best, ctx.teacher)
            + "\n\nSame layout and marks as table 1, on each run's best-epoch test top-1 "
              "(an optimistic number: the epoch is picked on the test set).")


@report_section(order=30, title="Gains and average rank (last epoch)", number=3)
def gains(ctx: ReportContext) -> str:
    return (tables.gain_section(ctx.res, agg.mean_table(ctx.last))
            + " Whether these differences are more than seed noise: section 9.")


@report_section(order=40, title="Published numbers", number=4)
def published(ctx: ReportContext) -> str:
    return tables.published_section(ctx.res, ctx.last, ctx.best, ctx.teacher, ctx.published, ctx.catalogue)


@report_section(order=50, title="Training cost", number=5)
def cost(ctx: ReportContext) -> str:
    return tables.cost_section(ctx.res, ctx.cost)


@report_section(order=60, title="Run inventory", number=6)
def inventory(ctx: ReportContext) -> str:
    return tables.inventory_section(ctx.res)


@report_section(order=70, title="Fidelity to the teacher (last epoch)", number=7)
def fidelity(ctx: ReportContext) -> str:
    return tables.fidelity_section(ctx.res, ctx.fidelity)


@report_section(order=80, title="Figures", name="figures", number=8)
def figures_section(ctx: ReportContext) -> str:
    return "\n\n".join(f"**{f.title}**: {f.caption}\n\n![{f.title}]({f.file})" if f.made
                       else f"**{f.title}**: _skipped: {f.note}._" for f in ctx.figures)


@report_section(order=90, title="Is the gain real? (last epoch)", number=9)
def significance(ctx: ReportContext) -> str:
    return tables.significance_section(ctx.res, ctx.friedman, ctx.paired, ctx.cd_figure)


@report_section(order=LAST_BUILTIN_ORDER, title="Sweeps: sensitivity and tuned results", number=10)
def sweeps(ctx: ReportContext) -> str | None:
    g = ctx.res.grid
    if not (g.swept or g.val_fraction):  # a grid with neither keeps the report it always had
        return None
    val = agg.cell_stats(ctx.res, "val_top1_last") if g.val_fraction else None
    return ("**Sensitivity** (test top-1 against each swept value)\n\n"
            + tables.sensitivity_section(ctx.res, ctx.last, val)
            + "\n\n**Tuned** (each method at its best value on the validation split)\n\n"
            + tables.tuned_section(ctx.res, ctx.teacher))
