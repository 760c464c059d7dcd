"""What an arm costs to run: training time per epoch and time inside the optimizer step."""

from __future__ import annotations

import numpy as np
import pandas as pd

REFERENCE_OPTIMIZERS = ("adam", "adamw", "sgd")


def cost(metrics: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """One row per arm: the median over its trial-epochs of ``epoch_seconds``,
    ``step_seconds`` (time inside ``optimizer.step`` during the epoch) and
    ``samples_per_second``, and the two time ratios to the reference arm
    (by default the first arm running Adam, else AdamW, else SGD, else the first arm).

    The first epoch of every trial is left out when a trial has more than one: it carries the
    data loading and warm-up that later epochs do not."""
    columns = [
        "arm",
        "optimizer",
        "epoch_seconds",
        "step_seconds",
        "samples_per_second",
        "epoch_ratio",
        "step_ratio",
        "epochs_measured",
    ]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    m = metrics
    later = m["epoch"] > 1
    has_later = later.groupby(m["trial"]).transform("any")
    m = m[later | ~has_later]
    measured = [c for c in ("epoch_seconds", "step_seconds", "samples_per_second") if c in m]
    out = (
        m.groupby("arm", sort=False)
        .agg(
            optimizer=("optimizer", "first"),
            **{c: (c, "median") for c in measured},
            epochs_measured=("epoch", "size"),
        )
        .reset_index()
    )
    for c in ("epoch_seconds", "step_seconds", "samples_per_second"):
        if c not in out:
            out[c] = np.nan
    if reference is None:
        reference = next(
            (
                a
                for opt in REFERENCE_OPTIMIZERS
                for a, o in zip(out["arm"], out["optimizer"], strict=True)
                if o == opt
            ),
            out["arm"].iloc[0],
        )
    ref = out.set_index("arm").loc[reference]
    out["epoch_ratio"] = out["epoch_seconds"] / ref["epoch_seconds"]
    out["step_ratio"] = out["step_seconds"] / ref["step_seconds"]
    out.attrs["reference"] = reference
    return out[columns]
