"""The fast paths are the single-tensor reference, fast: same trajectories, no more state than
Adam; the multi-tensor path (GPUs, and ``foreach=True``) never synchronises with the device;
guards are opt-in and change only what they say."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from koala_sweep.optim import KOALAPlusPlus, _koalapp

from .conftest import tiny_mlp, train_steps

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (16,)]

# foreach=None on a CPU takes the per-tensor CPU path; foreach=True forces the multi-tensor path
# a GPU takes; foreach=False is the single-tensor reference.
FAST_PATHS = pytest.mark.parametrize("foreach", [None, True], ids=["cpu", "multi_tensor"])
ALL_PATHS = pytest.mark.parametrize(
    "foreach", [None, True, False], ids=["cpu", "multi_tensor", "single_tensor"]
)


def _synthetic_run(foreach, *, dtype, steps=12, zero_every=4, seed=0, **hp):
    """Random gradients with some all-zero ones (the skip rule), including on the first step."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    opt = KOALAPlusPlus(params, foreach=foreach, **hp)
    trajectory = []
    for k in range(steps):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
            if (k + i) % zero_every == 0:
                g.zero_()
            p.grad = g
        loss = 0.5 + torch.rand((), generator=gen, dtype=torch.float64).item()
        opt.step(loss=loss, loss_var=loss**2 * 1.3)
        trajectory.append([p.detach().clone() for p in params])
    return trajectory, opt


@pytest.mark.parametrize(
    "hp",
    [
        {},
        {"variant": "vanilla"},
        {"r": 0.3, "weight_decay": 5e-4},
        {"weight_decay": 1e-2, "variant": "vanilla", "q": 0.2, "sigma": 0.2},
        {"guards": True, "weight_decay": 1e-3},
        {"q": 0.0},
    ],
    ids=["default", "vanilla", "fixed_r_wd", "vanilla_wd", "guards", "q0"],
)
@FAST_PATHS
def test_fast_paths_equal_reference_float64(hp, foreach):
    fast, opt_fast = _synthetic_run(foreach, dtype=torch.float64, **hp)
    ref, opt_ref = _synthetic_run(False, dtype=torch.float64, **hp)
    for step_fast, step_ref in zip(fast, ref, strict=True):
        for a, b in zip(step_fast, step_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    # Same state layout, same values: checkpoints are interchangeable between the paths.
    for p_fast, p_ref in zip(opt_fast.state, opt_ref.state, strict=True):
        if isinstance(p_fast, str):
            continue
        for key, value in opt_fast.state[p_fast].items():
            torch.testing.assert_close(
                value, opt_ref.state[p_ref][key], rtol=1e-10, atol=1e-12, msg=key
            )


@pytest.mark.parametrize("chunk_bytes", [100, 400])
def test_cpu_chunks_and_the_h_scratch_buffer_follow_the_reference(monkeypatch, chunk_bytes):
    """The multi-tensor path on a CPU: small chunk limits split SHAPES into several chunks of
    different sizes, which form H in turn in one reused (and regrown) scratch buffer."""
    monkeypatch.setattr(_koalapp, "CPU_CHUNK_BYTES", chunk_bytes)
    hp = {"weight_decay": 1e-2, "q": 0.2, "sigma": 0.2}
    fast, opt_fast = _synthetic_run(True, dtype=torch.float64, **hp)
    ref, _ = _synthetic_run(False, dtype=torch.float64, **hp)
    for step_fast, step_ref in zip(fast, ref, strict=True):
        for a, b in zip(step_fast, step_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    assert len(_koalapp._cache_sized_chunks(opt_fast.param_groups[0]["params"])) > 1
    assert opt_fast._h_scratch[torch.float64].numel() >= 35  # the (7, 5) tensor's H was there


def test_cpu_path_forms_h_in_one_scratch_as_large_as_the_largest_tensor():
    hp = {"weight_decay": 1e-2}
    _, opt = _synthetic_run(None, dtype=torch.float64, **hp)
    assert opt._path_for(opt.param_groups[0]["params"]) is _koalapp._cpu_koalapp
    assert opt._h_scratch[torch.float64].numel() == 35  # the (7, 5) tensor
    _, opt = _synthetic_run(None, dtype=torch.float64)
    assert opt._h_scratch == {}  # without weight decay H is the gradient


def test_fast_paths_equal_reference_float32_on_a_model():
    runs = []
    for foreach in (None, True, False):
        model = tiny_mlp(2)
        train_steps(model, KOALAPlusPlus(model.parameters(), foreach=foreach, weight_decay=1e-3), 8)
        runs.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(runs[0], runs[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(runs[1], runs[2], rtol=1e-4, atol=1e-6)


class _NoHostSync(TorchDispatchMode):
    """Fails on every op that copies a tensor value to the host (.item(), bool(t), float(t))."""

    SYNCING = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal"}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in self.SYNCING:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("hp", [{}, {"weight_decay": 5e-4, "guards": True}])
def test_multi_tensor_step_never_syncs_with_the_device(hp):
    model = tiny_mlp()
    opt = KOALAPlusPlus(model.parameters(), foreach=True, **hp)
    train_steps(model, opt, 1)  # state exists
    x = torch.randn(4, 6)
    per = (model(x) ** 2).mean(1)
    loss = per.mean()
    loss.backward()
    with _NoHostSync() as mode:
        opt.step(loss=loss, loss_var=(per.detach() ** 2).mean())
    assert mode.seen == []


def test_off_the_cpu_the_default_is_the_multi_tensor_path():
    """Meta tensors have no values: reading one back (as the CPU path does) raises, so a
    default step on them completes only on the multi-tensor path."""
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in SHAPES]
    for p in params:
        p.grad = torch.empty_like(p)
    opt = KOALAPlusPlus(params, weight_decay=1e-3)
    one = torch.ones((), device="meta")
    for _ in range(2):
        opt.step(loss=one, loss_var=one)
    assert opt._path_for(params) is _koalapp._multi_tensor_koalapp
    with pytest.raises(RuntimeError):
        KOALAPlusPlus(params, foreach=False).step(loss=one, loss_var=one)  # the detector works


def test_low_precision_weights_on_a_cpu_take_the_multi_tensor_path():
    # The CPU path's dot products need float32 or float64 operands.
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    assert KOALAPlusPlus([p])._path_for([p]) is _koalapp._multi_tensor_koalapp
    q = torch.nn.Parameter(torch.randn(4))
    assert KOALAPlusPlus([q])._path_for([q]) is _koalapp._cpu_koalapp


def test_the_sync_detector_sees_the_reference_path_sync():
    model = tiny_mlp()
    opt = KOALAPlusPlus(model.parameters(), foreach=False)
    loss = model(torch.randn(4, 6)).pow(2).mean()
    loss.backward()
    with _NoHostSync() as mode:
        opt.step(loss=loss, loss_var=loss.detach() ** 2)
    assert mode.seen  # the reference branches on values; the detector is not blind


def test_state_is_two_buffers_per_parameter_like_adam():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    opt = KOALAPlusPlus(model.parameters())
    adam = torch.optim.Adam(model.parameters())
    loss = model(torch.randn(5, 64)).pow(2).mean()
    loss.backward()
    opt.step(loss=loss, loss_var=loss.detach() ** 2)
    adam.step()

    def buffer_bytes(o):
        return sum(
            t.numel() * t.element_size()
            for k, s in o.state.items()
            if not isinstance(k, str)
            for t in s.values()
            if isinstance(t, torch.Tensor) and t.ndim > 0
        )

    n_params = sum(p.numel() for p in model.parameters())
    assert buffer_bytes(opt) == 2 * 4 * n_params == buffer_bytes(adam)
    for p in model.parameters():
        st = opt.state[p]
        assert sorted(k for k, t in st.items() if t.ndim > 0) == ["h_prev", "u"]
        assert all(t.ndim == 0 for k, t in st.items() if k not in ("h_prev", "u"))


def _orthogonal_gradients(guards: bool, foreach):
    # With Q = R = 0 the innovation variance S = H.v, which reaches 0 when the gradient turns
    # orthogonal to the previous one: the faithful update divides 0 by 0.
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = KOALAPlusPlus([p], q=0.0, r=0.0, guards=guards, foreach=foreach)
    for g in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]):
        p.grad = torch.tensor(g)
        opt.step(loss=1.0)
    return p.detach()


def _zero_h_prev(guards: bool, foreach):
    # H = g + wd p is exactly zero while g is not: ||H_prev||^2 = 0 and alpha = a / x is 0/0.
    p = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    opt = KOALAPlusPlus([p], weight_decay=0.5, guards=guards, foreach=foreach)
    for g in ([-0.5, 0.0], [0.3, 0.2]):
        p.grad = torch.tensor(g)
        opt.step(loss=1.0, loss_var=1.0)
    return p.detach()


@ALL_PATHS
@pytest.mark.parametrize("case", [_orthogonal_gradients, _zero_h_prev])
def test_guards_keep_degenerate_steps_finite_and_are_off_by_default(case, foreach):
    assert not torch.isfinite(case(False, foreach)).all()
    assert torch.isfinite(case(True, foreach)).all()


@FAST_PATHS
def test_fast_paths_follow_the_reference_when_the_x_guard_acts(foreach):
    """Gradients of norm ~1e-8 make ||H_prev||^2 ~1e-16, below guard_eps: the guard raises x, and
    the fast paths (which keep u = v + Q H) must still take the reference's guarded step."""
    runs = []
    for path in (foreach, False):
        gen = torch.Generator().manual_seed(189)
        params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ([1], [4])]
        opt = KOALAPlusPlus(params, lr=2.0, q=1.0, guards=True, foreach=path)
        for k in range(3):
            for p in params:
                p.grad = 1e-8 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step(loss=1.0 + 0.1 * k, loss_var=4.0)
        assert opt.state[params[1]]["x"] < opt.guard_eps  # the guard did act
        runs.append(params)
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@FAST_PATHS
def test_guards_change_nothing_on_a_healthy_run(foreach):
    plain, _ = _synthetic_run(foreach, dtype=torch.float64)
    guarded, _ = _synthetic_run(foreach, dtype=torch.float64, guards=True)
    torch.testing.assert_close(plain[-1], guarded[-1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_parameters_train_with_float32_reductions(dtype):
    model = tiny_mlp(6, dtype=dtype)
    opt = KOALAPlusPlus(model.parameters(), lr=0.5)
    losses = train_steps(model, opt, 30, dtype=dtype, fixed_batch=True)
    assert losses[-1] < 0.5 * losses[0]
    for p in model.parameters():
        st = opt.state[p]
        assert p.dtype == dtype and st["u"].dtype == dtype and st["h_prev"].dtype == dtype
        assert st["x"].dtype == st["y"].dtype == st["s_prev"].dtype == torch.float32
        assert torch.isfinite(p).all()


def test_bfloat16_follows_the_float32_trajectory():
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_mlp(6, dtype=dtype)
        train_steps(model, KOALAPlusPlus(model.parameters(), lr=0.5), 5, dtype=dtype)
        runs[dtype] = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(runs[torch.bfloat16], runs[torch.float32], rtol=0.05, atol=0.02)


def test_mixed_dtypes_in_one_optimizer():
    a = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, dtype=torch.float32))
    opt = KOALAPlusPlus([a, b])
    for _ in range(3):
        a.grad, b.grad = torch.randn_like(a), torch.randn_like(b)
        opt.step(loss=1.0, loss_var=1.0)
    assert opt.state[a]["x"].dtype == torch.float64 and opt.state[b]["x"].dtype == torch.float32
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    runs = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        params = [torch.randn(s, dtype=torch.float64, device=device) for s in SHAPES]
        opt = KOALAPlusPlus(params, weight_decay=1e-3)
        for k in range(5):
            gen = torch.Generator().manual_seed(k)
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(device)
            one = torch.tensor(1.0, device=device)
            opt.step(loss=one, loss_var=1.2 * one)
        runs.append([p.cpu() for p in params])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
