"""What the pruner saved: epochs run against the epochs a study without pruning would run."""

from __future__ import annotations

import pandas as pd

from .configurations import TERMINAL_STATES


def pruning_savings(configs: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """One row per arm: configurations, how many were pruned, epochs run (summed over seeds),
    the epochs a study without a pruner would have run (each pruned configuration to the
    full budget; diverged and failed ones stop where they stopped either way) and the saved
    share. Running configurations are left out."""
    rows = []
    for arm, group in configs[configs["state"].isin(TERMINAL_STATES)].groupby("arm", sort=False):
        run = (group["epochs"] * group["seeds"]).sum()
        pruned = group["state"] == "PRUNED"
        without = run + ((epochs - group.loc[pruned, "epochs"]) * group.loc[pruned, "seeds"]).sum()
        rows.append(
            {
                "arm": arm,
                "configurations": len(group),
                "pruned": int(pruned.sum()),
                "epochs_run": int(run),
                "epochs_without_pruning": int(without),
                "saved_share": float(1 - run / without) if without else 0.0,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "arm",
            "configurations",
            "pruned",
            "epochs_run",
            "epochs_without_pruning",
            "saved_share",
        ],
    )
