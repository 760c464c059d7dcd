"""Panels: what each kind of a layout shows (figures, a table, sentences), built from a study's
analyses. The HTML report and the Dash app render the same panels."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from ..analysis import best_regions, qr_map, time_to_target, verdict
from ..analysis.curves import best_learning_curves
from ..analysis.pruning import pruning_savings
from ..analysis.robustness import within_column
from ..analysis.sensitivity import binned_profile, binned_qr, search_range
from . import figures
from .data import StudyAnalysis
from .layout import Layout, PanelSpec

log = logging.getLogger(__name__)

# Above this many configurations of an arm, scatters give way to binned summaries: readable,
# and a page with 10,000 trials still draws in well under a second.
SCATTER_LIMIT = 1000


@dataclass
class Panel:
    kind: str
    title: str
    description: str = ""
    figures: list[tuple[str, go.Figure]] = field(default_factory=list)  # (subtitle, figure)
    table: pd.DataFrame | None = None  # already formatted for reading
    lines: list[str] = field(default_factory=list)  # sentences (the summary's verdict)
    notes: list[str] = field(default_factory=list)  # caveats: what was left out and why


def _num(v, digits: int = 4) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "" if not math.isfinite(f) else f"{f:.{digits}g}"


def _pct(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if not math.isfinite(f) else f"{f:.0%}"


def _summary(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    head = a.headline
    imp = a.importance(("ped_anova", "fanova"))
    lines = verdict(
        head, d.metric, d.direction, imp, a.variant_pairs(0.1), a.cost.attrs.get("reference")
    )
    k = int(head["k"].iloc[0]) if len(head) else 0
    table = pd.DataFrame(
        {
            "arm": head["arm"],
            "optimizer": head["optimizer"],
            "finished / budget": [
                f"{f} / {b}" for f, b in zip(head["finished"], head["budget"], strict=True)
            ],
            f"best {d.metric}": [
                _num(b) + (f" ± {_num(s, 2)}" if _num(s) else "")
                for b, s in zip(head["best"], head["best_std"], strict=True)
            ],
            f"median {d.metric}": head["median"].map(_num),
            f"expected best after k={k}": [
                f"{_num(e)} [{_num(lo)}, {_num(hi)}]" if _num(e) else ""
                for e, lo, hi in zip(
                    head["expected_best_at_k"],
                    head["expected_best_low"],
                    head["expected_best_high"],
                    strict=True,
                )
            ],
            "within 5% of own best": head["within_5pct"].map(_pct),
            "within 5% of best of all": head["study_within_5pct"].map(_pct),
            "diverged": head["diverged_share"].map(_pct),
            "time per epoch": [f"{float(r):.2f}x" if _num(r) else "" for r in head["epoch_ratio"]],
        }
    )
    notes = [
        f"{d.metric}: {'lower' if d.direction == 'minimize' else 'higher'} is better. "
        "Best is the mean over seeds of the best complete configuration (± std over seeds); "
        "k is the number of finished configurations every arm has."
    ]
    return Panel(spec.kind, spec.title, spec.description, table=table, lines=lines, notes=notes)


def _tunability(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.tunability_figure(a.tunability, d.metric, d.colors))],
        notes=[
            "Exact expectation over the arm's finished configurations, 90% band "
            "from bootstrap resamples; a pruned configuration counts with its value "
            "when stopped, diverged and failed ones as the study's worst value."
        ],
    )


def _robustness(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    r = a.robustness(spec.tolerances)
    table = pd.DataFrame(
        {"arm": r["arm"], "configurations": r["configurations"], "best": r["best"].map(_num)}
    )
    for tol in spec.tolerances:
        table[f"within {tol:.0%}"] = r[within_column(tol)].map(_pct)
    table["within 5% of best of all arms"] = r["study_within_5pct"].map(_pct)
    for state in ("diverged", "failed", "pruned"):
        table[state] = r[f"{state}_share"].map(_pct)
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        table=table,
        notes=[
            "Share of the arm's finished configurations that completed within x of "
            "its best value; pruned configurations never count as within."
        ],
    )


def _sensitivity(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    sens = a.sensitivity(spec.tolerance)
    regions = best_regions(sens)
    # One value axis for all arms, so that their sensitivities compare at a glance.
    y_range = figures.value_range(sens["value"])
    profile = None
    figs = []
    for arm in d.arms["arm"]:
        points = sens[sens["arm"] == arm]
        if points.empty:
            continue
        if points["configuration"].nunique() > SCATTER_LIMIT:
            profile = binned_profile(sens, d.direction) if profile is None else profile
            fig = figures.sensitivity_profile_figure(
                profile, regions, arm, d.metric, d.colors[arm], y_range
            )
        else:
            fig = figures.sensitivity_figure(sens, regions, arm, d.metric, d.colors[arm], y_range)
        figs.append((arm, fig))
    if not figs:
        figs = [("", figures.empty_figure("no finished configuration yet"))]
    notes = [
        "All arms share the value axis. "
        f"Green band: the range of the configurations within "
        f"{spec.tolerance:.0%} of the arm's best. Error bars: std over seeds. "
        "Open circles: pruned (value when stopped). Red crosses: diverged or "
        "failed, drawn at the top."
    ]
    if profile is not None:
        notes.append(
            f"Arms with more than {SCATTER_LIMIT} configurations are drawn per bin: the best "
            "value in the bin, the median (dashed) and the 10-90th percentile band."
        )
    return Panel(spec.kind, spec.title, spec.description, figures=figs, notes=notes)


def _qr_map(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    qr = qr_map(a.configurations, d.arms)
    ranges = search_range(d.arms, "q"), search_range(d.arms, "r")
    notes = [
        "Axes span the searched ranges; hover a point for its learning rate. "
        "Configurations with an adaptive R are not on this map."
    ]
    if len(qr) > SCATTER_LIMIT:
        fig = figures.qr_heatmap_figure(binned_qr(qr, d.direction), d.metric, d.direction, *ranges)
        notes = [
            f"More than {SCATTER_LIMIT} configurations: each cell shows the best value "
            "of the configurations in it. Configurations with an adaptive R are not on "
            "this map."
        ]
    else:
        fig = figures.qr_map_figure(qr, d.metric, d.direction, *ranges)
    return Panel(spec.kind, spec.title, spec.description, figures=[("", fig)], notes=notes)


def _variants(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    pairs = a.variant_pairs(spec.max_distance)
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.variants_figure(pairs, d.metric, d.direction))],
        notes=[
            f"Pairs: complete vanilla and symmetric configurations of one arm whose "
            f"other hyperparameters are within {spec.max_distance} of each other "
            "(each scaled to [0, 1] of its range, log ranges in log10); "
            f"{len(pairs)} pairs."
        ],
    )


def _importance(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    imp = a.importance(spec.evaluators)
    notes = [
        "Computed on complete configurations that ran the full budget of "
        f"{a.data.epochs} epochs only: pruned ones were stopped early and would bias it."
    ]
    notes += imp.attrs.get("notes", [])
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.importance_figure(imp))],
        notes=notes,
    )


def _learning_curves(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    curves = best_learning_curves(a.configurations, d.trials, d.metrics, d.metric, d.direction)
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.learning_curves_figure(curves, d.metric, d.colors, x=spec.x))],
        notes=["Line: mean over seeds; band: best to worst seed."],
    )


def _time_to_target(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    d = a.data
    t = time_to_target(a.configurations, d.trials, d.metrics, d.metric, d.direction, spec.target)
    table = pd.DataFrame(
        {
            "arm": t["arm"],
            "target": t["target"].map(_num),
            "epochs (best configuration)": t["epochs"].map(lambda v: _num(v, 3)),
            "seconds (best configuration)": t["seconds"].map(lambda v: _num(v, 3)),
            "configurations reaching it": t["configurations_reaching"].map(_pct),
        }
    )
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        table=table,
        notes=[
            "Target: "
            + (
                "as set in the layout"
                if spec.target is not None
                else "the weakest of the arms' best values, so every arm "
                "with a complete configuration reaches it"
            )
            + "."
        ],
    )


def _cost(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    c = a.cost
    table = pd.DataFrame(
        {
            "arm": c["arm"],
            "optimizer": c["optimizer"],
            "seconds per epoch": c["epoch_seconds"].map(_num),
            "seconds in optimizer.step per epoch": c["step_seconds"].map(_num),
            "samples per second": c["samples_per_second"].map(lambda v: _num(v, 5)),
            "epoch ratio": c["epoch_ratio"].map(lambda v: _num(v, 3)),
            "step ratio": c["step_ratio"].map(lambda v: _num(v, 3)),
        }
    )
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.cost_figure(c, a.data.colors))],
        table=table,
        notes=[
            "Medians over every trial-epoch of the arm, first epochs left out; "
            "trials ran side by side on the same machine, so the ratios are the "
            "comparison (absolute times vary)."
        ],
    )


def _pruning(a: StudyAnalysis, spec: PanelSpec) -> Panel:
    s = pruning_savings(a.configurations, a.data.epochs)
    return Panel(
        spec.kind,
        spec.title,
        spec.description,
        figures=[("", figures.pruning_figure(s))],
        notes=[
            "Without pruning, every pruned configuration would have run all "
            f"{a.data.epochs} epochs; diverged and failed ones stop either way."
        ],
    )


BUILDERS: dict[str, Callable[[StudyAnalysis, PanelSpec], Panel]] = {
    "summary": _summary,
    "tunability": _tunability,
    "robustness": _robustness,
    "sensitivity": _sensitivity,
    "qr_map": _qr_map,
    "variants": _variants,
    "importance": _importance,
    "learning_curves": _learning_curves,
    "time_to_target": _time_to_target,
    "cost": _cost,
    "pruning": _pruning,
}


def build_panels(a: StudyAnalysis, layout: Layout) -> list[Panel]:
    """Every panel of the layout. A panel that fails to build shows why instead of taking the
    whole report or dashboard down with it (and the error goes to the log)."""
    panels = []
    for spec in layout.panels:
        try:
            panels.append(BUILDERS[spec.kind](a, spec))
        except Exception as err:  # noqa: BLE001 - one broken panel must not hide the others
            log.exception("panel %s of study %s failed", spec.kind, a.data.name)
            panels.append(
                Panel(
                    spec.kind,
                    spec.title,
                    spec.description,
                    notes=[f"This panel could not be drawn: {type(err).__name__}: {err}"],
                )
            )
    return panels
