"""Per-arm summaries of a study from its trials frame: counts by state and the best
configuration. Used by `koala-sweep status` and at the end of `koala-sweep launch`."""

from __future__ import annotations

import math

import pandas as pd

from .store.reader import hyperparameter_columns

STATES = ("COMPLETE", "PRUNED", "DIVERGED", "FAILED", "RUNNING")


def arm_summary(trials: pd.DataFrame, direction: str) -> pd.DataFrame:
    """One row per arm: trial counts per state (one trial = one configuration and seed), the
    best mean value over seeds among complete configurations, and that configuration."""
    rows = []
    for arm, group in trials.groupby("arm", sort=False):
        row: dict = {"arm": arm, "optimizer": group["optimizer"].iloc[0]}
        for state in STATES:
            row[state.lower()] = int((group["state"] == state).sum())
        complete = group[group["state"] == "COMPLETE"]
        best_value, best_params = math.nan, {}
        if not complete.empty:
            per_config = complete.groupby("optuna_trial_number", dropna=False)["value"].mean()
            per_config = per_config.dropna()
            if not per_config.empty:
                number = per_config.idxmin() if direction == "minimize" else per_config.idxmax()
                best_value = float(per_config.loc[number])
                first = complete[complete["optuna_trial_number"] == number].iloc[0]
                best_params = {
                    k: first[k] for k in hyperparameter_columns(group) if pd.notna(first[k])
                }
        row["best_value"] = best_value
        row["best_params"] = best_params
        rows.append(row)
    return pd.DataFrame(rows)


def format_params(params: dict) -> str:
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)
