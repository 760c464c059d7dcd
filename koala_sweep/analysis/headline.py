"""The answer in numbers: one row per arm, and the sentences a report opens with."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .configurations import KOALA_OPTIMIZERS, best_configurations, oriented
from .robustness import within_column

HEADLINE_TOLERANCE = 0.05
HEADLINE_COLUMNS = [
    "arm",
    "optimizer",
    "finished",
    "budget",
    "best",
    "best_std",
    "median",
    "k",
    "expected_best_at_k",
    "expected_best_low",
    "expected_best_high",
    "within_5pct",
    "study_within_5pct",
    "diverged_share",
    "epoch_ratio",
]


def equal_budget(configs: pd.DataFrame) -> int:
    """The number of finished configurations every arm has: the budget on which all arms are
    compared."""
    finished = configs[configs["state"] != "RUNNING"]
    counts = finished.groupby("arm", sort=False).size()
    return int(counts.min()) if len(counts) else 0


def headline(
    configs: pd.DataFrame,
    arms: pd.DataFrame,
    tunability: pd.DataFrame,
    robustness: pd.DataFrame,
    cost: pd.DataFrame,
    direction: str,
) -> pd.DataFrame:
    """One row per arm: finished/budget, the best configuration's value (mean and std over
    seeds), the median complete value, the expected best after the equal budget k with its
    band, the share within 5% of the best, the diverged share, and time per epoch relative to
    the reference arm."""
    k = equal_budget(configs)
    best = best_configurations(configs, direction).set_index("arm")
    rob = robustness.set_index("arm") if not robustness.empty else robustness
    tun = tunability[tunability["k"] == k].set_index("arm") if k else tunability.iloc[0:0]
    cst = cost.set_index("arm") if not cost.empty else cost
    rows = []
    for arm, optimizer, budget in zip(arms["arm"], arms["optimizer"], arms["budget"], strict=True):
        group = configs[configs["arm"] == arm]
        complete = group[(group["state"] == "COMPLETE") & group["value"].notna()]
        row = {
            "arm": arm,
            "optimizer": optimizer,
            "finished": int((group["state"] != "RUNNING").sum()),
            "budget": int(budget),
            "best": best.loc[arm, "value"] if arm in best.index else np.nan,
            "best_std": best.loc[arm, "value_std"] if arm in best.index else np.nan,
            "median": float(complete["value"].median()) if len(complete) else np.nan,
            "k": k,
            "expected_best_at_k": tun.loc[arm, "expected_best"] if arm in tun.index else np.nan,
            "expected_best_low": tun.loc[arm, "low"] if arm in tun.index else np.nan,
            "expected_best_high": tun.loc[arm, "high"] if arm in tun.index else np.nan,
            "within_5pct": rob.loc[arm, within_column(HEADLINE_TOLERANCE)]
            if arm in rob.index
            else np.nan,
            "study_within_5pct": rob.loc[arm, "study_within_5pct"] if arm in rob.index else np.nan,
            "diverged_share": rob.loc[arm, "diverged_share"] if arm in rob.index else np.nan,
            "epoch_ratio": cst.loc[arm, "epoch_ratio"] if arm in cst.index else np.nan,
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _ranked(frame: pd.DataFrame, column: str, direction: str) -> list[tuple[str, float]]:
    have = frame[frame[column].notna()]
    order = np.argsort(oriented(have[column], direction), kind="stable")
    return [(have["arm"].iloc[i], float(have[column].iloc[i])) for i in order]


def verdict(
    head: pd.DataFrame,
    metric: str,
    direction: str,
    importance: pd.DataFrame | None = None,
    variants: pd.DataFrame | None = None,
    reference: str | None = None,
) -> list[str]:
    """Plain sentences from the headline table (and importance and variant pairs when
    given): what a reader should take away, every number traceable to a panel."""
    better = "lower" if direction == "minimize" else "higher"
    out = []
    if head.empty or head["finished"].sum() == 0:
        return ["No configuration has finished yet: there is nothing to compare."]
    ranked = _ranked(head, "best", direction)
    if ranked:
        out.append(
            f"Best {metric} ({better} is better) of each arm's best configuration: "
            + ", ".join(f"{a} {_fmt(v)}" for a, v in ranked)
            + "."
        )
    else:
        out.append("No configuration completed its epochs: no arm has a best value yet.")
    k = int(head["k"].iloc[0]) if len(head) else 0
    tuned = _ranked(head, "expected_best_at_k", direction)
    if k and tuned:
        band = head.set_index("arm")
        out.append(
            f"Tuned on the same budget of {k} configurations, the expected best is: "
            + ", ".join(
                f"{a} {_fmt(v)} [{_fmt(band.loc[a, 'expected_best_low'])}, "
                f"{_fmt(band.loc[a, 'expected_best_high'])}]"
                for a, v in tuned
            )
            + f" (90% bootstrap band); {tuned[0][0]} comes out ahead."
        )
    robust = head[head["within_5pct"].notna()].sort_values("within_5pct", ascending=False)
    if len(robust):
        out.append(
            "Share of configurations within 5% of their arm's own best: "
            + ", ".join(
                f"{a} {s:.0%}" for a, s in zip(robust["arm"], robust["within_5pct"], strict=True)
            )
            + "; within 5% of the best of all arms: "
            + ", ".join(
                f"{a} {s:.0%}"
                for a, s in zip(robust["arm"], robust["study_within_5pct"], strict=True)
            )
            + "."
        )
    diverged = head[head["diverged_share"] > 0]
    if len(diverged):
        out.append(
            "Diverged: "
            + ", ".join(
                f"{a} {s:.0%} of its configurations"
                for a, s in zip(diverged["arm"], diverged["diverged_share"], strict=True)
            )
            + "."
        )
    if importance is not None and not importance.empty:
        for (arm, evaluator), group in importance.groupby(["arm", "evaluator"], sort=False):
            if evaluator != "fanova" and "fanova" in set(importance["evaluator"]):
                continue
            top = group.sort_values("importance", ascending=False).iloc[0]
            out.append(
                f"Most important hyperparameter of {arm} ({evaluator}, "
                f"{int(top['configurations'])} full-budget configurations): "
                f"{top['parameter']} ({top['importance']:.0%})."
            )
    if variants is not None and not variants.empty:
        for arm, pairs in variants.groupby("arm", sort=False):
            sym_better = int(
                (
                    oriented(pairs["symmetric"], direction) < oriented(pairs["vanilla"], direction)
                ).sum()
            )
            out.append(
                f"{arm}: the symmetric variant beat vanilla in {sym_better} of {len(pairs)} "
                f"matched configuration pairs."
            )
    koala = head[head["optimizer"].isin(KOALA_OPTIMIZERS) & head["epoch_ratio"].notna()]
    if reference and len(koala):
        out.append(
            "Time per epoch relative to "
            + f"{reference}: "
            + ", ".join(
                f"{a} {r:.2f}x" for a, r in zip(koala["arm"], koala["epoch_ratio"], strict=True)
            )
            + "."
        )
    return out
