"""Learning curves of each arm's best configuration, and the time it takes to reach a target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .configurations import best_configurations, configuration_ids, oriented

CURVE_COLUMNS = ["arm", "configuration", "epoch", "mean", "low", "high", "seeds", "seconds"]


def _with_configuration(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    configuration = configuration_ids(trials)
    lookup = pd.Series(configuration.to_numpy(), index=trials["trial"].to_numpy())
    out = metrics.copy()
    out["configuration"] = out["trial"].map(lookup)
    return out


def configuration_curves(trials: pd.DataFrame, metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (arm, configuration, epoch): ``metric`` averaged over seeds (``mean``),
    its min and max over seeds (``low``, ``high``), the seeds reporting that epoch and the
    mean cumulative wall time in seconds up to the end of that epoch."""
    if metrics.empty or metric not in metrics:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    m = _with_configuration(trials, metrics)
    seconds = m["epoch_seconds"] if "epoch_seconds" in m else pd.Series(np.nan, index=m.index)
    m["seconds"] = seconds.fillna(0.0).groupby(m["trial"]).cumsum()
    grouped = m.groupby(["arm", "configuration", "epoch"], sort=False)
    out = grouped.agg(
        mean=(metric, "mean"),
        low=(metric, "min"),
        high=(metric, "max"),
        seeds=(metric, "count"),
        seconds=("seconds", "mean"),
    ).reset_index()
    return out[CURVE_COLUMNS]


def best_learning_curves(
    configs: pd.DataFrame,
    trials: pd.DataFrame,
    metrics: pd.DataFrame,
    metric: str,
    direction: str,
) -> pd.DataFrame:
    """The per-epoch curve of ``metric`` of each arm's best complete configuration, with the
    band across its seeds."""
    best = best_configurations(configs, direction)
    if best.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    keys = set(zip(best["arm"], best["configuration"], strict=True))
    m = _with_configuration(trials, metrics)
    wanted = [k in keys for k in zip(m["arm"], m["configuration"], strict=True)]
    curves = configuration_curves(trials, metrics[np.asarray(wanted, dtype=bool)], metric)
    order = {a: i for i, a in enumerate(best["arm"])}
    return curves.sort_values(
        ["arm", "epoch"], key=lambda s: s.map(order) if s.name == "arm" else s
    ).reset_index(drop=True)


def time_to_target(
    configs: pd.DataFrame,
    trials: pd.DataFrame,
    metrics: pd.DataFrame,
    metric: str,
    direction: str,
    target: float | None = None,
) -> pd.DataFrame:
    """Per arm: the first epoch (and the wall time, seconds) at which its best configuration's
    seed-mean curve reaches ``target``, and the share of its configurations that ever reach it.

    The default target is the weakest of the arms' best final values, so that every arm with a
    complete configuration reaches it: a time-to-result comparison in the AlgoPerf manner."""
    columns = ["arm", "target", "epochs", "seconds", "configurations_reaching"]
    best = best_configurations(configs, direction)
    if best.empty:
        return pd.DataFrame(columns=columns)
    if target is None:
        target = float(best["value"].iloc[int(np.argmax(oriented(best["value"], direction)))])
    goal = oriented([target], direction)[0]
    curves = configuration_curves(trials, metrics, metric)
    reached = curves[oriented(curves["mean"], direction) <= goal + 1e-12]
    first = reached.groupby(["arm", "configuration"], sort=False).first()
    rows = []
    for arm, configuration in zip(best["arm"], best["configuration"], strict=True):
        finished = configs[(configs["arm"] == arm) & (configs["state"] != "RUNNING")]
        hit = first.loc[arm] if arm in first.index.get_level_values(0) else first.iloc[0:0]
        share = len(hit) / len(finished) if len(finished) else np.nan
        if configuration in hit.index:
            epoch, seconds = (
                int(hit.loc[configuration, "epoch"]),
                float(hit.loc[configuration, "seconds"]),
            )
        else:
            epoch, seconds = np.nan, np.nan
        rows.append(
            {
                "arm": arm,
                "target": target,
                "epochs": epoch,
                "seconds": seconds,
                "configurations_reaching": share,
            }
        )
    return pd.DataFrame(rows, columns=columns)
