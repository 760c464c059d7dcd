"""Plotly figures, one function per kind: an analysis frame in, a ``go.Figure`` out, no I/O.
The report and the live dashboard draw the same figures from the same frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

# One colour per arm, the same in every figure of a study.
PALETTE = qualitative.D3
# Points beyond this many per trace are drawn with WebGL, which stays fluid with 10,000 trials.
WEBGL_ABOVE = 1000
DIVERGED_COLOR = "#d62728"
PAIRS_SCATTER_LIMIT = 300


def arm_colors(arms: list[str]) -> dict[str, str]:
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arms)}


def _scatter(n: int):
    return go.Scattergl if n > WEBGL_ABOVE else go.Scatter


def _base(fig: go.Figure, height: int = 420) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=dict(l=60, r=20, t=70, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="left", x=0),
    )
    return fig


def band(x, low, high, color: str, opacity: float, group: str) -> go.Scatter:
    """A shaded band between ``low`` and ``high`` along ``x`` (no legend entry, no hover)."""
    return go.Scatter(
        x=np.concatenate([np.asarray(x), np.asarray(x)[::-1]]),
        y=np.concatenate([np.asarray(high), np.asarray(low)[::-1]]),
        fill="toself",
        fillcolor=color,
        opacity=opacity,
        line=dict(width=0),
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
    )


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14)
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base(fig, height=200)


def tunability_figure(tun: pd.DataFrame, metric: str, colors: dict[str, str]) -> go.Figure:
    """Expected best value after k configurations, with the bootstrap band, all arms."""
    if tun.empty:
        return empty_figure("no finished configuration yet")
    fig = go.Figure()
    for arm, g in tun.groupby("arm", sort=False):
        color = colors.get(arm, "#333")
        fig.add_trace(band(g["k"], g["low"], g["high"], color, 0.15, arm))
        fig.add_trace(
            go.Scatter(
                x=g["k"],
                y=g["expected_best"],
                mode="lines+markers",
                name=arm,
                legendgroup=arm,
                line=dict(color=color),
                marker=dict(size=5),
                hovertemplate=f"{arm}<br>k=%{{x}}<br>expected best=%{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_xaxes(
        title="configurations tried (k)", tickformat="d", dtick=1 if tun["k"].max() <= 20 else None
    )
    fig.update_yaxes(title=f"expected best {metric}")
    low, high = float(tun["low"].min()), float(tun["high"].max())
    if low > 0 and high / low > 10:  # an arm that often fails would flatten the others
        fig.update_yaxes(type="log", dtick="D2", title=f"expected best {metric} (log scale)")
    return _base(fig)


def sensitivity_figure(
    sens: pd.DataFrame,
    regions: pd.DataFrame,
    arm: str,
    metric: str,
    color: str,
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    """The final metric against each searched hyperparameter of one arm: error bars are the
    spread over seeds, the shaded band the range of the near-best configurations, red crosses
    the diverged configurations (drawn at the top of the axis)."""
    g = sens[sens["arm"] == arm]
    if g.empty:
        return empty_figure(f"{arm}: no finished configuration yet")
    params = list(dict.fromkeys(g["parameter"]))
    fig = make_subplots(
        rows=1, cols=len(params), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=params
    )
    bottom, top = y_range if y_range else value_range(g["value"])
    ceiling = top + 0.08 * (top - bottom if top > bottom else abs(top) or 1.0)
    for col, name in enumerate(params, start=1):
        p = g[g["parameter"] == name]
        scale_ = p["scale"].iloc[0]
        for state, symbol, opacity in (
            ("COMPLETE", "circle", 0.85),
            ("PRUNED", "circle-open", 0.6),
        ):
            s = p[p["state"] == state]
            if s.empty:
                continue
            trace = _scatter(len(s))
            fig.add_trace(
                trace(
                    x=s["x"],
                    y=np.minimum(s["value"].astype(float), ceiling),
                    mode="markers",
                    name=state.lower(),
                    legendgroup=state,
                    showlegend=col == 1,
                    marker=dict(color=color, symbol=symbol, size=7, opacity=opacity),
                    error_y=dict(array=s["value_std"], thickness=1, width=0, visible=True)
                    if s["value_std"].notna().any()
                    else None,
                    hovertemplate=f"{name}=%{{x}}<br>{metric}=%{{y:.4g}}<extra>{state.lower()}</extra>",
                ),
                row=1,
                col=col,
            )
        bad = p[p["state"].isin(("DIVERGED", "FAILED"))]
        if len(bad):
            fig.add_trace(
                _scatter(len(bad))(
                    x=bad["x"],
                    y=np.full(len(bad), ceiling),
                    mode="markers",
                    name="diverged or failed",
                    legendgroup="bad",
                    showlegend=col == 1,
                    marker=dict(color=DIVERGED_COLOR, symbol="x", size=8),
                    hovertemplate=f"{name}=%{{x}}<extra>diverged or failed</extra>",
                ),
                row=1,
                col=col,
            )
        region = regions[(regions["arm"] == arm) & (regions["parameter"] == name)]
        if len(region) and scale_ != "categorical":
            lo, hi = float(region["low"].iloc[0]), float(region["high"].iloc[0])
            if hi == lo:  # one near-best configuration: a thin band still shows where it is
                lo, hi = (lo / 1.08, hi * 1.08) if scale_ == "log" else (lo, hi)
            fig.add_vrect(
                x0=lo, x1=hi, fillcolor="#2ca02c", opacity=0.12, line_width=0, row=1, col=col
            )
        fig.update_xaxes(**_axis(scale_, p["low"].iloc[0], p["high"].iloc[0]), row=1, col=col)
    fig.update_yaxes(title=metric, row=1, col=1)
    fig.update_yaxes(
        range=[bottom - 0.04 * (ceiling - bottom), ceiling + 0.04 * (ceiling - bottom)]
    )
    return _base(fig, height=380)


def value_range(values: pd.Series) -> tuple[float, float]:
    """A robust range of values: from the lowest to the 98th percentile, and never above the
    median plus three times its distance to the lowest, so that a few wild values (a pruned
    configuration at loss 45 among losses near 0.5) do not squash the rest of a plot. Values
    beyond are drawn at the edge; hovering shows them."""
    finite = values[np.isfinite(values.astype(float))].astype(float)
    if finite.empty:
        return 0.0, 1.0
    low, median = float(finite.min()), float(finite.median())
    high = float(finite.quantile(0.98))
    if median > low:
        high = min(high, median + 3 * (median - low))
    return low, high


def _axis(scale_: str, low: float, high: float) -> dict:
    """Axis settings over the searched range: decades only on log axes (no minor labels)."""
    if scale_ == "categorical":
        return {"type": "category"}
    if scale_ == "log":
        pad = 0.04 * (math.log10(high) - math.log10(low))
        return {
            "type": "log",
            "dtick": 1,
            "minor": dict(showgrid=True),
            "exponentformat": "power",
            "range": [math.log10(low) - pad, math.log10(high) + pad],
        }
    pad = 0.04 * (high - low)
    return {"type": "linear", "range": [low - pad, high + pad]}


def qr_map_figure(
    qr: pd.DataFrame,
    metric: str,
    direction: str,
    q_range: tuple[float, float] | None = None,
    r_range: tuple[float, float] | None = None,
) -> go.Figure:
    """KOALA++'s final metric over (Q, R), one panel per arm and variant (log axes over the
    searched ranges): colour is the value, crosses are diverged configurations."""
    if qr.empty:
        return empty_figure("no KOALA++ configuration with numeric Q and R")
    panels = list(dict.fromkeys(zip(qr["arm"], qr["variant"], strict=True)))
    one_arm = len({a for a, _ in panels}) == 1
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        shared_yaxes=True,
        subplot_titles=[f"variant: {v}" if one_arm else f"{a} - variant: {v}" for a, v in panels],
        horizontal_spacing=0.06,
    )
    cmin, cmax = value_range(qr["value"])
    scale = "Viridis_r" if direction == "minimize" else "Viridis"  # bright = good
    for col, (arm, variant) in enumerate(panels, start=1):
        v = qr[(qr["arm"] == arm) & (qr["variant"] == variant)]
        ok = v[v["value"].notna()]
        fig.add_trace(
            _scatter(len(ok))(
                x=ok["q"],
                y=ok["r"],
                mode="markers",
                name=f"{variant}",
                showlegend=False,
                marker=dict(
                    color=ok["value"],
                    colorscale=scale,
                    cmin=cmin,
                    cmax=cmax,
                    size=10,
                    line=dict(width=0.5, color="#333"),
                    colorbar=dict(title=metric) if col == len(panels) else None,
                    showscale=col == len(panels),
                ),
                customdata=np.stack([ok["lr"], ok["value"]], axis=-1) if len(ok) else None,
                hovertemplate="Q=%{x:.3g}<br>R=%{y:.3g}<br>lr=%{customdata[0]:.3g}<br>"
                + metric
                + "=%{customdata[1]:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        bad = v[v["value"].isna()]
        if len(bad):
            fig.add_trace(
                _scatter(len(bad))(
                    x=bad["q"],
                    y=bad["r"],
                    mode="markers",
                    name="diverged or failed",
                    showlegend=col == 1,
                    marker=dict(color=DIVERGED_COLOR, symbol="x", size=9),
                    hovertemplate="Q=%{x:.3g}<br>R=%{y:.3g}<extra>diverged or failed</extra>",
                ),
                row=1,
                col=col,
            )
        q_axis = _axis("log", *q_range) if q_range else {"type": "log", "dtick": 1}
        fig.update_xaxes(title="Q (process noise)", **q_axis, row=1, col=col)
    r_axis = _axis("log", *r_range) if r_range else {"type": "log", "dtick": 1}
    fig.update_yaxes(title="R (measurement noise)", **r_axis, row=1, col=1)
    return _base(fig, height=420)


def variants_figure(pairs: pd.DataFrame, metric: str, direction: str) -> go.Figure:
    """Vanilla (x) against symmetric (y) on matched configurations; the diagonal is a tie.
    With more than ``PAIRS_SCATTER_LIMIT`` pairs: the histogram of the differences."""
    if pairs.empty:
        return empty_figure(
            "no matched vanilla/symmetric pairs (the study did not search "
            "the variant, or no two configurations were close enough)"
        )
    if len(pairs) > PAIRS_SCATTER_LIMIT:
        fig = go.Figure()
        for arm, g in pairs.groupby("arm", sort=False):
            fig.add_trace(
                go.Histogram(x=g["symmetric"] - g["vanilla"], name=arm, opacity=0.7, nbinsx=60)
            )
        fig.add_vline(x=0, line_dash="dash", line_color="#666")
        side = "left" if direction == "minimize" else "right"
        fig.update_xaxes(title=f"symmetric - vanilla {metric} (symmetric better {side} of 0)")
        fig.update_yaxes(title="matched pairs")
        fig.update_layout(barmode="overlay")
        return _base(fig)
    fig = go.Figure()
    lo = float(np.nanmin(pairs[["vanilla", "symmetric"]].to_numpy()))
    hi = float(np.nanmax(pairs[["vanilla", "symmetric"]].to_numpy()))
    fig.add_trace(
        go.Scatter(
            x=[lo, hi], y=[lo, hi], mode="lines", name="tie", line=dict(color="#999", dash="dash")
        )
    )
    for arm, g in pairs.groupby("arm", sort=False):
        fig.add_trace(
            _scatter(len(g))(
                x=g["vanilla"],
                y=g["symmetric"],
                mode="markers",
                name=arm,
                marker=dict(size=9),
                customdata=g["distance"],
                hovertemplate="vanilla=%{x:.4g}<br>symmetric=%{y:.4g}<br>distance=%{customdata:.3f}"
                "<extra></extra>",
            )
        )
    better = "below" if direction == "minimize" else "above"
    fig.update_xaxes(title=f"vanilla {metric}")
    fig.update_yaxes(title=f"symmetric {metric} (symmetric better {better} the diagonal)")
    return _base(fig)


def importance_figure(imp: pd.DataFrame) -> go.Figure:
    """Importance of each searched hyperparameter per arm, one bar group per evaluator."""
    if imp.empty:
        return empty_figure("not enough full-budget configurations for importance")
    arms = list(dict.fromkeys(imp["arm"]))
    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=arms, shared_yaxes=False)
    evaluators = list(dict.fromkeys(imp["evaluator"]))
    for col, arm in enumerate(arms, start=1):
        a = imp[imp["arm"] == arm]
        for i, ev in enumerate(evaluators):
            e = a[a["evaluator"] == ev]
            fig.add_trace(
                go.Bar(
                    x=e["parameter"],
                    y=e["importance"],
                    name=ev,
                    legendgroup=ev,
                    showlegend=col == 1,
                    marker_color=qualitative.Set2[i % 8],
                    hovertemplate="%{x}: %{y:.0%}<extra>" + ev + "</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(title="importance (share)", tickformat=".0%", row=1, col=1)
    fig.update_layout(barmode="group")
    return _base(fig, height=360)


def learning_curves_figure(
    curves: pd.DataFrame, metric: str, colors: dict[str, str], x: str = "epoch"
) -> go.Figure:
    """Each arm's best configuration over epochs (or seconds): the seed mean, and the band
    between the best and worst seed."""
    if curves.empty:
        return empty_figure("no complete configuration yet")
    fig = go.Figure()
    for arm, g in curves.groupby("arm", sort=False):
        color = colors.get(arm, "#333")
        if (g["seeds"] > 1).any():
            fig.add_trace(band(g[x], g["low"], g["high"], color, 0.2, arm))
        fig.add_trace(
            go.Scatter(
                x=g[x],
                y=g["mean"],
                mode="lines+markers",
                name=arm,
                legendgroup=arm,
                line=dict(color=color),
                hovertemplate=f"{arm}<br>{x}=%{{x:.4g}}<br>{metric}=%{{y:.4g}}<extra></extra>",
            )
        )
    if x == "epoch":
        fig.update_xaxes(
            title="epoch", tickformat="d", dtick=1 if curves["epoch"].max() <= 20 else None
        )
    else:
        fig.update_xaxes(title="wall time (s)")
    fig.update_yaxes(title=metric)
    return _base(fig)


def cost_figure(cost: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Median training time per epoch and time inside optimizer.step per epoch, relative to
    the reference arm (the arms train the same batches, so the second is the step-time ratio)."""
    if cost.empty:
        return empty_figure("no epoch reported yet")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["training time per epoch", "time in optimizer.step"]
    )
    for col, column in enumerate(("epoch_ratio", "step_ratio"), start=1):
        fig.add_trace(
            go.Bar(
                x=cost["arm"],
                y=cost[column],
                showlegend=False,
                marker_color=[colors.get(a, "#333") for a in cost["arm"]],
                text=[f"{v:.2f}x" if _finite(v) else "" for v in cost[column]],
                textposition="outside",
                hovertemplate="%{x}: %{y:.2f}x<extra></extra>",
            ),
            row=1,
            col=col,
        )
    reference = cost.attrs.get("reference", "")
    fig.update_yaxes(title=f"relative to {reference}" if reference else "ratio", row=1, col=1)
    return _base(fig, height=340)


def pruning_figure(savings: pd.DataFrame) -> go.Figure:
    """Epochs run against the epochs a study without pruning would have run, per arm."""
    if savings.empty:
        return empty_figure("no finished configuration yet")
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=savings["arm"],
            y=savings["epochs_without_pruning"],
            name="without pruning",
            marker_color="#c7c7c7",
        )
    )
    fig.add_trace(
        go.Bar(
            x=savings["arm"],
            y=savings["epochs_run"],
            name="run",
            marker_color="#1f77b4",
            text=[f"{s:.0%} saved" for s in savings["saved_share"]],
            textposition="outside",
        )
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="epochs (all seeds)")
    return _base(fig, height=340)


def table_figure(frame: pd.DataFrame) -> go.Figure:
    """A table as a figure, for PNG and PDF export: columns as wide as their longest text."""
    widths = [max([len(str(c))] + [len(str(v)) for v in frame[c]]) for c in frame.columns]
    fig = go.Figure(
        go.Table(
            columnwidth=widths,
            header=dict(values=list(frame.columns), fill_color="#e8eef7", align="left"),
            cells=dict(values=[frame[c] for c in frame.columns], align="left"),
        )
    )
    return _base(fig, height=110 + 32 * (len(frame) + 1))


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def sensitivity_profile_figure(
    profile: pd.DataFrame,
    regions: pd.DataFrame,
    arm: str,
    metric: str,
    color: str,
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Sensitivity of one arm with many configurations, per bin of each hyperparameter: the
    best value reached in the bin (solid), the median (dashed) and the 10-90th percentile
    band of complete configurations; red crosses mark bins where configurations diverged
    (hover for the share)."""
    g = profile[profile["arm"] == arm]
    if g.empty:
        return empty_figure(f"{arm}: no finished configuration yet")
    params = list(dict.fromkeys(g["parameter"]))
    fig = make_subplots(
        rows=1, cols=len(params), shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=params
    )
    bottom, top = y_range if y_range else value_range(g["best"])
    ceiling = top + 0.08 * (top - bottom if top > bottom else abs(top) or 1.0)
    for col, name in enumerate(params, start=1):
        p = g[g["parameter"] == name]
        scale_ = p["scale"].iloc[0]
        first = col == 1
        if scale_ != "categorical":
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([p["x"], p["x"][::-1]]),
                    y=np.concatenate([p["q90"], p["q10"][::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line=dict(width=0),
                    name="10-90th percentile",
                    legendgroup="band",
                    showlegend=first,
                    hoverinfo="skip",
                    connectgaps=False,
                ),
                row=1,
                col=col,
            )
        mode = "lines+markers" if scale_ != "categorical" else "markers"
        fig.add_trace(
            go.Scatter(
                x=p["x"],
                y=p["median"],
                mode=mode,
                name="median",
                legendgroup="median",
                showlegend=first,
                line=dict(color=color, dash="dash", width=1),
                marker=dict(size=4, color=color),
                hovertemplate=f"{name}=%{{x}}<br>median {metric}=%{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=p["x"],
                y=p["best"],
                mode=mode,
                name="best in bin",
                legendgroup="best",
                showlegend=first,
                line=dict(color=color, width=2),
                marker=dict(size=6, color=color),
                customdata=p["configurations"],
                hovertemplate=f"{name}=%{{x}}<br>best {metric}=%{{y:.4g}}"
                "<br>%{customdata} configurations<extra></extra>",
            ),
            row=1,
            col=col,
        )
        bad = p[p["diverged_share"] > 0]
        if len(bad):
            fig.add_trace(
                go.Scatter(
                    x=bad["x"],
                    y=np.full(len(bad), ceiling),
                    mode="markers",
                    name="diverged in bin",
                    legendgroup="bad",
                    showlegend=first,
                    marker=dict(
                        color=DIVERGED_COLOR,
                        symbol="x",
                        size=5 + 10 * bad["diverged_share"].to_numpy(),
                    ),
                    customdata=bad["diverged_share"],
                    hovertemplate=f"{name}=%{{x}}<br>%{{customdata:.0%}} diverged or failed"
                    "<extra></extra>",
                ),
                row=1,
                col=col,
            )
        region = regions[(regions["arm"] == arm) & (regions["parameter"] == name)]
        if len(region) and scale_ != "categorical":
            fig.add_vrect(
                x0=float(region["low"].iloc[0]),
                x1=float(region["high"].iloc[0]),
                fillcolor="#2ca02c",
                opacity=0.12,
                line_width=0,
                row=1,
                col=col,
            )
        low = p["bin_low"].min() if scale_ != "categorical" else np.nan
        high = p["bin_high"].max() if scale_ != "categorical" else np.nan
        fig.update_xaxes(**_axis(scale_, low, high), row=1, col=col)
    fig.update_yaxes(title=metric, row=1, col=1)
    span = ceiling - bottom
    fig.update_yaxes(range=[bottom - 0.04 * span, ceiling + 0.04 * span])
    return _base(fig, height=380)


def qr_heatmap_figure(
    binned: pd.DataFrame,
    metric: str,
    direction: str,
    q_range: tuple[float, float] | None = None,
    r_range: tuple[float, float] | None = None,
) -> go.Figure:
    """The Q x R map of many configurations: the best value per cell, one panel per arm and
    variant."""
    if binned.empty:
        return empty_figure("no KOALA++ configuration with numeric Q and R")
    panels = list(dict.fromkeys(zip(binned["arm"], binned["variant"], strict=True)))
    one_arm = len({a for a, _ in panels}) == 1
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        shared_yaxes=True,
        subplot_titles=[f"variant: {v}" if one_arm else f"{a} - variant: {v}" for a, v in panels],
        horizontal_spacing=0.06,
    )
    cmin, cmax = value_range(binned["best"])
    scale = "Viridis_r" if direction == "minimize" else "Viridis"
    for col, (arm, variant) in enumerate(panels, start=1):
        cell = binned[(binned["arm"] == arm) & (binned["variant"] == variant)]
        grid = cell.pivot_table(index="r", columns="q", values="best", aggfunc="first")
        counts = cell.pivot_table(index="r", columns="q", values="configurations", aggfunc="first")
        # One image, not thousands of markers: cheap to draw at any study size.
        fig.add_trace(
            go.Heatmap(
                x=grid.columns,
                y=grid.index,
                z=grid.to_numpy(),
                colorscale=scale,
                zmin=cmin,
                zmax=cmax,
                showscale=col == len(panels),
                hoverongaps=False,
                colorbar=dict(title=f"best {metric}") if col == len(panels) else None,
                customdata=counts.to_numpy(),
                hovertemplate="Q~%{x:.3g}<br>R~%{y:.3g}<br>best=%{z:.4g}"
                "<br>%{customdata} configurations<extra></extra>",
            ),
            row=1,
            col=col,
        )
        q_axis = _axis("log", *q_range) if q_range else {"type": "log", "dtick": 1}
        fig.update_xaxes(title="Q (process noise)", **q_axis, row=1, col=col)
    r_axis = _axis("log", *r_range) if r_range else {"type": "log", "dtick": 1}
    fig.update_yaxes(title="R (measurement noise)", **r_axis, row=1, col=1)
    return _base(fig, height=420)
