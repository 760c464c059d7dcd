"""Robustness: how much of an arm's search space lands close to its best."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .configurations import TERMINAL_STATES, oriented, relative_gap

TOLERANCES = (0.01, 0.05, 0.10, 0.25)


def within_column(tolerance: float) -> str:
    return f"within_{round(tolerance * 100):g}pct"


def robustness(
    configs: pd.DataFrame, direction: str, tolerances: tuple[float, ...] = TOLERANCES
) -> pd.DataFrame:
    """One row per arm: finished configurations, the best value, and for each tolerance x the
    share of configurations that completed within x (a fraction) of that best; plus the
    shares that diverged, failed and were pruned. A pruned configuration is never "within":
    the study stopped it as hopeless.

    ``study_within_5pct`` measures against the best of *all* arms instead: an arm whose best
    is poor can look robust against its own best and still rarely get close to the others."""
    rows = []
    scored = configs[(configs["state"] == "COMPLETE") & configs["value"].notna()]["value"]
    study_best = scored.iloc[int(np.argmin(oriented(scored, direction)))] if len(scored) else np.nan
    for arm, group in configs[configs["state"].isin(TERMINAL_STATES)].groupby("arm", sort=False):
        n = len(group)
        complete = group["state"].eq("COMPLETE") & group["value"].notna()
        values = group.loc[complete, "value"]
        best = values.iloc[int(np.argmin(oriented(values, direction)))] if len(values) else np.nan
        gap = relative_gap(group["value"].where(complete), best, direction)
        row = {
            "arm": arm,
            "optimizer": group["optimizer"].iloc[0],
            "configurations": n,
            "best": float(best),
        }
        for tol in tolerances:
            row[within_column(tol)] = float(np.sum(gap <= tol + 1e-12)) / n
        study_gap = relative_gap(group["value"].where(complete), study_best, direction)
        row["study_within_5pct"] = float(np.sum(study_gap <= 0.05 + 1e-12)) / n
        for state in ("DIVERGED", "FAILED", "PRUNED"):
            row[f"{state.lower()}_share"] = float((group["state"] == state).mean())
        rows.append(row)
    columns = [
        "arm",
        "optimizer",
        "configurations",
        "best",
        *(within_column(t) for t in tolerances),
        "study_within_5pct",
        "diverged_share",
        "failed_share",
        "pruned_share",
    ]
    return pd.DataFrame(rows, columns=columns)
