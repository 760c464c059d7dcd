"""From trials (one per configuration and seed) to configurations (one per Optuna trial).

The store keeps one trial per seed of a sampled configuration; every analysis compares
configurations, with the spread across seeds alongside. The search space of an arm, as written
in the study file, tells which hyperparameters were searched and on which scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..spec import Distribution, parse_param
from ..store.reader import hyperparameter_columns

# A configuration's state from its seeds' states: one diverged seed makes the configuration
# diverged (as the trainable reports it to Optuna), and so on down this list.
STATE_PRECEDENCE = ("RUNNING", "DIVERGED", "FAILED", "PRUNED", "COMPLETE")
TERMINAL_STATES = ("COMPLETE", "PRUNED", "DIVERGED", "FAILED")
KOALA_OPTIMIZERS = ("koalapp", "koala_v")


def searched(space: dict) -> dict[str, Distribution]:
    """The searched hyperparameters of an arm's search space (constants left out)."""
    out = {}
    for name, raw in space.items():
        parsed = parse_param(raw)
        if isinstance(parsed, Distribution):
            out[name] = parsed
    return out


def scale(dist: Distribution) -> str:
    """``log``, ``linear`` or ``categorical``: how an axis of this hyperparameter is drawn."""
    if dist.kind == "log_uniform":
        return "log"
    if dist.kind in ("uniform", "int"):
        return "linear"
    return "categorical"


def oriented(values, direction: str) -> np.ndarray:
    """Values turned so that lower is better, whatever the study's direction."""
    v = np.asarray(values, dtype=np.float64)
    return v if direction == "minimize" else -v


def relative_gap(values, best: float, direction: str) -> np.ndarray:
    """How far each value is behind ``best``, as a fraction of ``|best|`` (absolute when the
    best is 0). Never negative for finite values; NaN stays NaN."""
    gap = oriented(values, direction) - oriented([best], direction)[0]
    scale_ = abs(best) if best != 0 and np.isfinite(best) else 1.0
    return np.maximum(gap, 0.0) / scale_


def configuration_ids(trials: pd.DataFrame) -> pd.Series:
    """Each trial's configuration: its Optuna trial number within the arm. A trial without
    one (should not happen) stands alone, under minus its store id."""
    number = trials["optuna_trial_number"]
    ids = np.where(number.notna(), number, -trials["trial"]).astype(np.int64)
    return pd.Series(ids, index=trials.index)


def configurations(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: ``arm, optimizer, configuration, state, value, value_std,
    seeds, epochs, seconds`` and its hyperparameters.

    ``value`` is the mean over seeds of the study's metric at the trial's last epoch, for
    complete and pruned configurations (NaN for diverged, failed and running ones);
    ``value_std`` its standard deviation over seeds (NaN with one seed). ``configuration`` is
    the Optuna trial number within the arm. ``seconds`` is the mean wall time of a seed.
    """
    params = hyperparameter_columns(trials)
    if trials.empty:
        return pd.DataFrame(
            columns=[
                "arm",
                "optimizer",
                "configuration",
                "state",
                "value",
                "value_std",
                "seeds",
                "epochs",
                "seconds",
                *params,
            ]
        )
    frame = trials.copy()
    frame["configuration"] = configuration_ids(frame)
    frame["rank"] = frame["state"].map({s: i for i, s in enumerate(STATE_PRECEDENCE)})
    frame["seconds"] = (
        pd.to_datetime(frame["finished_at"]) - pd.to_datetime(frame["started_at"])
    ).dt.total_seconds()
    scored = frame["state"].isin(("COMPLETE", "PRUNED"))
    frame["scored_value"] = frame["value"].where(scored).astype(np.float64)
    grouped = frame.groupby(["arm", "configuration"], sort=False)
    out = grouped.agg(
        optimizer=("optimizer", "first"),
        rank=("rank", "min"),
        value=("scored_value", "mean"),
        value_std=("scored_value", "std"),
        seeds=("seed", "size"),
        epochs=("epochs", "max"),
        seconds=("seconds", "mean"),
    ).reset_index()
    out.insert(3, "state", [STATE_PRECEDENCE[int(r)] for r in out.pop("rank")])
    # Only complete and pruned configurations have a value; a configuration with any seed
    # diverged or failed has none.
    out.loc[~out["state"].isin(("COMPLETE", "PRUNED")), ["value", "value_std"]] = np.nan
    out["value"] = out["value"].where(np.isfinite(out["value"].astype(float)))
    firsts = grouped[params].first().reset_index(drop=True) if params else None
    if firsts is not None:
        out = pd.concat([out, firsts], axis=1)
    return out


def best_configurations(configs: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Each arm's best complete configuration (one row per arm, in the arms' order)."""
    complete = configs[(configs["state"] == "COMPLETE") & configs["value"].notna()]
    if complete.empty:
        return complete.iloc[0:0]
    score = pd.Series(oriented(complete["value"], direction), index=complete.index)
    best = score.groupby(complete["arm"], sort=False).idxmin()
    return complete.loc[best.values].reset_index(drop=True)
