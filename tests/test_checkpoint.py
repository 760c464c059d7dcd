"""Training resumed from a checkpoint continues bit for bit like uninterrupted training."""

from __future__ import annotations

import io

import pytest
import torch

from koala_sweep.optim import KOALAV, KOALAPlusPlus

from .conftest import tiny_mlp, train_steps

OPTIMIZERS = {
    "koalapp": lambda params: KOALAPlusPlus(params, lr=0.7, weight_decay=1e-3),
    "koalapp_fixed_r": lambda params: KOALAPlusPlus(params, r=0.2, variant="vanilla"),
    "koalapp_multi_tensor_path": lambda params: KOALAPlusPlus(params, foreach=True),
    "koalapp_reference_path": lambda params: KOALAPlusPlus(params, foreach=False),
    "koala_v": lambda params: KOALAV(params, lr=0.5, weight_decay=1e-3),
}


def _round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_is_bit_for_bit(name, dtype):
    make = OPTIMIZERS[name]
    total, cut = 8, 3

    def scheduler_for(opt):
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5], gamma=0.5)

    # Uninterrupted run.
    model = tiny_mlp(7, dtype=dtype)
    opt = make(model.parameters())
    sched = scheduler_for(opt)
    train_steps(model, opt, total, scheduler=sched, dtype=dtype)
    expected = [p.detach().clone() for p in model.parameters()]

    # Interrupted run: train, save through torch.save/torch.load, rebuild everything, continue.
    model = tiny_mlp(7, dtype=dtype)
    opt = make(model.parameters())
    sched = scheduler_for(opt)
    train_steps(model, opt, cut, scheduler=sched, dtype=dtype)
    checkpoint = _round_trip(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    del model, opt, sched
    model = tiny_mlp(99, dtype=dtype)  # different init: everything must come from the file
    model.load_state_dict(checkpoint["model"])
    opt = make(model.parameters())
    opt.load_state_dict(checkpoint["opt"])
    sched = scheduler_for(opt)
    sched.load_state_dict(checkpoint["sched"])
    train_steps(model, opt, total - cut, start=cut, scheduler=sched, dtype=dtype)

    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.equal(p.detach(), e)


def test_loaded_scalars_keep_their_precision_for_bfloat16():
    model = tiny_mlp(7, dtype=torch.bfloat16)
    opt = KOALAPlusPlus(model.parameters())
    train_steps(model, opt, 2, dtype=torch.bfloat16)
    fresh = KOALAPlusPlus(model.parameters())
    fresh.load_state_dict(_round_trip(opt.state_dict()))
    for p in model.parameters():
        for key in ("x", "y", "s_prev"):
            assert fresh.state[p][key].dtype == torch.float32
            assert torch.equal(fresh.state[p][key], opt.state[p][key])
        assert fresh.state[p]["u"].dtype == torch.bfloat16


def test_stepping_a_restored_optimizer_does_not_touch_the_checkpoint():
    model = tiny_mlp(7)
    opt = KOALAPlusPlus(model.parameters())
    train_steps(model, opt, 2)
    checkpoint = opt.state_dict()
    saved = _round_trip(checkpoint)
    snapshot = _round_trip(saved)
    restored = KOALAPlusPlus(model.parameters())
    restored.load_state_dict(saved)
    train_steps(model, restored, 2, start=2)
    assert torch.equal(saved["state"]["koala"]["r"], snapshot["state"]["koala"]["r"])
    for k, st in saved["state"].items():
        for key, t in st.items():
            assert torch.equal(t, snapshot["state"][k][key]), (k, key)
