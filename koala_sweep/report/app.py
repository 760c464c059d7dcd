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
from urllib.parse import parse_qs, urlencode, urlparse

import dash
import flask
import pandas as pd
from dash import Input, Output, State, dcc, html

from ..store import Store
from ..store.reader import (
    UnknownStudy,
    arms_frame,
    metrics_frame,
    studies_frame,
    study_record,
    study_version,
    trials_frame,
)
from .data import StudyAnalysis, StudyData, load_study_data
from .html import CSS
from .layout import Layout
from .panels import Panel, build_panels

PLOT_CONFIG = {"displaylogo": False}


# fANOVA's forest is the slowest analysis (seconds at 10,000 trials): while a study runs, the
# importance panel is recomputed at most this often and says when it was computed.
IMPORTANCE_REFRESH_SECONDS = 60.0
# Re-reading every trial-epoch is cheaper than a query naming more trials than this.
MAX_TRIALS_TO_REREAD = 5000


@dataclass
class _Built:
    version: tuple
    data: StudyData
    analysis: StudyAnalysis
    components: list
    meta: list
    seconds: float
    importance_at: float


class LiveStudies:
    """Panels per study, rebuilt only when the study's fingerprint changes (thread-safe).

    A rebuild re-reads the trials, but the epochs only of trials that were not finished at the
    last read: finished trials never change."""

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
            data = self._read(study, built.data if built else None)
            analysis = StudyAnalysis(data)
            importance_at = time.time()
            if built is not None and time.time() - built.importance_at < IMPORTANCE_REFRESH_SECONDS:
                analysis.reuse_importance(built.analysis, built.importance_at)
                importance_at = built.importance_at
            panels = build_panels(analysis, self.layout)
            built = _Built(
                version,
                data,
                analysis,
                [_panel(p, i) for i, p in enumerate(panels)],
                _meta(data.record, len(data.trials)),
                time.perf_counter() - t0,
                importance_at,
            )
            self._built[study] = built
            return built

    def _read(self, study: str, previous: StudyData | None) -> StudyData:
        if previous is None:
            return load_study_data(self.store, study)
        engine = self.store.engine
        trials = trials_frame(engine, study)
        done = previous.trials.loc[previous.trials["state"] != "RUNNING", "trial"]
        reread = set(trials["trial"]) - set(done)
        if len(reread) > MAX_TRIALS_TO_REREAD:
            metrics = metrics_frame(engine, study)
        else:
            kept = previous.metrics[previous.metrics["trial"].isin(set(done))]
            fresh = metrics_frame(engine, study, reread) if reread else kept.iloc[0:0]
            metrics = pd.concat([kept, fresh], ignore_index=True).sort_values(
                ["trial", "epoch"], ignore_index=True
            )
        return StudyData(
            name=study,
            record=study_record(engine, study),
            arms=arms_frame(engine, study),
            trials=trials,
            metrics=metrics,
        )


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


def _asked_study() -> str | None:
    """The study named in the page's address (``/?study=NAME``). Dash fetches the layout with
    a request of its own, so the address the user opened comes as that request's referrer."""
    if not flask.has_request_context():
        return None
    for url in (flask.request.url, flask.request.referrer or ""):
        values = parse_qs(urlparse(url).query).get("study")
        if values:
            return values[0]
    return None


def create_app(store: Store, layout: Layout, refresh_seconds: float = 5.0) -> dash.Dash:
    live = LiveStudies(store, layout)
    app = dash.Dash(
        __name__,
        title="koala-sweep dashboard",
        update_title=None,
        serve_locally=True,  # Dash's own scripts from the package: works offline
    )
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")

    def page():
        """The page, with the chosen study's panels already in it: a reload costs one request
        and no rebuild while nothing changed (the panels are kept between requests)."""
        names = list(studies_frame(store.engine)["study"])  # oldest first
        asked = _asked_study()
        study = asked if asked in names else (names[-1] if names else None)
        panels, meta, key, info = _render(study, None)
        return html.Main(
            [
                html.H1(layout.title),
                html.Div(
                    [
                        html.Label("study ", htmlFor="study"),
                        dcc.Dropdown(
                            id="study",
                            options=[{"label": n, "value": n} for n in sorted(names)],
                            value=study,
                            clearable=False,
                            style={"width": "420px"},
                        ),
                    ],
                    style={"display": "flex", "alignItems": "center", "gap": "8px"},
                ),
                html.P(meta, id="study-meta", className="meta"),
                html.P(info, id="refresh-info", className="note"),
                dcc.Interval(id="tick", interval=int(refresh_seconds * 1000)),
                # Keeps the chosen study in the address, so that a reload shows it again.
                dcc.Location(id="url", refresh=False),
                dcc.Store(id="shown-version", data=key),
                html.Div(panels, id="panels"),
            ]
        )

    def _render(study, shown):
        if not study:
            empty = html.P(
                "The store has no study yet: launch one with koala-sweep launch.", className="empty"
            )
            return [empty], "", None, ""
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

    app.layout = page

    @app.callback(Output("url", "search"), Input("study", "value"), prevent_initial_call=True)
    def _remember(study):
        return "?" + urlencode({"study": study}) if study else ""

    @app.callback(
        Output("study", "options"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def _studies(_):
        names = sorted(studies_frame(store.engine)["study"])
        return [{"label": n, "value": n} for n in names]

    @app.callback(
        Output("panels", "children"),
        Output("study-meta", "children"),
        Output("shown-version", "data"),
        Output("refresh-info", "children"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("shown-version", "data"),
        prevent_initial_call=True,
    )
    def _panels(study, _, shown):
        return _render(study, shown)

    return app
