"""The live dashboard: a Dash app with a study picker, the same panels as the report (same
layout file), refreshed while a study runs.

Refreshing is cheap: every tick asks the store for a study's fingerprint (one aggregate query)
and rebuilds the panels only when a trial started, reported an epoch or finished; otherwise the
panels built last time are served again, so reloading the page with 10,000 trials in the store
does not re-read them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import dash
from dash import Input, Output, State, dcc, html

from ..store import Store
from ..store.reader import UnknownStudy, studies_frame, study_version
from .data import StudyAnalysis, load_study_data
from .html import CSS
from .layout import Layout
from .panels import Panel, build_panels

PLOT_CONFIG = {"displaylogo": False}


@dataclass
class _Built:
    version: tuple
    components: list
    meta: list
    seconds: float


class LiveStudies:
    """Panels per study, rebuilt only when the study's fingerprint changes (thread-safe)."""

    def __init__(self, store: Store, layout: Layout) -> None:
        self.store, self.layout = store, layout
        self._built: dict[str, _Built] = {}
        self._lock = threading.Lock()

    def get(self, study: str) -> _Built:
        version = study_version(self.store.engine, study)
        with self._lock:
            built = self._built.get(study)
            if built is not None and built.version == version:
                return built
            t0 = time.perf_counter()
            data = load_study_data(self.store, study)
            panels = build_panels(StudyAnalysis(data), self.layout)
            built = _Built(
                version,
                [_panel(p, i) for i, p in enumerate(panels)],
                _meta(data.record, len(data.trials)),
                time.perf_counter() - t0,
            )
            self._built[study] = built
            return built


def _table(frame) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(str(c)) for c in frame.columns])),
            html.Tbody(
                [html.Tr([html.Td(str(v)) for v in row]) for row in frame.itertuples(index=False)]
            ),
        ],
        className="data",
    )


def _panel(panel: Panel, index: int) -> html.Section:
    children: list = [html.H2(panel.title)]
    if panel.description:
        children.append(html.P(panel.description))
    if panel.lines:
        children.append(html.Ul([html.Li(line) for line in panel.lines], className="verdict"))
    if panel.table is not None:
        children.append(_table(panel.table))
    for j, (subtitle, fig) in enumerate(panel.figures):
        if subtitle:
            children.append(html.H3(subtitle))
        children.append(dcc.Graph(id=f"figure-{index}-{j}", figure=fig, config=PLOT_CONFIG))
    children += [html.P(n, className="note") for n in panel.notes]
    return html.Section(
        children, className="panel", id=f"panel-{index}", **{"data-kind": panel.kind}
    )


def _meta(record: dict, trials: int) -> list:
    parts: list = [
        f"workload {record['workload']} · metric {record['metric']} ({record['direction']}) · "
        f"{trials} trials · device {record.get('device') or ''}"
    ]
    url = record.get("ray_dashboard_url")
    if url:
        parts += [" · Ray dashboard: ", html.A(url, href=url, target="_blank", id="ray-link")]
    return parts


def create_app(store: Store, layout: Layout, refresh_seconds: float = 5.0) -> dash.Dash:
    live = LiveStudies(store, layout)
    app = dash.Dash(
        __name__, title="koala-sweep dashboard", update_title=None, serve_locally=True
    )  # Dash's own scripts from the package: works offline
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    app.layout = html.Main(
        [
            html.H1(layout.title),
            html.Div(
                [
                    html.Label("study ", htmlFor="study"),
                    dcc.Dropdown(id="study", clearable=False, style={"width": "420px"}),
                ],
                style={"display": "flex", "alignItems": "center", "gap": "8px"},
            ),
            html.P(id="study-meta", className="meta"),
            html.P(id="refresh-info", className="note"),
            dcc.Interval(id="tick", interval=int(refresh_seconds * 1000)),
            dcc.Store(id="shown-version"),
            dcc.Loading(html.Div(id="panels"), type="dot"),
        ]
    )

    @app.callback(
        Output("study", "options"),
        Output("study", "value"),
        Input("tick", "n_intervals"),
        State("study", "value"),
    )
    def _studies(_, current):
        names = list(studies_frame(store.engine)["study"])  # oldest first
        options = [{"label": n, "value": n} for n in sorted(names)]
        value = current if current in names else (names[-1] if names else None)
        return options, value

    @app.callback(
        Output("panels", "children"),
        Output("study-meta", "children"),
        Output("shown-version", "data"),
        Output("refresh-info", "children"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("shown-version", "data"),
    )
    def _panels(study, _, shown):
        if not study:
            return (
                [
                    html.P(
                        "The store has no study yet: launch one with koala-sweep launch.",
                        className="empty",
                    )
                ],
                "",
                None,
                "",
            )
        try:
            built = live.get(study)
        except UnknownStudy as err:
            return [html.P(str(err), className="empty")], "", None, ""
        key = [study, *map(str, built.version)]
        info = (
            f"refreshed {time.strftime('%H:%M:%S')}; panels last built in "
            f"{built.seconds:.2f} s; checking for new results every {refresh_seconds:g} s"
        )
        if shown == key:  # nothing new: keep what the browser shows, update the clock only
            return dash.no_update, dash.no_update, dash.no_update, info
        return built.components, built.meta, key, info

    return app
