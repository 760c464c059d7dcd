"""KOALA-V follows the original KOALA update (one scalar covariance for all weights)."""

from __future__ import annotations

import pytest
import torch

from koala_sweep.optim import KOALAV

from .conftest import classification_batch, tiny_mlp, train_steps


def _koala_v_by_hand(params, grads, loss, loss_var, st, *, lr, q, r, alpha_r, wd):
    """The update written out tensor by tensor with Python branches, from the spec."""
    if r is None:
        st["r"] = alpha_r * st["r"] + (1 - alpha_r) * loss_var
        cur_r = st["r"]
    else:
        cur_r = r
    st["sigma"] += q
    ratios = []
    for p, g in zip(params, grads, strict=True):
        if g is None or g.norm() < 1e-9:
            continue
        g_tilde = g + wd * p
        s = st["sigma"] * g_tilde.norm() ** 2 + cur_r
        layer_loss = loss + 0.5 * wd * p.norm() ** 2
        p.sub_(lr * layer_loss * st["sigma"] / s * g)
        ratios.append(g_tilde.norm() ** 2 / s)
    if ratios:
        st["sigma"] -= st["sigma"] ** 2 * torch.stack(ratios).max()


@pytest.mark.parametrize(
    "hp",
    [
        {"lr": 0.5, "sigma": 0.1, "q": 0.1, "r": None, "alpha_r": 0.9, "wd": 0.0},
        {"lr": 1.0, "sigma": 0.2, "q": 0.05, "r": 0.3, "alpha_r": 0.9, "wd": 5e-3},
    ],
    ids=["online_r", "fixed_r_wd"],
)
def test_matches_the_update_written_out(hp):
    torch.manual_seed(0)
    model = tiny_mlp(11, dtype=torch.float64)
    by_hand = [p.detach().clone() for p in model.parameters()]
    opt = KOALAV(
        model.parameters(),
        lr=hp["lr"],
        sigma=hp["sigma"],
        q=hp["q"],
        r=hp["r"],
        alpha_r=hp["alpha_r"],
        weight_decay=hp["wd"],
    )
    st = {"sigma": torch.tensor(hp["sigma"], dtype=torch.float64), "r": 1.0}
    for k in range(10):
        x, y = classification_batch(k, dtype=torch.float64)
        per = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        loss, var = per.mean(), (per.detach() ** 2).mean()
        opt.zero_grad()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        if k == 3:  # a zero gradient is skipped
            grads[1].zero_()
            list(model.parameters())[1].grad.zero_()
        opt.step(loss=loss, loss_var=var)
        _koala_v_by_hand(
            by_hand,
            grads,
            loss.detach(),
            var,
            st,
            lr=hp["lr"],
            q=hp["q"],
            r=hp["r"],
            alpha_r=hp["alpha_r"],
            wd=hp["wd"],
        )
        for p, e in zip(model.parameters(), by_hand, strict=True):
            torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state["koala"]["sigma"], st["sigma"], rtol=1e-12, atol=0)


def test_trains_a_model():
    model = tiny_mlp(3)
    losses = train_steps(model, KOALAV(model.parameters(), lr=0.5), 30, fixed_batch=True)
    assert losses[-1] < 0.5 * losses[0]


def test_all_tensors_skipped_keeps_the_predicted_sigma():
    p = torch.nn.Parameter(torch.ones(3))
    opt = KOALAV([p], sigma=0.1, q=0.1)
    p.grad = torch.zeros(3)
    opt.step(loss=1.0, loss_var=1.0)
    assert torch.equal(p.detach(), torch.ones(3))
    assert opt.state["koala"]["sigma"].item() == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"q": -0.1}, "q"),
        ({"sigma": -0.1}, "sigma"),
        ({"alpha_r": 1.5}, "alpha_r"),
        ({"r": -1.0}, "r"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KOALAV([torch.nn.Parameter(torch.ones(2))], **kwargs)
