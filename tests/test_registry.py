"""build_optimizer: study-file hyperparameter names reach the right optimizer, bad ones fail
with the optimizer and key named; loss_var kinds; LR schedules."""

from __future__ import annotations

import math

import pytest
import torch

from koala_sweep.optim import KOALAV, KOALAPlusPlus
from koala_sweep.optim._measurement import loss_and_loss_var
from koala_sweep.optim.registry import (
    OPTIMIZERS,
    HyperparameterError,
    UnknownOptimizerError,
    build_optimizer,
)
from koala_sweep.optim.schedules import build_lr_scheduler, lr_factor


def _params():
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_with_defaults_and_steps(name):
    params = _params()
    built = build_optimizer(name, params, {})
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.detach().clone() for p in params]
    built.step(torch.rand(8) + 0.5)
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))


def test_koalapp_hyperparameters_reach_the_optimizer():
    built = build_optimizer(
        "koalapp",
        _params(),
        {
            "lr": 2.0,
            "q": 0.2,
            "sigma": 0.3,
            "r": 0.5,
            "variant": "vanilla",
            "weight_decay": 5e-4,
            "guards": True,
        },
    )
    opt = built.optimizer
    assert isinstance(opt, KOALAPlusPlus) and opt.guards
    group = opt.param_groups[0]
    assert (group["lr"], group["q"], group["sigma"], group["variant"], group["weight_decay"]) == (
        2.0,
        0.2,
        0.3,
        "vanilla",
        5e-4,
    )
    assert opt.defaults["r"] == 0.5
    adaptive = build_optimizer("koalapp", _params(), {"r": "adaptive"}).optimizer
    assert adaptive.defaults["r"] is None
    assert built.hyperparameters.loss_var == "batch_mean_sq"
    koala_v = build_optimizer("koala_v", _params(), {"q": 0.05})
    assert isinstance(koala_v.optimizer, KOALAV) and koala_v.optimizer.q == 0.05
    assert koala_v.hyperparameters.loss_var == "per_sample_sq"


def test_baseline_hyperparameters_reach_the_optimizer():
    sgd = build_optimizer("sgd", _params(), {"lr": 0.05, "momentum": 0.9, "nesterov": True})
    g = sgd.optimizer.param_groups[0]
    assert isinstance(sgd.optimizer, torch.optim.SGD)
    assert (g["lr"], g["momentum"], g["nesterov"]) == (0.05, 0.9, True)
    adam = build_optimizer("adam", _params(), {"betas": [0.8, 0.99], "lr": 3e-4})
    assert adam.optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    adamw = build_optimizer("adamw", _params(), {})
    assert isinstance(adamw.optimizer, torch.optim.AdamW)
    assert adamw.optimizer.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize(
    ("name", "hp", "key"),
    [
        ("koalapp", {"q": -0.1}, "q"),
        ("koalapp", {"r": -1}, "r"),
        ("koalapp", {"r": "sometimes"}, "r"),
        ("koalapp", {"variant": "diagonal"}, "variant"),
        ("koalapp", {"alpha_r": 1.0}, "alpha_r"),
        ("koalapp", {"loss_var": "median"}, "loss_var"),
        ("koalapp", {"momentum": 0.9}, "momentum"),
        ("adam", {"q": 0.1}, "q"),
        ("adam", {"betas": [0.9, 1.2]}, "betas"),
        ("adam", {"lr": 0}, "lr"),
        ("sgd", {"nesterov": True}, "nesterov"),
        ("sgd", {"lr_schedule": "step"}, "milestones"),
        ("sgd", {"lr_schedule": "step", "milestones": [60, 30]}, "milestones"),
        ("sgd", {"lr_schedule": "linear"}, "lr_schedule"),
        ("koala_v", {"variant": "vanilla"}, "variant"),
    ],
)
def test_bad_hyperparameters_name_the_optimizer_and_key(name, hp, key):
    with pytest.raises(HyperparameterError) as err:
        build_optimizer(name, _params(), hp)
    assert err.value.optimizer == name and err.value.key == key
    assert repr(name) in str(err.value) and repr(key) in str(err.value)
    if "unknown hyperparameter" in str(err.value):
        assert "known: " in str(err.value)  # the names the optimizer does have
    elif key in hp:
        assert repr(hp[key]) in str(err.value)  # the offending value is shown


def test_union_errors_say_what_is_expected():
    with pytest.raises(HyperparameterError, match="'adaptive'"):
        build_optimizer("koalapp", _params(), {"r": "sometimes"})


def test_unknown_optimizer_lists_the_known_ones():
    with pytest.raises(UnknownOptimizerError, match="koalapp, koala_v, adam, adamw, sgd"):
        build_optimizer("lion", _params(), {})


def test_loss_var_kinds_have_the_documented_values():
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0])
    mean = 3.0
    assert loss_and_loss_var(losses, "batch_mean_sq")[1].item() == pytest.approx(mean**2)
    assert loss_and_loss_var(losses, "per_sample_sq")[1].item() == pytest.approx(12.5)
    assert loss_and_loss_var(losses, "per_sample_var")[1].item() == pytest.approx(3.5)
    assert loss_and_loss_var(losses, "per_sample_var")[0].item() == pytest.approx(mean)


def test_loss_var_choice_changes_the_r_estimate():
    rs = {}
    for kind in ("batch_mean_sq", "per_sample_sq", "per_sample_var"):
        params = _params()
        built = build_optimizer("koalapp", params, {"loss_var": kind})
        for p in params:
            p.grad = torch.ones_like(p)
        built.step(torch.tensor([1.0, 2.0, 3.0, 6.0]))
        rs[kind] = built.optimizer.diagnostics()["r"].item()
    assert rs["batch_mean_sq"] == pytest.approx(0.9 + 0.1 * 9.0)
    assert rs["per_sample_sq"] == pytest.approx(0.9 + 0.1 * 12.5)
    assert rs["per_sample_var"] == pytest.approx(0.9 + 0.1 * 3.5)


def test_schedule_factors():
    assert lr_factor("constant", 5.0, 10, (), 0.1) == 1.0
    assert lr_factor("cosine", 0.0, 10, (), 0.1) == 1.0
    assert lr_factor("cosine", 5.0, 10, (), 0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 10.0, 10, (), 0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("step", 29.9, 100, (30, 60, 90), 0.1) == 1.0
    assert lr_factor("step", 30.0, 100, (30, 60, 90), 0.1) == pytest.approx(0.1)
    assert lr_factor("step", 95.0, 100, (30, 60, 90), 0.1) == pytest.approx(1e-3)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_step_schedule_acts_on_koalapp_group_lr_per_batch():
    built = build_optimizer(
        "koalapp", _params(), {"lr": 2.0, "lr_schedule": "step", "milestones": [1], "gamma": 0.5}
    )
    sched = build_lr_scheduler(built.optimizer, built.hyperparameters, epochs=2, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(built.optimizer.param_groups[0]["lr"])
        sched.step()
    assert lrs == [2.0] * 4 + [1.0] * 4
    assert not math.isnan(lrs[-1])
