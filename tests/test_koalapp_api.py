"""KOALA++ behaves as a torch.optim optimizer: arguments, step forms, groups, schedulers."""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest
import torch

from koala_sweep.optim import KOALAPlusPlus

from .conftest import classification_batch, tiny_mlp, train_steps


def _params():
    return [torch.nn.Parameter(torch.randn(3, 2))]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"lr": -0.1}, "lr"),
        ({"q": -1e-3}, "q"),
        ({"sigma": -1.0}, "sigma"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"r": -0.5}, "r"),
        ({"alpha_r": 1.0}, "alpha_r"),
        ({"alpha_r": -0.1}, "alpha_r"),
        ({"variant": "diagonal"}, "variant"),
        ({"lr": float("nan")}, "lr"),
        ({"q": "0.1"}, "q"),
        ({"guard_eps": 0.0}, "guard_eps"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, names):
    with pytest.raises(ValueError, match=names):
        KOALAPlusPlus(_params(), **kwargs)


def test_defaults_are_the_papers():
    opt = KOALAPlusPlus(_params())
    d = opt.defaults
    assert (d["lr"], d["sigma"], d["q"], d["r"], d["alpha_r"], d["weight_decay"]) == (
        1.0,
        0.1,
        0.1,
        None,
        0.9,
        0.0,
    )
    assert d["variant"] == "symmetric" and opt.guards is False


def test_step_needs_the_loss_and_loss_var_when_r_is_online():
    p = _params()
    p[0].grad = torch.ones(3, 2)
    with pytest.raises(ValueError, match="loss"):
        KOALAPlusPlus(p).step()
    with pytest.raises(ValueError, match="loss_var"):
        KOALAPlusPlus(p).step(loss=1.0)
    with pytest.raises(ValueError, match="scalar"):
        KOALAPlusPlus(p).step(loss=torch.ones(4), loss_var=1.0)
    # With R fixed, loss_var is not needed.
    before = p[0].detach().clone()
    KOALAPlusPlus(p, r=0.5).step(loss=1.0)
    assert not torch.equal(before, p[0])


def test_group_cannot_set_its_own_r():
    with pytest.raises(ValueError, match="r"):
        KOALAPlusPlus([{"params": _params(), "r": 0.3}], r=None)
    with pytest.raises(ValueError, match="variant"):
        KOALAPlusPlus([{"params": _params(), "variant": "nope"}])


def _closure_for(model, x, y, per_sample: bool):
    def closure():
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        model.zero_grad()
        losses.mean().backward()
        return losses if per_sample else losses.mean()

    return closure


@pytest.mark.parametrize("per_sample", [False, True], ids=["scalar", "per_sample"])
def test_closure_gives_the_documented_loss_var(per_sample):
    x, y = classification_batch(0)
    a, b = tiny_mlp(1), tiny_mlp(1)
    opt_a = KOALAPlusPlus(a.parameters())
    opt_b = KOALAPlusPlus(b.parameters())
    out = opt_a.step(_closure_for(a, x, y, per_sample))
    assert out.ndim == (1 if per_sample else 0)

    losses = torch.nn.functional.cross_entropy(b(x), y, reduction="none")
    losses.mean().backward()
    # The optimizer reduces what the closure returns in float64 (its accumulation dtype), so the
    # explicit measurement is formed the same way; float32 means differ in the last bits, and
    # by how much depends on the CPU's vector kernels.
    values = losses.detach().double()
    loss = values.mean() if per_sample else losses.mean().detach().double()
    var = (values**2).mean() if per_sample else loss**2
    opt_b.step(loss=loss, loss_var=var)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    # The other choice of V gives a different R and so a different step.
    assert opt_a.diagnostics()["r"].item() == pytest.approx(0.9 + 0.1 * float(var))


def test_closure_and_loss_together_is_an_error():
    model = tiny_mlp()
    x, y = classification_batch(0)
    with pytest.raises(ValueError, match="either"):
        KOALAPlusPlus(model.parameters()).step(_closure_for(model, x, y, False), loss=1.0)


def test_zero_learning_rate_changes_nothing_but_state():
    model = tiny_mlp()
    before = copy.deepcopy(model.state_dict())
    opt = KOALAPlusPlus(model.parameters(), lr=0.0)
    train_steps(model, opt, 3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(opt.state[p]["initialized"] for p in model.parameters())


def test_param_groups_with_their_own_lr_equal_separate_optimizers():
    # One R serves both groups; separate optimizers fed the same V compute the same R, so the
    # two set-ups must agree exactly.
    m1, m2 = tiny_mlp(3), tiny_mlp(3)
    l1, l2 = list(m1.children()), list(m2.children())
    grouped = KOALAPlusPlus(
        [{"params": l1[0].parameters(), "lr": 0.3}, {"params": l1[2].parameters(), "q": 0.05}],
        lr=0.8,
    )
    first = KOALAPlusPlus(l2[0].parameters(), lr=0.3)
    second = KOALAPlusPlus(l2[2].parameters(), lr=0.8, q=0.05)
    for k in range(4):
        x, y = classification_batch(k)
        for model, opts in ((m1, [grouped]), (m2, [first, second])):
            per = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            model.zero_grad()
            per.mean().backward()
            for opt in opts:
                opt.step(loss=per.mean(), loss_var=(per.detach() ** 2).mean())
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)


def test_schedulers_act_on_group_lr():
    model = tiny_mlp(4)
    opt = KOALAPlusPlus(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    manual_model = tiny_mlp(4)
    manual = KOALAPlusPlus(manual_model.parameters(), lr=1.0)
    for k in range(4):
        train_steps(model, opt, 1, start=k, scheduler=sched)
        train_steps(manual_model, manual, 1, start=k)
        if k == 1:
            for g in manual.param_groups:
                g["lr"] = 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for a, b in zip(model.parameters(), manual_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    cosine_model = tiny_mlp(4)
    cos_opt = KOALAPlusPlus(cosine_model.parameters(), lr=2.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(cos_opt, T_max=4)
    train_steps(cosine_model, cos_opt, 4, scheduler=cosine)
    assert cos_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_parameters_without_grad_are_left_alone():
    a = torch.nn.Parameter(torch.randn(4))
    b = torch.nn.Parameter(torch.randn(4))
    opt = KOALAPlusPlus([a, b])
    a.grad = torch.randn(4)
    before = b.detach().clone()
    opt.step(loss=1.0, loss_var=1.0)
    assert torch.equal(before, b) and b not in opt.state


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        KOALAPlusPlus(emb.parameters()).step(loss=1.0, loss_var=1.0)


def test_diagnostics_report_r_smallest_s_and_mean_lambda():
    model = tiny_mlp()
    opt = KOALAPlusPlus(model.parameters())
    train_steps(model, opt, 2)
    d = opt.diagnostics()
    assert set(d) == {"r", "s_min", "lambda_mean", "step"}
    assert int(d["step"]) == 2
    s_all = torch.stack([opt.state[p]["s_prev"] for p in model.parameters()])
    assert d["s_min"].item() == pytest.approx(s_all.min().item())
    assert torch.isfinite(d["lambda_mean"])


def test_vanilla_and_symmetric_differ():
    runs = {}
    for variant in ("vanilla", "symmetric"):
        model = tiny_mlp(5)
        train_steps(model, KOALAPlusPlus(model.parameters(), variant=variant), 5)
        runs[variant] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert not torch.allclose(runs["vanilla"], runs["symmetric"])


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        ("KOALAPlusPlus", {"weight_decay": 1e-2, "guards": True, "foreach": False}),
        ("KOALAPlusPlus", {"weight_decay": 1e-2, "q": 0.3}),
        ("KOALAV", {"sigma": 0.3, "q": 0.05, "r": 0.2, "weight_decay": 1e-2}),
    ],
)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimizer_keeps_its_settings_and_steps_like_the_original(cls, kwargs, how):
    """torch pickles only defaults, state and groups; settings kept as attributes must come
    along (a copy that lost them could not step, or would step differently)."""
    import pickle

    from koala_sweep import optim

    model = tiny_mlp()
    opt = getattr(optim, cls)(model.parameters(), **kwargs)
    train_steps(model, opt, 2)
    twin = copy.deepcopy(model)
    params = list(twin.parameters())
    copied = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    # The copy holds copies of the parameters (groups and state keys): use the twin model's.
    copies = [p for group in copied.param_groups for p in group["params"]]
    twin_of = {id(c): p for c, p in zip(copies, params, strict=True)}
    for group in copied.param_groups:
        group["params"] = [twin_of[id(c)] for c in group["params"]]
    copied.state = defaultdict(dict, {twin_of.get(id(k), k): v for k, v in copied.state.items()})
    for key in ("guards", "foreach", "sigma0", "q", "r"):
        if hasattr(opt, key):
            assert getattr(copied, key) == getattr(opt, key), key
    train_steps(model, opt, 2)
    train_steps(twin, copied, 2)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("foreach", [None, True, False], ids=["cpu", "multi_tensor", "single"])
def test_diagnostics_combine_every_group(foreach):
    """First step, fixed R, no weight decay: lambda = (sigma + Q) ||g||^2 / ((sigma + Q) ||g||^2
    + R) for each tensor, whichever group it is in."""
    gen = torch.Generator().manual_seed(3)
    a, b, c = (torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in (4, 6, 3))
    opt = KOALAPlusPlus(
        [{"params": [a, b]}, {"params": [c], "sigma": 0.3}],
        sigma=0.1,
        q=0.2,
        r=0.5,
        foreach=foreach,
    )
    for p in (a, b, c):
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    opt.step(loss=1.0)
    lambdas = [
        (sigma + 0.2) * p.grad.dot(p.grad) / ((sigma + 0.2) * p.grad.dot(p.grad) + 0.5)
        for p, sigma in ((a, 0.1), (b, 0.1), (c, 0.3))
    ]
    d = opt.diagnostics()
    assert d["lambda_mean"].item() == pytest.approx(torch.stack(lambdas).mean().item(), rel=1e-12)
    s_all = torch.stack([opt.state[p]["s_prev"] for p in (a, b, c)])
    assert d["s_min"].item() == pytest.approx(s_all.min().item(), rel=1e-12)
