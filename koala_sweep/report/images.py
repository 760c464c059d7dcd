"""PNG and PDF figures of a report, rendered by kaleido with a local Chromium (Debian's
``chromium``); one browser for all figures."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.io as pio

from .figures import table_figure
from .panels import Panel

WIDTH = 1400


class ImageExportError(RuntimeError):
    pass


def slug(text: str) -> str:
    """A file-name-safe form of a study name or panel title."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "figure"


def write_images(panels: list[Panel], folder: Path, fmt: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    figs, paths = [], []
    n = 0
    for panel in panels:
        items = list(panel.figures)
        if panel.table is not None:
            items.insert(0, ("table", table_figure(panel.table)))
        for subtitle, fig in items:
            n += 1
            name = f"{n:02d}-{slug(panel.kind)}" + (f"-{slug(subtitle)}" if subtitle else "")
            fig = fig.update_layout(
                title=dict(
                    text=panel.title + (f": {subtitle}" if subtitle and subtitle != "table" else "")
                )
            )
            figs.append(fig)
            paths.append(folder / f"{name}.{fmt}")
    try:
        pio.write_images(figs, paths, format=fmt, width=WIDTH)
    except Exception as err:  # kaleido reports a missing browser in several ways
        raise ImageExportError(
            f"cannot render {fmt.upper()} figures: {err}. kaleido needs a Chromium: "
            "on Debian, apt-get install chromium (scripts/setup.sh does)."
        ) from None
    return paths
