"""The report: one self-contained HTML file (plotly.js inlined, no network request), the
summary table first, then every panel of the layout, the study file and the environment."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from functools import lru_cache

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .. import __version__
from ..store.url import mask_url
from .panels import Panel

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 0 0 8px; }
h3 { font-size: 15px; margin: 12px 0 0; color: #444; }
.meta { color: #555; font-size: 14px; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 16px 20px;
          margin: 16px 0; }
table.data { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
table.data th, table.data td { border-bottom: 1px solid #e6e6e6; padding: 5px 12px;
                               text-align: left; white-space: nowrap; }
table.data th { background: #eef2f8; white-space: normal; vertical-align: bottom; }
.scroll { overflow-x: auto; }
ul.verdict { font-size: 15px; line-height: 1.5; padding-left: 20px; }
.note { color: #666; font-size: 13px; margin: 6px 0 0; }
.empty { color: #a33; font-weight: 600; }
pre { background: #f4f4f4; padding: 12px; overflow-x: auto; font-size: 13px; }
nav { font-size: 14px; } nav a { margin-right: 12px; color: #1f5fbf; }
"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    return get_plotlyjs()


def table_html(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return (
        f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def panel_html(panel: Panel, index: int) -> str:
    parts = [
        f'<section class="panel" id="panel-{index}" data-kind="{panel.kind}">',
        f"<h2>{html.escape(panel.title)}</h2>",
    ]
    if panel.description:
        parts.append(f"<p>{html.escape(panel.description)}</p>")
    if panel.lines:
        parts.append(
            '<ul class="verdict">'
            + "".join(f"<li>{html.escape(line)}</li>" for line in panel.lines)
            + "</ul>"
        )
    if panel.table is not None:
        parts.append(table_html(panel.table))
    for j, (subtitle, fig) in enumerate(panel.figures):
        if subtitle:
            parts.append(f"<h3>{html.escape(subtitle)}</h3>")
        parts.append(
            pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=False,
                config=PLOT_CONFIG,
                div_id=f"figure-{index}-{j}",
            )
        )
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in panel.notes]
    parts.append("</section>")
    return "\n".join(parts)


def report_html(
    record: dict, panels: list[Panel], title: str, storage_url: str, counts: dict[str, int]
) -> str:
    """The whole report. ``storage_url`` is shown with any password masked."""
    name = record["name"]
    finished = sum(v for k, v in counts.items() if k != "RUNNING")
    meta = (
        f"workload <b>{html.escape(record['workload'])}</b> · metric "
        f"<b>{html.escape(record['metric'])}</b> ({html.escape(record['direction'])}) · "
        f"{sum(counts.values())} trials ("
        + ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v)
        + f") · device {html.escape(str(record.get('device') or ''))} · "
        f"started {html.escape(str(record['created_at'])[:19])}"
    )
    nav = "".join(f'<a href="#panel-{i}">{html.escape(p.title)}</a>' for i, p in enumerate(panels))
    body = [f"<h1>{html.escape(name)}: {html.escape(title)}</h1>", f'<p class="meta">{meta}</p>']
    if finished == 0:
        body.append(
            '<p class="empty" id="no-finished">This study has no finished trials yet: '
            "the panels below are empty until the first trial completes.</p>"
        )
    body.append(f"<nav>{nav}</nav>")
    body += [panel_html(p, i) for i, p in enumerate(panels)]
    versions = dict(record.get("package_versions") or {})
    env = pd.DataFrame(
        [
            ("store", mask_url(storage_url)),
            ("device", record.get("device") or ""),
            (
                "Ray dashboard (while the study ran)",
                record.get("ray_dashboard_url") or "not recorded",
            ),
            *versions.items(),
            ("report written by", f"koala-sweep {__version__}"),
            ("report written at", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ],
        columns=["", ""],
    )
    body.append(
        '<section id="study-file"><h2>Study file</h2><pre>'
        + html.escape(record.get("spec_yaml") or "")
        + "</pre></section>"
    )
    body.append('<section id="environment"><h2>Environment</h2>' + table_html(env) + "</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(name)} - koala-sweep report</title>"
        f"<style>{CSS}</style>"
        # Inlined so that the file works offline and makes no network request.
        f'<script type="text/javascript">{plotly_js()}</script>'
        "</head><body><main>" + "\n".join(body) + "</main></body></html>\n"
    )
