"""The shared training loop: repeatable on the CPU, fair across optimizers, divergence as a
result, schedules applied."""

from __future__ import annotations

import math

import pytest

from koala_sweep.optim.registry import OPTIMIZERS, HyperparameterError
from koala_sweep.workloads.loop import resolve_device, run_trial

from .test_workloads import TINY_LM

SHAKESPEARE = {**TINY_LM, "max_chars": 20000}
TIMINGS = {"epoch_seconds", "step_seconds", "samples_per_second"}


def _run(optimizer="koalapp", hp=None, epochs=2, seed=0, **kw):
    return list(
        run_trial(
            "shakespeare_char_gpt",
            optimizer,
            hp or {},
            epochs=epochs,
            seed=seed,
            workload_args=SHAKESPEARE,
            device="cpu",
            **kw,
        )
    )


def _without_timings(reports):
    return [{k: v for k, v in r.metrics.items() if k not in TIMINGS} for r in reports]


def test_same_seed_same_metrics_other_seed_other_metrics():
    a, b, c = _run(seed=3), _run(seed=3), _run(seed=4)
    assert _without_timings(a) == _without_timings(b)
    assert _without_timings(a) != _without_timings(c)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_runs_through_the_same_loop(optimizer):
    reports = _run(optimizer, epochs=1)
    m = reports[0].metrics
    assert math.isfinite(m["train_loss"]) and math.isfinite(m["val_perplexity"])
    assert ("koala_s_min" in m) == (optimizer == "koalapp")


def test_same_seed_gives_every_optimizer_the_same_initial_model_and_batches():
    # With lr = 0 no optimizer moves the weights: the losses must then agree exactly.
    losses = {
        opt: _run(opt, {"lr": 0.0} if opt.startswith("koala") else {"lr": 1e-30}, epochs=1)[
            0
        ].metrics["train_loss"]
        for opt in ("koalapp", "koala_v", "sgd")
    }
    assert len(set(losses.values())) == 1


def test_divergence_is_a_result_not_an_exception():
    reports = _run("sgd", {"lr": 1e6}, epochs=5)
    assert reports[-1].diverged
    assert len(reports) < 5
    assert reports[-1].reason
    assert all(not r.diverged for r in reports[:-1])


def test_divergence_factor_against_the_first_epoch():
    reports = _run("koalapp", {"lr": 1.0}, epochs=2, divergence_factor=1e-9)
    assert [r.diverged for r in reports] == [False, True]
    assert "first epoch" in reports[-1].reason


def test_cosine_schedule_reaches_zero_at_the_end():
    reports = _run("adam", {"lr": 0.01, "lr_schedule": "cosine"}, epochs=2)
    assert reports[0].metrics["lr"] == pytest.approx(0.005, rel=1e-6)
    assert reports[1].metrics["lr"] == pytest.approx(0.0, abs=1e-12)


def test_bad_input_fails_before_training():
    with pytest.raises(HyperparameterError):
        _run("koalapp", {"q": -1.0})
    with pytest.raises(ValueError, match="epochs"):
        _run(epochs=0)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
