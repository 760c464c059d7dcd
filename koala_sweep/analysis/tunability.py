"""Tunability: the best value a user can expect after k configurations of an arm.

Sivaprasad et al. (2020) argue that optimizers should be compared by what tuning them on a
budget yields, not by their best configuration alone. For each arm and k, the expected best of k
configurations drawn from the arm's finished configurations is computed exactly (order
statistics of draws with replacement); a bootstrap over those configurations gives the band.

The arm's configurations come from its sampler (TPE, GP, ...), not from independent draws, so
this describes "k draws like the ones the study made", which is what the study can answer.
A pruned configuration counts with the value it had when the pruner stopped it (a measured
value, and one that more epochs would only have improved); diverged and failed ones count as
the worst value of the whole study, so an arm that often diverges pays for it at small k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .configurations import TERMINAL_STATES, oriented

TUNABILITY_COLUMNS = ["arm", "k", "expected_best", "low", "high", "configurations"]
MAX_BOOTSTRAP_ELEMENTS = 2_000_000


def _default_ks(n: int) -> np.ndarray:
    if n <= 50:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.geomspace(1, n, 50)).astype(np.int64))


def _expected_best(sorted_scores: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Expected minimum of k draws with replacement, for rows of ascending scores.

    P(min = s_(i)) = ((n - i + 1)/n)^k - ((n - i)/n)^k for the i-th smallest of n."""
    n = sorted_scores.shape[-1]
    tail = (n - np.arange(n)) / n  # P(draw >= s_(i)), i = 1..n
    weights = tail[None, :] ** ks[:, None] - np.append(tail[1:], 0.0)[None, :] ** ks[:, None]
    return sorted_scores @ weights.T


def tunability(
    configs: pd.DataFrame,
    direction: str,
    ks: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (arm, k): the expected best value after k configurations, with a
    ``confidence`` bootstrap band (``low``, ``high``) in the metric's own units.

    ``ks`` defaults to 1..n for each arm's n finished configurations (50 values spread
    geometrically when n > 50). Large arms get fewer bootstrap resamples (at least 200) so that
    10,000 configurations stay fast."""
    finished = configs[configs["state"].isin(TERMINAL_STATES)]
    scored = finished["state"].isin(("COMPLETE", "PRUNED")) & finished["value"].notna()
    all_scores = oriented(finished.loc[scored, "value"], direction)
    if all_scores.size == 0:
        return pd.DataFrame(columns=TUNABILITY_COLUMNS)
    worst = float(all_scores.max())
    rng = np.random.default_rng(seed)
    sign = 1.0 if direction == "minimize" else -1.0
    rows = []
    for arm, group in finished.groupby("arm", sort=False):
        good = group["state"].isin(("COMPLETE", "PRUNED")) & group["value"].notna()
        scores = np.where(good, oriented(group["value"].fillna(0.0), direction), worst)
        n = scores.size
        arm_ks = _default_ks(n) if ks is None else np.asarray(ks, dtype=np.int64)
        point = _expected_best(np.sort(scores)[None, :], arm_ks)[0]
        resamples = max(min(n_bootstrap, MAX_BOOTSTRAP_ELEMENTS // n), min(n_bootstrap, 200))
        samples = np.sort(scores[rng.integers(0, n, size=(resamples, n))], axis=1)
        boot = _expected_best(samples, arm_ks)  # (n_bootstrap, len(ks))
        lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
        lo, hi = np.quantile(boot, [lo_q, hi_q], axis=0)
        # Back to the metric's units; for a maximized metric the band's ends swap.
        frame = pd.DataFrame(
            {
                "arm": arm,
                "k": arm_ks,
                "expected_best": sign * point,
                "low": sign * (lo if sign > 0 else hi),
                "high": sign * (hi if sign > 0 else lo),
                "configurations": n,
            }
        )
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)
