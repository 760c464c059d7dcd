"""How the final metric moves with each hyperparameter, per arm; the Q x R map of KOALA++; and
the vanilla against the symmetric variant on matched configurations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .configurations import KOALA_OPTIMIZERS, oriented, relative_gap, scale, searched

SENSITIVITY_COLUMNS = [
    "arm",
    "parameter",
    "scale",
    "low",
    "high",
    "configuration",
    "x",
    "value",
    "value_std",
    "state",
    "near_best",
]


def sensitivity(
    configs: pd.DataFrame, arms: pd.DataFrame, direction: str, tolerance: float = 0.05
) -> pd.DataFrame:
    """One row per (arm, searched hyperparameter, finished configuration): the hyperparameter's
    scale and searched range (``low``, ``high``), its value ``x``, the configuration's value
    (mean over seeds) and spread, its state, and ``near_best``: complete and within
    ``tolerance`` (a fraction) of the arm's best.

    Diverged and failed configurations are kept (value NaN) so that a figure can show where
    they sit; pruned ones carry the value they had when stopped."""
    rows = []
    for arm, space in zip(arms["arm"], arms["search_space"], strict=True):
        group = configs[(configs["arm"] == arm) & (configs["state"] != "RUNNING")]
        if group.empty:
            continue
        complete = group[(group["state"] == "COMPLETE") & group["value"].notna()]
        best = (
            complete["value"].iloc[int(np.argmin(oriented(complete["value"], direction)))]
            if not complete.empty
            else np.nan
        )
        near = (group["state"] == "COMPLETE") & (
            relative_gap(group["value"], best, direction) <= tolerance
        )
        for name, dist in searched(space).items():
            if name not in group:
                continue
            rows.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "parameter": name,
                        "scale": scale(dist),
                        # The searched range, so that a figure shows where in it the
                        # configurations fell (NaN for categorical hyperparameters).
                        "low": float(dist.low) if scale(dist) != "categorical" else np.nan,
                        "high": float(dist.high) if scale(dist) != "categorical" else np.nan,
                        "configuration": group["configuration"].to_numpy(),
                        "x": group[name].to_numpy(dtype=object),
                        "value": group["value"].to_numpy(dtype=np.float64),
                        "value_std": group["value_std"].to_numpy(dtype=np.float64),
                        "state": group["state"].to_numpy(),
                        "near_best": near.to_numpy(),
                    }
                )
            )
    if not rows:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    return pd.concat(rows, ignore_index=True)


def best_regions(sens: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, hyperparameter): the range (``low``, ``high``) that the near-best
    configurations span, or for a categorical one the values they take (``values``)."""
    rows = []
    near = sens[sens["near_best"].astype(bool)] if len(sens) else sens
    for (arm, name), group in near.groupby(["arm", "parameter"], sort=False):
        row = {
            "arm": arm,
            "parameter": name,
            "scale": group["scale"].iloc[0],
            "configurations": len(group),
            "low": np.nan,
            "high": np.nan,
            "values": "",
        }
        if row["scale"] == "categorical":
            row["values"] = ", ".join(sorted({str(v) for v in group["x"]}))
        else:
            x = group["x"].astype(np.float64)
            row["low"], row["high"] = float(x.min()), float(x.max())
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["arm", "parameter", "scale", "configurations", "low", "high", "values"]
    )


def koala_arms(arms: pd.DataFrame) -> list[str]:
    return [a for a, o in zip(arms["arm"], arms["optimizer"], strict=True) if o in KOALA_OPTIMIZERS]


def search_range(arms: pd.DataFrame, name: str) -> tuple[float, float] | None:
    """The widest range any KOALA arm searched ``name`` over, or None if none searched it."""
    lows, highs = [], []
    for arm, space in zip(arms["arm"], arms["search_space"], strict=True):
        dist = searched(space).get(name) if arm in koala_arms(arms) else None
        if dist is not None and scale(dist) != "categorical":
            lows.append(float(dist.low))
            highs.append(float(dist.high))
    return (min(lows), max(highs)) if lows else None


def qr_map(configs: pd.DataFrame, arms: pd.DataFrame) -> pd.DataFrame:
    """Finished configurations of the KOALA arms with numeric Q and R: ``arm, variant, q, r,
    lr, value, state`` (variant ``"-"`` when the arm does not set one)."""
    columns = ["arm", "variant", "configuration", "q", "r", "lr", "value", "state"]
    names = koala_arms(arms)
    group = configs[configs["arm"].isin(names) & (configs["state"] != "RUNNING")]
    if group.empty or "q" not in group or "r" not in group:
        return pd.DataFrame(columns=columns)
    q = pd.to_numeric(group["q"], errors="coerce")
    r = pd.to_numeric(group["r"], errors="coerce")  # R may be "adaptive": not on this map
    keep = q.notna() & r.notna() & (q > 0) & (r > 0)
    group = group[keep]
    out = pd.DataFrame(
        {
            "arm": group["arm"],
            "variant": group["variant"].fillna("-") if "variant" in group else "-",
            "configuration": group["configuration"],
            "q": q[keep],
            "r": r[keep],
            "lr": pd.to_numeric(group["lr"], errors="coerce") if "lr" in group else np.nan,
            "value": group["value"],
            "state": group["state"],
        }
    )
    return out.reset_index(drop=True)[columns]


def _coordinates(group: pd.DataFrame, dims: dict) -> np.ndarray:
    """Each numeric hyperparameter mapped onto [0, 1] of its range (log10 for log ones)."""
    cols = []
    for name, dist in dims.items():
        x = group[name].astype(np.float64).to_numpy()
        lo, hi = float(dist.low), float(dist.high)
        if dist.kind == "log_uniform":
            x, lo, hi = np.log10(x), np.log10(lo), np.log10(hi)
        cols.append((x - lo) / (hi - lo))
    return np.column_stack(cols) if cols else np.zeros((len(group), 0))


def variant_pairs(
    configs: pd.DataFrame, arms: pd.DataFrame, max_distance: float = 0.1
) -> pd.DataFrame:
    """Vanilla and symmetric KOALA++ on matched configurations.

    Within each KOALA arm that searched ``variant``, complete vanilla and symmetric
    configurations are paired when every other categorical hyperparameter is equal and the
    numeric ones are close: the Euclidean distance, with each hyperparameter scaled to [0, 1]
    of its range (log10 for log ranges), is at most ``max_distance`` (0 for a grid). Closest
    pairs first, each configuration used once. Columns: ``arm, pair, distance,
    vanilla_configuration, symmetric_configuration, vanilla, symmetric`` and the vanilla
    configuration's hyperparameters (prefixed ``param_``)."""
    columns = [
        "arm",
        "pair",
        "distance",
        "vanilla_configuration",
        "symmetric_configuration",
        "vanilla",
        "symmetric",
    ]
    out = []
    for arm, space in zip(arms["arm"], arms["search_space"], strict=True):
        if arm not in koala_arms(arms):
            continue
        space_ = searched(space)
        if "variant" not in space_:
            continue
        group = configs[
            (configs["arm"] == arm) & (configs["state"] == "COMPLETE") & configs["value"].notna()
        ]
        numeric = {n: d for n, d in space_.items() if d.kind in ("log_uniform", "uniform", "int")}
        categorical = [n for n, d in space_.items() if n not in numeric and n != "variant"]
        van = group[group["variant"] == "vanilla"]
        sym = group[group["variant"] == "symmetric"]
        if van.empty or sym.empty:
            continue
        # Only pairs within max_distance are ever looked at (a k-d tree): thousands of
        # configurations per variant stay cheap.
        if numeric:
            tree_v = cKDTree(_coordinates(van, numeric))
            tree_s = cKDTree(_coordinates(sym, numeric))
            near = tree_v.sparse_distance_matrix(
                tree_s, max_distance + 1e-12, output_type="ndarray"
            )
            i_all, j_all, d_all = near["i"], near["j"], near["v"]
        else:  # nothing numeric to compare: every pair is at distance 0
            i_all, j_all = (a.ravel() for a in np.indices((len(van), len(sym))))
            d_all = np.zeros(len(i_all))
        for name in categorical:
            same = (
                van[name].to_numpy(dtype=object)[i_all] == sym[name].to_numpy(dtype=object)[j_all]
            )
            i_all, j_all, d_all = i_all[same], j_all[same], d_all[same]
        order = np.lexsort((j_all, i_all, d_all))
        used_v, used_s = set(), set()
        pair = 0
        for k in order:
            i, j, d = int(i_all[k]), int(j_all[k]), float(d_all[k])
            if i in used_v or j in used_s:
                continue
            used_v.add(i)
            used_s.add(j)
            v, s = van.iloc[i], sym.iloc[j]
            row = {
                "arm": arm,
                "pair": pair,
                "distance": float(d),
                "vanilla_configuration": int(v["configuration"]),
                "symmetric_configuration": int(s["configuration"]),
                "vanilla": float(v["value"]),
                "symmetric": float(s["value"]),
            }
            row.update({f"param_{n}": v[n] for n in space_ if n != "variant"})
            out.append(row)
            pair += 1
    frame = pd.DataFrame(out)
    return frame if not frame.empty else pd.DataFrame(columns=columns)


PROFILE_COLUMNS = [
    "arm",
    "parameter",
    "scale",
    "x",
    "bin_low",
    "bin_high",
    "configurations",
    "best",
    "q10",
    "median",
    "q90",
    "diverged_share",
]


def binned_profile(sens: pd.DataFrame, direction: str, bins: int = 30) -> pd.DataFrame:
    """Sensitivity of many configurations, summarised per bin of each numeric hyperparameter
    (log-spaced bins on log ranges): the best value in the bin (the profile: what the best
    tuning of the other hyperparameters reaches at this value), the 10/50/90th percentiles of
    the complete configurations, and the share that diverged or failed. Categorical
    hyperparameters get one row per value. Used where a scatter of thousands of points would
    hide more than it shows."""
    rows = []
    for (arm, name), g in sens.groupby(["arm", "parameter"], sort=False):
        scale_ = g["scale"].iloc[0]
        if scale_ == "categorical":
            keys = g["x"].astype(str)
            edges = None
        else:
            lo, hi = float(g["low"].iloc[0]), float(g["high"].iloc[0])
            edges = (
                np.geomspace(lo, hi, bins + 1) if scale_ == "log" else np.linspace(lo, hi, bins + 1)
            )
            x = g["x"].astype(np.float64).to_numpy()
            keys = pd.Series(
                np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1), index=g.index
            )
        for key, b in g.groupby(keys, sort=True):
            complete = b.loc[b["state"] == "COMPLETE", "value"].dropna().to_numpy(np.float64)
            row = {
                "arm": arm,
                "parameter": name,
                "scale": scale_,
                "configurations": len(b),
                "diverged_share": float(b["state"].isin(("DIVERGED", "FAILED")).mean()),
            }
            if edges is None:
                row.update(x=key, bin_low=np.nan, bin_high=np.nan)
            else:
                low, high = float(edges[key]), float(edges[key + 1])
                center = math.sqrt(low * high) if scale_ == "log" else (low + high) / 2
                row.update(x=center, bin_low=low, bin_high=high)
            if complete.size:
                row["best"] = float(complete.min() if direction == "minimize" else complete.max())
                row["q10"], row["median"], row["q90"] = (
                    float(v) for v in np.quantile(complete, [0.1, 0.5, 0.9])
                )
            else:
                row.update(best=np.nan, q10=np.nan, median=np.nan, q90=np.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def binned_qr(qr: pd.DataFrame, direction: str, bins: int = 20) -> pd.DataFrame:
    """The Q x R map of many configurations as a grid: per (arm, variant, log-Q bin, log-R
    bin), the best complete value and the number of configurations."""
    columns = ["arm", "variant", "q", "r", "best", "configurations"]
    if qr.empty:
        return pd.DataFrame(columns=columns)
    lq, lr = np.log10(qr["q"].astype(float)), np.log10(qr["r"].astype(float))
    q_edges = np.linspace(lq.min(), lq.max() + 1e-12, bins + 1)
    r_edges = np.linspace(lr.min(), lr.max() + 1e-12, bins + 1)
    qi = np.clip(np.searchsorted(q_edges, lq, side="right") - 1, 0, bins - 1)
    ri = np.clip(np.searchsorted(r_edges, lr, side="right") - 1, 0, bins - 1)
    frame = qr.assign(qi=qi, ri=ri)
    agg = "min" if direction == "minimize" else "max"
    out = (
        frame.groupby(["arm", "variant", "qi", "ri"], sort=False)
        .agg(best=("value", agg), configurations=("value", "size"))
        .reset_index()
    )
    q_centers = 10 ** ((q_edges[:-1] + q_edges[1:]) / 2)
    r_centers = 10 ** ((r_edges[:-1] + r_edges[1:]) / 2)
    out["q"] = q_centers[out["qi"]]
    out["r"] = r_centers[out["ri"]]
    return out[columns]
