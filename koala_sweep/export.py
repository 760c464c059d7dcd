"""`koala-sweep export`: a study's trials (or trial-epochs) as CSV, Parquet or JSON files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .store import Store
from .store.reader import BOOKKEEPING_COLUMNS, hyperparameter_columns

FORMATS = ("csv", "parquet", "json")


def export_frame(store: Store, study: str, *, metrics: bool) -> pd.DataFrame:
    """Per trial: study, arm, optimizer, trial, state, seed, epochs, value, and a column per
    hyperparameter named as in the study file. With ``metrics``: one row per trial-epoch with
    every metric, plus the trial's state, seed and hyperparameters."""
    trials = store.trials(study)
    if not metrics:
        return trials.drop(columns=BOOKKEEPING_COLUMNS)
    per_trial = trials[["trial", "state", "seed", *hyperparameter_columns(trials)]]
    return store.metrics(study).merge(per_trial, on="trial", how="left")


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", indent=1, date_format="iso")
