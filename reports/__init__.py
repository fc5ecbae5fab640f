"""Reports of a benchmark grid: ``build_report(results_dir)`` writes ``report.md`` and ``figures/*.png``.

Command line: ``python -m reports results/<grid>``. Everything is computed from the run records
(``kdcore.records``) and the grid's ``grid.json``; re-running on the same records writes
byte-identical files (fixed orders, no timestamps, PNGs without software/date metadata).
"""
from __future__ import annotations

from pathlib import Path

from kdcore import MethodCatalogue, records

from . import aggregate as agg
from . import sections
from .aggregate import NoResultsError, load_results
from .sections import ReportContext, Section, registered_sections, report_section, unregister_section

__all__ = ["build_report", "render_report", "NoResultsError", "load_results", "report_section",
           "unregister_section", "registered_sections", "ReportContext", "Section"]



def render_report(res: agg.Results, published=None, catalogue: MethodCatalogue | None = None) -> str:
    """The markdown text (and, as a side effect, the figures under results_dir/figures). ``catalogue``: the method
    registry as ``methods.CATALOGUE`` gives it (colours, the published protocol's hyperparameters).

    The text is the registered sections (``reports.sections``: ``@report_section``) in order, each given one
    ``ReportContext`` that computes the shared numbers once."""
    return sections.render(sections.ReportContext(res, published, catalogue))


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
