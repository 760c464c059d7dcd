"""The analyses on small frames whose answers are known by hand."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from koala_sweep import analysis as A
from koala_sweep.analysis.sensitivity import binned_profile, binned_qr

T0 = datetime(2026, 1, 1)


def trials(rows: list[dict]) -> pd.DataFrame:
    """A trials frame as the store's reader returns it, from short row dicts."""
    out = []
    for i, r in enumerate(rows, start=1):
        row = {
            "study": "s",
            "arm": r["arm"],
            "optimizer": r.get("optimizer", r["arm"]),
            "trial": i,
            "state": r.get("state", "COMPLETE"),
            "seed": r.get("seed", 0),
            "epochs": r.get("epochs", 3),
            "value": r.get("value"),
        }
        row.update(r.get("params", {}))
        row.update(
            {
                "optuna_trial_number": r.get("number", i),
                "ray_trial_id": f"t{i}",
                "started_at": T0,
                "finished_at": T0 + timedelta(seconds=r.get("seconds", 10)),
                "error": None,
            }
        )
        out.append(row)
    return pd.DataFrame(out)


def arms(spaces: dict[str, tuple[str, dict]], budget: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        [(a, o, budget, s) for a, (o, s) in spaces.items()],
        columns=["arm", "optimizer", "budget", "search_space"],
    )


def test_configurations_average_seeds_and_take_the_worst_state():
    t = trials(
        [
            {"arm": "a", "number": 0, "seed": 0, "value": 1.0, "params": {"lr": 0.1}},
            {"arm": "a", "number": 0, "seed": 1, "value": 3.0, "params": {"lr": 0.1}},
            {"arm": "a", "number": 1, "seed": 0, "value": 0.5, "params": {"lr": 0.2}},
            {
                "arm": "a",
                "number": 1,
                "seed": 1,
                "state": "DIVERGED",
                "value": None,
                "params": {"lr": 0.2},
            },
            {
                "arm": "a",
                "number": 2,
                "seed": 0,
                "state": "RUNNING",
                "value": None,
                "params": {"lr": 0.3},
            },
        ]
    )
    c = A.configurations(t).set_index("configuration")
    assert c.loc[0, "state"] == "COMPLETE" and c.loc[0, "value"] == 2.0
    assert c.loc[0, "value_std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert c.loc[0, "seeds"] == 2 and c.loc[0, "lr"] == 0.1
    # One diverged seed makes the configuration diverged, and it has no value.
    assert c.loc[1, "state"] == "DIVERGED" and np.isnan(c.loc[1, "value"])
    assert c.loc[2, "state"] == "RUNNING"


def test_expected_best_after_k_is_exact_and_brute_force_agrees():
    values = [0.9, 0.4, 0.7, 0.5]
    t = trials([{"arm": "a", "value": v} for v in values])
    c = A.configurations(t)
    tun = A.tunability(c, "minimize", n_bootstrap=200).set_index("k")
    for k in (1, 2, 3):
        brute = np.mean([min(draw) for draw in itertools.product(values, repeat=k)])
        assert tun.loc[k, "expected_best"] == pytest.approx(brute)
        assert tun.loc[k, "low"] <= tun.loc[k, "expected_best"] + 1e-12
        assert tun.loc[k, "expected_best"] <= tun.loc[k, "high"] + 1e-12
    # Maximizing: the expected best of one draw is the mean; more draws only raise it.
    tmax = A.tunability(c, "maximize").set_index("k")
    assert tmax.loc[1, "expected_best"] == pytest.approx(np.mean(values))
    brute = np.mean([max(d) for d in itertools.product(values, repeat=2)])
    assert tmax.loc[2, "expected_best"] == pytest.approx(brute)


def test_diverged_configurations_count_as_the_worst_value_in_tunability():
    t = trials(
        [
            {"arm": "a", "value": 1.0},
            {"arm": "a", "value": 2.0},
            {"arm": "b", "value": 1.0},
            {"arm": "b", "state": "DIVERGED", "value": None},
        ]
    )
    tun = A.tunability(A.configurations(t), "minimize").set_index(["arm", "k"])
    # b's diverged configuration stands for the study's worst value, 2.0.
    assert tun.loc[("b", 1), "expected_best"] == pytest.approx(1.5)
    assert tun.loc[("a", 1), "expected_best"] == pytest.approx(1.5)


def test_robustness_shares():
    t = trials(
        [
            {"arm": "a", "value": 1.00},
            {"arm": "a", "value": 1.04},
            {"arm": "a", "value": 1.20},
            {"arm": "a", "state": "PRUNED", "value": 1.01, "epochs": 1},
            {"arm": "b", "value": 2.0},
            {"arm": "b", "state": "DIVERGED", "value": None},
        ]
    )
    r = A.robustness(A.configurations(t), "minimize").set_index("arm")
    assert r.loc["a", "within_5pct"] == pytest.approx(2 / 4)  # pruned never counts
    assert r.loc["a", "within_25pct"] == pytest.approx(3 / 4)
    assert r.loc["a", "pruned_share"] == pytest.approx(1 / 4)
    assert r.loc["b", "within_1pct"] == pytest.approx(1 / 2)
    assert r.loc["b", "diverged_share"] == pytest.approx(1 / 2)
    # Against the best of all arms, b (best 2.0) is never close to a's 1.0.
    assert r.loc["b", "study_within_5pct"] == 0.0


def test_sensitivity_marks_the_best_region_and_keeps_diverged():
    space = {"lr": {"log_uniform": [0.001, 1.0]}, "momentum": 0.9}
    t = trials(
        [
            {"arm": "sgd", "value": 0.50, "params": {"lr": 0.01, "momentum": 0.9}},
            {"arm": "sgd", "value": 0.51, "params": {"lr": 0.02, "momentum": 0.9}},
            {"arm": "sgd", "value": 0.90, "params": {"lr": 0.2, "momentum": 0.9}},
            {"arm": "sgd", "state": "DIVERGED", "params": {"lr": 0.9, "momentum": 0.9}},
        ]
    )
    c = A.configurations(t)
    sens = A.sensitivity(c, arms({"sgd": ("sgd", space)}), "minimize", tolerance=0.05)
    assert set(sens["parameter"]) == {"lr"}  # constants are not searched
    assert sens["scale"].iloc[0] == "log" and sens["low"].iloc[0] == 0.001
    assert (sens["state"] == "DIVERGED").sum() == 1
    region = A.best_regions(sens).iloc[0]
    assert (region["low"], region["high"]) == (0.01, 0.02)
    profile = binned_profile(sens, "minimize", bins=3)  # decades: [1e-3,1e-2), [1e-2,0.1), ...
    assert profile["best"].tolist()[:2] == [0.50, 0.90]
    assert profile["diverged_share"].tolist()[-1] == pytest.approx(0.5)


def test_variant_pairs_match_equal_other_hyperparameters():
    space = {
        "lr": {"grid": [0.1, 0.2]},
        "q": {"log_uniform": [0.001, 1.0]},
        "variant": {"choice": ["vanilla", "symmetric"]},
    }
    rows = []
    for n, (lr, q, variant) in enumerate(
        itertools.product([0.1, 0.2], [0.01, 0.1], ["vanilla", "symmetric"])
    ):
        value = 1.0 + lr + (0.05 if variant == "vanilla" else 0.0)
        rows.append(
            {
                "arm": "k",
                "optimizer": "koalapp",
                "number": n,
                "value": value,
                "params": {"lr": lr, "q": q, "variant": variant},
            }
        )
    # A lone vanilla configuration far from every symmetric one: no pair.
    rows.append(
        {
            "arm": "k",
            "optimizer": "koalapp",
            "number": 99,
            "value": 0.1,
            "params": {"lr": 0.1, "q": 0.9, "variant": "vanilla"},
        }
    )
    c = A.configurations(trials(rows))
    pairs = A.variant_pairs(c, arms({"k": ("koalapp", space)}), max_distance=0.05)
    assert len(pairs) == 4 and (pairs["distance"] == 0).all()
    assert (pairs["symmetric"] < pairs["vanilla"]).all()
    assert (pairs["param_lr"].isin([0.1, 0.2])).all()


def test_qr_map_and_its_binned_form():
    space = {
        "q": {"log_uniform": [0.001, 1.0]},
        "r": {"log_uniform": [0.001, 10.0]},
        "variant": {"choice": ["vanilla", "symmetric"]},
    }
    t = trials(
        [
            {
                "arm": "k",
                "optimizer": "koalapp",
                "value": 1.0,
                "params": {"q": 0.01, "r": 0.1, "variant": "vanilla", "lr": 1.0},
            },
            {
                "arm": "k",
                "optimizer": "koalapp",
                "value": 2.0,
                "params": {"q": 0.011, "r": 0.1, "variant": "vanilla", "lr": 1.0},
            },
            {
                "arm": "k",
                "optimizer": "koalapp",
                "value": 3.0,
                "params": {"q": 0.5, "r": "adaptive", "variant": "symmetric", "lr": 1.0},
            },
            {"arm": "adam", "value": 0.5, "params": {"lr": 0.001}},
        ]
    )
    a = arms({"k": ("koalapp", space), "adam": ("adam", {"lr": {"log_uniform": [1e-4, 1e-2]}})})
    qr = A.qr_map(A.configurations(t), a)
    assert len(qr) == 2 and set(qr["arm"]) == {"k"}  # adaptive R is not on the map
    cells = binned_qr(qr, "minimize", bins=4)
    assert cells["best"].min() == 1.0


def test_importance_uses_full_budget_configurations_only():
    rng = np.random.default_rng(0)
    rows = []
    for n in range(40):
        a_, b_ = float(rng.uniform(0, 1)), float(rng.uniform(0, 1))
        rows.append(
            {
                "arm": "x",
                "number": n,
                "value": (a_ - 0.3) ** 2 + 0.001 * b_,
                "epochs": 5,
                "params": {"a": a_, "b": b_},
            }
        )
    for n in range(40, 60):  # pruned early: must not enter the computation
        rows.append(
            {
                "arm": "x",
                "number": n,
                "state": "PRUNED",
                "value": 9.0,
                "epochs": 2,
                "params": {"a": 0.5, "b": 0.5},
            }
        )
    space = {"a": {"uniform": [0.0, 1.0]}, "b": {"uniform": [0.0, 1.0]}}
    imp = A.importance(
        A.configurations(trials(rows)), arms({"x": ("sgd", space)}), "minimize", epochs=5
    )
    for evaluator in ("ped_anova", "fanova"):
        e = imp[imp["evaluator"] == evaluator].set_index("parameter")
        assert e.loc["a", "importance"] > 0.7, evaluator
        assert e.loc["a", "configurations"] == 40
    few = A.importance(
        A.configurations(trials(rows[:5])), arms({"x": ("sgd", space)}), "minimize", epochs=5
    )
    assert few.empty and "at least" in few.attrs["notes"][0]


def _metrics(t: pd.DataFrame, curves: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for trial, values in curves.items():
        arm = t.loc[t["trial"] == trial, "arm"].iloc[0]
        for e, v in enumerate(values, start=1):
            rows.append(
                {
                    "study": "s",
                    "arm": arm,
                    "optimizer": arm,
                    "trial": trial,
                    "epoch": e,
                    "val_loss": v,
                    "epoch_seconds": 10.0 if arm == "a" else 5.0,
                    "step_seconds": 0.2 if arm == "a" else 0.1,
                }
            )
    return pd.DataFrame(rows)


def test_learning_curves_time_to_target_cost_and_pruning():
    t = trials(
        [
            {"arm": "a", "number": 0, "seed": 0, "value": 0.5},
            {"arm": "a", "number": 0, "seed": 1, "value": 0.7},
            {"arm": "a", "number": 1, "seed": 0, "value": 0.9},
            {"arm": "b", "number": 0, "value": 0.8},
            {"arm": "b", "number": 1, "state": "PRUNED", "value": 1.5, "epochs": 1},
        ]
    )
    m = _metrics(
        t,
        {1: [1.0, 0.7, 0.5], 2: [1.2, 0.9, 0.7], 3: [1.0, 0.95, 0.9], 4: [0.9, 0.8, 0.8], 5: [1.5]},
    )
    c = A.configurations(t)
    curves = A.best_learning_curves(c, t, m, "val_loss", "minimize")
    a = curves[curves["arm"] == "a"]
    assert a["mean"].tolist() == pytest.approx([1.1, 0.8, 0.6])
    assert a["low"].tolist() == [1.0, 0.7, 0.5] and a["high"].tolist() == [1.2, 0.9, 0.7]
    ttt = A.time_to_target(c, t, m, "val_loss", "minimize").set_index("arm")
    # Default target: the weaker best, b's 0.8. a's mean curve reaches it at epoch 2 (0.8).
    assert ttt.loc["a", "target"] == 0.8
    assert ttt.loc["a", "epochs"] == 2 and ttt.loc["a", "seconds"] == pytest.approx(20.0)
    assert ttt.loc["b", "epochs"] == 2
    cost = A.cost(m).set_index("arm")
    assert cost.loc["b", "epoch_ratio"] == pytest.approx(0.5)  # reference: the first arm
    savings = A.pruning_savings(c, epochs=3).set_index("arm")
    assert savings.loc["b", "epochs_run"] == 4 and savings.loc["b", "epochs_without_pruning"] == 6
    assert savings.loc["a", "saved_share"] == 0.0


def test_headline_and_verdict_say_the_numbers():
    t = trials(
        [{"arm": "koala", "optimizer": "koalapp", "value": v} for v in (0.5, 0.6)]
        + [{"arm": "adam", "value": v} for v in (0.4, 0.8)]
        + [{"arm": "adam", "state": "DIVERGED"}]
    )
    c = A.configurations(t)
    a = arms({"koala": ("koalapp", {}), "adam": ("adam", {})}, budget=3)
    m = _metrics(t, {1: [0.5], 2: [0.6], 3: [0.4], 4: [0.8]})
    head = A.headline(
        c, a, A.tunability(c, "minimize"), A.robustness(c, "minimize"), A.cost(m), "minimize"
    )
    h = head.set_index("arm")
    assert h.loc["adam", "best"] == 0.4 and h.loc["koala", "finished"] == 2
    assert h.loc["adam", "k"] == 2  # the equal budget: koala finished only 2
    lines = A.verdict(head, "val_loss", "minimize", reference="adam")
    assert lines[0].startswith("Best val_loss (lower is better)") and "adam 0.4," in lines[0]
    assert any("Diverged: adam 33%" in line for line in lines)
    assert A.verdict(head.iloc[0:0], "val_loss", "minimize")[0].startswith("No configuration")
