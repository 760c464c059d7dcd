"""KOALA++ reproduces the authors' reference trajectories (tests/golden/README.md)."""

from __future__ import annotations

import pytest
import torch

from koala_sweep.optim import KOALAPlusPlus

from .conftest import GOLDEN

SCENARIOS = [s["name"] for s in torch.load(GOLDEN, weights_only=True)]
REL_TOL = 1e-9


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(1e-300)
    return float((actual - expected).abs().max() / scale)


def _mlp_losses(params, scenario):
    w1, b1, w2, b2 = params
    logits = torch.tanh(scenario["X"] @ w1.T + b1) @ w2.T + b2
    return torch.nn.functional.cross_entropy(logits, scenario["y"], reduction="none")


def replay(scenario: dict, foreach: bool | None) -> float:
    """Run a golden scenario step by step; return the worst relative error seen."""
    params = [t.clone().requires_grad_(scenario["kind"] == "mlp") for t in scenario["init"]]
    opt = KOALAPlusPlus(params, foreach=foreach, **scenario["hp"])
    worst = 0.0
    for k in range(len(scenario["losses"])):
        if scenario["kind"] == "synthetic":
            for p, g in zip(params, scenario["grads"][k], strict=True):
                p.grad = g.clone()
            opt.step(loss=scenario["losses"][k], loss_var=scenario["loss_vars"][k])
        else:
            per_sample = _mlp_losses(params, scenario)
            loss = per_sample.mean()
            assert loss.item() == pytest.approx(scenario["losses"][k], rel=REL_TOL)
            opt.zero_grad()
            loss.backward()
            opt.step(loss=loss, loss_var=(per_sample.detach() ** 2).mean())
        for p, expected in zip(params, scenario["params_after"][k], strict=True):
            assert p.dtype == torch.float64
            worst = max(worst, _relative_error(p.detach(), expected))
    return worst


@pytest.mark.parametrize(
    "foreach", [None, True, False], ids=["cpu", "multi_tensor", "single_tensor"]
)
@pytest.mark.parametrize("name", SCENARIOS)
def test_reproduces_reference_trajectory(golden_scenarios, name, foreach):
    scenario = next(s for s in golden_scenarios if s["name"] == name)
    assert replay(scenario, foreach) <= REL_TOL


def test_golden_file_covers_what_faithfulness_means(golden_scenarios):
    hps = [s["hp"] for s in golden_scenarios]
    assert {h["variant"] for h in hps} == {"symmetric", "vanilla"}
    assert any(h["r"] is None for h in hps) and any(h["r"] is not None for h in hps)
    assert any(h["weight_decay"] > 0 for h in hps)
    assert any(s["kind"] == "mlp" for s in golden_scenarios)
    skip = next(s for s in golden_scenarios if s["name"] == "sym_zero_grad_skip")
    assert any(float(g.abs().max()) == 0.0 for step in skip["grads"] for g in step)


def test_a_wrong_loss_value_is_caught(golden_scenarios):
    """The check is sharp: feeding the loss rounded to float32 (a real bug this file caught)
    moves the trajectory by more than the tolerance."""
    scenario = dict(next(s for s in golden_scenarios if s["name"] == "sym_fixed_r_wd"))
    scenario["losses"] = [float(torch.tensor(v, dtype=torch.float32)) for v in scenario["losses"]]
    assert replay(scenario, None) > REL_TOL
