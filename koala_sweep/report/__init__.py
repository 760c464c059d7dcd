"""Reports and the live dashboard: figures from the analyses of a study, laid out by a layout
file from ``dashboards/``. Reads the store only."""

from __future__ import annotations

from pathlib import Path

from ..store import Store
from .data import StudyAnalysis, StudyData, load_study_data
from .html import report_html
from .images import slug as _slug
from .layout import DEFAULT_LAYOUT, Layout, LayoutError, load_layout
from .panels import Panel, build_panels

FORMATS = ("html", "png", "pdf")

__all__ = [
    "DEFAULT_LAYOUT",
    "FORMATS",
    "Layout",
    "LayoutError",
    "Panel",
    "StudyAnalysis",
    "StudyData",
    "build_panels",
    "load_layout",
    "load_study_data",
    "write_report",
]


def _counts(data: StudyData) -> dict[str, int]:
    from ..store.models import TRIAL_STATES

    states = data.trials["state"].value_counts()
    return {s: int(states.get(s, 0)) for s in TRIAL_STATES}


def write_report(
    store: Store,
    study: str,
    output: Path | None = None,
    fmt: str = "html",
    layout: Layout | None = None,
) -> list[Path]:
    """Write the report of ``study``; returns the files written.

    ``html``: one self-contained file (default ``reports/<study>.html``). ``png`` and ``pdf``:
    a folder (default ``reports/<study>-<fmt>/``) with the summary table and every figure as
    its own file, numbered in the layout's order: figures ready for a paper."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (known: {', '.join(FORMATS)})")
    layout = layout or load_layout()
    data = load_study_data(store, study)
    panels = build_panels(StudyAnalysis(data), layout)
    if fmt == "html":
        path = Path(output) if output else Path("reports") / f"{_slug(study)}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = report_html(data.record, panels, layout.title, store.url, _counts(data))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a reader never sees half a report
        return [path]
    from .images import write_images

    folder = Path(output) if output else Path("reports") / f"{_slug(study)}-{fmt}"
    return write_images(panels, folder, fmt)
