"""KOALA++ as a ``torch.optim.Optimizer``.

The class holds hyperparameters and state; the arithmetic lives in plain functions, as in
``torch.optim``: ``_single_tensor_koalapp`` is the spec written out tensor by tensor (the
readable reference, free to branch on values); ``_multi_tensor_koalapp`` is the path for GPUs:
batched reductions, ``torch._foreach_*`` updates, no host-device synchronisation, the skip rule
and the first visit done with masks; ``_cpu_koalapp`` is the path for CPUs, where there is no
device to wait for and per-tensor scalars are cheapest as Python numbers. Tests hold the three
paths together and hold all of them against the authors' reference trajectories
(``tests/golden/``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._measurement import (
    GRAD_SKIP_NORM,
    accumulation_dtype,
    bucket_by_device_and_dtype,
    check_nonnegative,
    check_r_and_alpha,
    dot_list,
    on_device,
    pickled_with_settings,
    split_scalars,
    squared_norms,
    take_measurement,
    update_r,
)

VARIANTS = ("symmetric", "vanilla")

# Key of the optimizer-wide state (R, step count, diagnostics) in ``Optimizer.state``; it is
# not a parameter, and torch.optim keeps such keys as they are in state_dict().
GLOBAL_STATE = "koala"

# Per-parameter scalars. torch.optim's load_state_dict casts every floating state tensor to the
# parameter's dtype, which would round these to bfloat16 for bfloat16 parameters; they are
# therefore set aside before loading and restored in their own dtype afterwards.
_SCALAR_KEYS = ("x", "y", "s_prev", "initialized")


class KOALAPlusPlus(Optimizer):
    r"""KOALA++: Kalman-based optimization with gradient-covariance products.

    Xia, Davtyan, Favaro, NeurIPS 2025 (arXiv 2506.04432). The weights are the hidden state of
    a Kalman filter, the minibatch loss ``L`` is a scalar measurement with noise ``R``, and the
    gradient is the measurement Jacobian. Instead of the covariance ``P`` the optimizer tracks
    ``v_k = H_k P_{k-1}`` per tensor. For each parameter tensor (flattened) with gradient
    ``g``, one step is:

    .. math::
        H &= g + \mathrm{wd}\, p \\
        x &= \|H_{k-1}\|^2,\quad y = H_{k-1}\cdot v_{k-1},\quad a = H\cdot H_{k-1},\quad
             b = H\cdot v_{k-1} \\
        \lambda &= (b + Q a) / S_{k-1},\qquad \alpha = a / x \\
        w &= b/x - a y / x^2 \ \text{(symmetric)},\qquad w = 0\ \text{(vanilla)} \\
        v_k &= (\alpha - \lambda)\, v_{k-1} + Q (H - \lambda H_{k-1}) + w H_{k-1} \\
        S_k &= H\cdot v_k + Q \|H\|^2 + R \\
        p &\leftarrow p - \eta\, (L + \tfrac12 \mathrm{wd} \|p\|^2)\, (v_k + Q H) / S_k

    On a tensor's first step ``v_{k-1} = sigma H``, ``H_{k-1} = H`` and
    ``S_{k-1} = H_{k-1}\cdot v_{k-1} + Q x + R``. A tensor whose gradient is missing or has
    norm below 1e-9 is skipped (value and state unchanged). ``R`` is fixed (``r=<number>``) or
    estimated once per step as ``R <- alpha_r R + (1 - alpha_r) V`` starting from 1.0
    (``r=None``), where ``V`` is the ``loss_var`` given to :meth:`step`.

    Args:
        params: parameters or parameter groups. ``lr``, ``sigma``, ``q``, ``weight_decay`` and
            ``variant`` may differ per group; ``r`` and ``alpha_r`` are one value for the
            optimizer, since one ``R`` serves every tensor.
        lr: eta, the fraction of the current loss the step aims to remove (around 0.1 to 2,
            not Adam's 1e-3). LR schedulers act on each group's ``lr``.
        sigma: initial covariance scale (``v = sigma H`` on the first step; sigma, not
            sigma squared).
        q: process noise Q.
        r: fixed measurement noise R, or ``None`` to estimate it online from ``loss_var``.
        alpha_r: smoothing of the online R estimate, in [0, 1).
        weight_decay: coupled L2 strength; enters H and the loss of each tensor.
        variant: ``"symmetric"`` (the paper's default) or ``"vanilla"`` closure of the
            ``H_k P_{k-2}`` term.
        guards: opt-in numerical guards, off by default so the default is the faithful
            algorithm. When on, ``||H_{k-1}||^2`` is kept at least ``guard_eps``, and ``S``
            (stored and used) is kept at least ``max(Q ||H||^2 + R, guard_eps)``: the
            covariance term ``H P H^T = H . v`` cannot be negative for a real covariance, and
            neither closure guarantees that.
        guard_eps: the floor used by ``guards``.
        foreach: ``None`` for the fastest path for the weights' device (the CPU path for
            float32 and float64 weights on a CPU, the multi-tensor path elsewhere), ``True``
            for the multi-tensor path everywhere, ``False`` for the single-tensor reference
            path (slow, syncs with the device, for testing).
        average_loss_across_ranks: when ``torch.distributed`` is initialised with more than one
            rank, average ``L`` and ``V`` across ranks inside the step so that data-parallel
            replicas apply identical updates.
        process_group: the process group for that average (default: the world).

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = KOALAPlusPlus(model.parameters(), lr=1.0, q=0.1)
        >>> x, y = torch.randn(8, 4), torch.randn(8, 1)
        >>> per_sample = ((model(x) - y) ** 2).squeeze(1)
        >>> loss = per_sample.mean()
        >>> loss.backward()
        >>> _ = opt.step(loss=loss, loss_var=loss.detach() ** 2)
        >>> opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        sigma: float = 0.1,
        q: float = 0.1,
        r: float | None = None,
        alpha_r: float = 0.9,
        weight_decay: float = 0.0,
        variant: str = "symmetric",
        *,
        guards: bool = False,
        guard_eps: float = 1e-12,
        foreach: bool | None = None,
        average_loss_across_ranks: bool = True,
        process_group: Any = None,
    ) -> None:
        name = type(self).__name__
        check_r_and_alpha(r, alpha_r, name)
        if not isinstance(guard_eps, (int, float)) or not guard_eps > 0:
            raise ValueError(f"{name}: guard_eps must be a number > 0, got {guard_eps!r}")
        defaults = dict(
            lr=lr,
            sigma=sigma,
            q=q,
            weight_decay=weight_decay,
            variant=variant,
            r=r,
            alpha_r=alpha_r,
        )
        self._check_group_values(defaults)
        self.guards = bool(guards)
        self.guard_eps = float(guard_eps)
        self.foreach = foreach
        self.average_loss_across_ranks = average_loss_across_ranks
        self.process_group = process_group
        super().__init__(params, defaults)
        self._set_up_unpickled_parts()

    def _set_up_unpickled_parts(self) -> None:
        """What neither a state dict nor a pickle carries: built on creation and on unpickling."""
        # Where H = g + wd p is formed on a CPU (see _multi_tensor_chunk): one chunk's worth,
        # about CPU_CHUNK_BYTES or the largest tensor. Not state: it holds nothing between
        # steps and is not saved.
        self._h_scratch: dict[torch.dtype, Tensor] = {}
        self.register_load_state_dict_pre_hook(_set_aside_scalars)
        self.register_load_state_dict_post_hook(_restore_scalars)

    def __getstate__(self) -> dict[str, Any]:
        settings = ("guards", "guard_eps", "foreach", "average_loss_across_ranks")
        return pickled_with_settings(self, super().__getstate__(), settings)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._set_up_unpickled_parts()

    def _check_group_values(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        for key in ("lr", "sigma", "q", "weight_decay"):
            check_nonnegative(key, group[key], name)
        if group["variant"] not in VARIANTS:
            raise ValueError(
                f"{name}: variant must be one of {', '.join(VARIANTS)}, got {group['variant']!r}"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("r", "alpha_r"):
            if key in param_group and param_group[key] != self.defaults[key]:
                raise ValueError(
                    f"{type(self).__name__}: {key} is one value for the whole optimizer "
                    f"(one R serves every tensor); a parameter group cannot set {key}="
                    f"{param_group[key]!r}"
                )
        super().add_param_group(param_group)
        self._check_group_values(self.param_groups[-1])

    @property
    def r_adaptive(self) -> bool:
        return self.defaults["r"] is None

    def diagnostics(self) -> dict[str, Tensor]:
        """The last step's R, smallest S and mean lambda over the tensors it updated, as
        device tensors (reading them with ``.item()`` is the caller's synchronisation)."""
        g = self.state.get(GLOBAL_STATE, {})
        return {k: g[k] for k in ("r", "s_min", "lambda_mean", "step") if k in g}

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], Any] | None = None,
        *,
        loss: Tensor | float | None = None,
        loss_var: Tensor | float | None = None,
    ) -> Any:
        """One KOALA++ step.

        Call after ``backward()`` as ``step(loss=L, loss_var=V)``: L is the minibatch mean loss
        and V the value that feeds the online R estimate (required when ``r=None``, ignored
        when R is fixed). Or call ``step(closure)``: the closure zeroes the gradients, computes
        the loss, calls ``backward()`` on the minibatch mean and returns either that scalar
        (V = L**2, the square of the batch-mean loss, as in the paper's image scripts) or the
        per-sample loss vector l (L = mean(l), V = mean(l**2), as in the original KOALA). A
        ``loss_var`` passed with a closure overrides the derived V. Returns the closure's
        output, or L.
        """
        name = type(self).__name__
        m = take_measurement(self, closure, loss, loss_var, needs_loss_var=self.r_adaptive)
        if m.device is None:
            return m.returned(closure)
        device, loss_t, var_t = m.device, m.loss, m.loss_var

        gstate = self.state[GLOBAL_STATE]
        r = update_r(gstate, self.defaults["r"], self.defaults["alpha_r"], var_t, device)
        # (gstate.get("step", torch.zeros(...)) would build the default on every step.)
        steps = gstate.get("step")
        gstate["step"] = torch.ones((), dtype=torch.int64) if steps is None else steps + 1

        s_mins: list[Tensor] = []
        lambda_sums: list[Tensor] = []
        counts: list[Tensor] = []
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if torch.is_complex(p):
                    raise RuntimeError(f"{name} does not support complex parameters")
                params.append(p)
                grads.append(p.grad)
                states.append(self._state_for(p))
            if not params:
                continue
            fn = self._path_for(params)
            scratch = {} if fn is _single_tensor_koalapp else {"h_scratch": self._h_scratch}
            diag = fn(
                params,
                grads,
                states,
                **scratch,
                lr=group["lr"],
                sigma=group["sigma"],
                q=group["q"],
                weight_decay=group["weight_decay"],
                symmetric=group["variant"] == "symmetric",
                loss=loss_t,
                r=r,
                guards=self.guards,
                guard_eps=self.guard_eps,
            )
            for s_min, lam_sum, count in diag:
                s_mins.append(s_min.to(device, torch.float64))
                lambda_sums.append(lam_sum.to(device, torch.float64))
                counts.append(count.to(device, torch.float64))
        if len(s_mins) == 1:  # one group in one piece: nothing to combine
            gstate["s_min"] = s_mins[0]
            gstate["lambda_mean"] = lambda_sums[0] / counts[0]
        elif s_mins:
            gstate["s_min"] = torch.stack(s_mins).min()
            gstate["lambda_mean"] = torch.stack(lambda_sums).sum() / torch.stack(counts).sum()
        return m.returned(closure)

    def _path_for(self, params: list[Tensor]) -> Callable[..., list]:
        """The step function for one group: the reference when ``foreach=False``, the
        multi-tensor path when ``foreach=True`` or off the CPU, and on a CPU (float32 and
        float64 weights) the per-tensor path with host scalars."""
        if self.foreach is False:
            return _single_tensor_koalapp
        if self.foreach is None and all(
            p.device.type == "cpu" and p.dtype == accumulation_dtype(p.dtype) for p in params
        ):
            return _cpu_koalapp
        return _multi_tensor_koalapp

    def _state_for(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            acc = accumulation_dtype(p.dtype)
            # u (= v + Q H, see _multi_tensor_chunk) and H_prev start at zero and
            # "initialized" false: the first step that sees a nonzero gradient substitutes
            # v = sigma H, H_prev = H.
            state["u"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["h_prev"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key in ("x", "y", "s_prev"):
                state[key] = torch.zeros((), dtype=acc, device=p.device)
            state["initialized"] = torch.zeros((), dtype=torch.bool, device=p.device)
        return state


def _set_aside_scalars(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    state_dict = dict(state_dict)
    kept, scalars = {}, {}
    # torch.optim's load keeps tensors that already have the right dtype and device by
    # reference; the buffers are cloned so that stepping the restored optimizer (u is updated in
    # place) never writes into a checkpoint the caller still holds.
    for key, value in state_dict["state"].items():
        if isinstance(value, dict):
            value = {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in value.items()}
        if isinstance(value, dict) and key != GLOBAL_STATE:
            scalars[key] = {k: value[k] for k in _SCALAR_KEYS if k in value}
            kept[key] = {k: v for k, v in value.items() if k not in _SCALAR_KEYS}
        else:
            kept[key] = value
    saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    current = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer._koala_pending_scalars = (dict(zip(saved_ids, current, strict=False)), scalars)  # type: ignore[attr-defined]
    state_dict["state"] = kept
    return state_dict


def _restore_scalars(optimizer: Optimizer) -> None:
    id_map, scalars = optimizer.__dict__.pop("_koala_pending_scalars", ({}, {}))
    for saved_id, values in scalars.items():
        p = id_map.get(saved_id)
        if p is None:
            continue
        for k, v in values.items():
            optimizer.state[p][k] = v.detach().to(p.device)
    gstate = optimizer.state.get(GLOBAL_STATE)
    if gstate:
        device = next(p.device for g in optimizer.param_groups for p in g["params"])
        for k, v in list(gstate.items()):
            if isinstance(v, Tensor) and k != "step":
                gstate[k] = v.to(device)


def _single_tensor_koalapp(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    *,
    lr: float,
    sigma: float,
    q: float,
    weight_decay: float,
    symmetric: bool,
    loss: Tensor,
    r: Tensor | float,
    guards: bool,
    guard_eps: float,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The spec, one tensor at a time, in the accumulation dtype. Readable, not fast.

    The state keeps ``u = v + Q H`` (see ``_multi_tensor_chunk``); this path converts at its
    boundary and otherwise follows the spec line by line.
    """
    wd = weight_decay
    s_values, lambdas = [], []
    for p, g, st in zip(params, grads, states, strict=True):
        if g.norm(2) < GRAD_SKIP_NORM:
            continue
        acc = accumulation_dtype(p.dtype)
        rr = on_device(r, p.device, acc)
        h = (g + wd * p).reshape(-1).to(acc)
        initialized = bool(st["initialized"])
        if initialized:
            h_prev = st["h_prev"].reshape(-1).to(acc)
            v_prev = st["u"].reshape(-1).to(acc) - q * h_prev
        else:
            v_prev = sigma * h
            h_prev = h
        x = torch.dot(h_prev, h_prev)
        y = torch.dot(h_prev, v_prev)
        s_prev = st["s_prev"] if initialized else y + q * x + rr
        if guards:
            x = x.clamp_min(guard_eps)
            s_prev = s_prev.clamp_min(guard_eps)
        a = torch.dot(h, h_prev)
        b = torch.dot(h, v_prev)
        lam = (b + q * a) / s_prev
        alpha = a / x
        w = b / x - a * y / x**2 if symmetric else 0.0
        v = (alpha - lam) * v_prev + q * (h - lam * h_prev) + w * h_prev
        s = torch.dot(v + q * h, h) + rr
        if guards:
            s = torch.maximum(s, q * torch.dot(h, h) + rr).clamp_min(guard_eps)
        p_flat = p.reshape(-1).to(acc)
        layer_loss = loss.to(p.device, acc) + 0.5 * wd * torch.dot(p_flat, p_flat)
        p.add_((-lr * layer_loss * (v + q * h) / s).view_as(p).to(p.dtype))
        u = v + q * h
        st["u"].copy_(u.view_as(p))
        st["h_prev"].copy_(h.view_as(p))
        st["x"].copy_(torch.dot(h, h))
        st["y"].copy_(torch.dot(h, u))
        st["s_prev"].copy_(s)
        st["initialized"].fill_(True)
        s_values.append(s.to(torch.float64))
        lambdas.append(lam.to(torch.float64))
    if not s_values:
        return []
    s_vec, lam_vec = torch.stack(s_values), torch.stack(lambdas)
    return [(s_vec.min(), lam_vec.sum(), torch.tensor(float(len(lambdas))))]


def _cpu_koalapp(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    *,
    h_scratch: dict[torch.dtype, Tensor],
    lr: float,
    sigma: float,
    q: float,
    weight_decay: float,
    symmetric: bool,
    loss: Tensor,
    r: Tensor | float,
    guards: bool,
    guard_eps: float,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The step on a CPU: one tensor after another, its scalars as Python floats.

    On a CPU reading a dot product back is free (there is no device to wait for), while every
    small tensor operation costs about a microsecond of dispatch. The multi-tensor path's
    per-tensor scalars, kept as device vectors so that a GPU never waits, take some seventy
    such operations per step whatever the model's size; here they are float64 Python numbers
    and the branches of the spec (skip, first visit) are plain ``if``s. Each tensor's passes run
    back to back while its arrays are still in cache, and the multipliers are plain numbers,
    which CPU kernels apply faster than 0-d tensors. State and algebra are the multi-tensor
    path's (``u = v + Q H``, see ``_multi_tensor_chunk``); with weight decay H is formed in
    ``h_scratch``, one buffer per dtype as large as the largest tensor, kept by the optimizer.
    """
    wd = weight_decay
    loss_f, r_f = float(loss), float(r)
    s_min, lambda_sum, count = math.inf, 0.0, 0
    need = max(p.numel() for p in params) if wd != 0.0 else 0
    for p, g, st in zip(params, grads, states, strict=True):
        g_flat = g.reshape(-1)
        g_sq = torch.dot(g_flat, g_flat).item()
        if math.sqrt(g_sq) < GRAD_SKIP_NORM:  # NaN compares false: a NaN gradient is stepped
            continue
        if wd != 0.0:
            p_flat = p.reshape(-1)
            p_sq = torch.dot(p_flat, p_flat).item()
            buf = h_scratch.get(p.dtype)
            if buf is None or buf.numel() < need:
                buf = h_scratch[p.dtype] = torch.empty(need, dtype=p.dtype)
            h_flat = buf[: p.numel()]
            h = h_flat.view(p.shape)
            torch.add(g, p, alpha=wd, out=h)
            c = torch.dot(h_flat, h_flat).item()
        else:
            p_sq = 0.0
            h, h_flat, c = g, g_flat, g_sq
        u, h_prev = st["u"], st["h_prev"]
        initialized = st["initialized"].item()
        if initialized:
            x, y, s_prev = st["x"].item(), st["y"].item(), st["s_prev"].item()
            a = torch.dot(h_flat, h_prev.reshape(-1)).item()
            b = torch.dot(h_flat, u.reshape(-1)).item()
        else:  # v_prev = sigma H, H_prev = H: u_prev = (sigma + Q) H
            x = a = c
            y = b = (sigma + q) * c
            s_prev = y + r_f
        x_true = x
        if guards:
            x, s_prev = _max(x, guard_eps), _max(s_prev, guard_eps)
        lam = _div(b, s_prev)
        alpha = _div(a, x)
        w = 0.0
        if symmetric:
            w = _div(b, x) - _div(a * y, x * x)
            if guards and x > x_true:
                w -= _div(q * a * (x - x_true), x * x)  # see _guard_correction
        c1 = alpha - lam
        c2 = w - q * alpha
        if initialized:
            u.mul_(c1).add_(h_prev, alpha=c2).add_(h, alpha=2 * q)
        else:
            torch.mul(h, c1 * (sigma + q) + c2 + 2 * q, out=u)
        d = torch.dot(h_flat, u.reshape(-1)).item()
        s = _max(_max(d, q * c) + r_f, guard_eps) if guards else d + r_f
        p.add_(u, alpha=_div(-lr * (loss_f + 0.5 * wd * p_sq), s))
        h_prev.copy_(h)
        st["x"].fill_(c)
        st["y"].fill_(d)
        st["s_prev"].fill_(s)
        st["initialized"].fill_(True)
        s_min = _min(s_min, s)
        lambda_sum += lam
        count += 1
    if not count:
        return []
    as_tensors = torch.tensor([s_min, lambda_sum, count], dtype=torch.float64).unbind(0)
    return [tuple(as_tensors)]  # type: ignore[list-item]


def _guard_correction(q: Any, a: Any, x: Any, x_true: Any) -> Any:
    """What the u-form's symmetric w carries beyond the spec's when the guard raised x.

    In u = v + Q H the products b = H.u_prev and y = H_prev.u_prev exceed the spec's H.v_prev and
    H_prev.v_prev by Q a and Q ||H_prev||^2, and those Q terms cancel in w = b/x - a y/x^2 only
    when x is ||H_prev||^2 itself. A guard that raised x to guard_eps leaves
    Q a (x - ||H_prev||^2) / x^2 behind, subtracted (only where the guard acted, so that an
    overflowed x stays as the reference has it) so that the guarded step is the reference's."""
    return q * a * (x - x_true) / (x * x)


def _div(a: float, b: float) -> float:
    """a / b with IEEE semantics (a zero divisor gives an infinity or NaN, as a tensor
    division does): a diverging run must record its NaN, not raise ZeroDivisionError."""
    if b != 0.0:
        return a / b
    if a != a or a == 0.0:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _max(a: float, b: float) -> float:
    """max that keeps a NaN, as ``torch.maximum`` does (Python's ``max`` depends on order)."""
    return a if a != a or a >= b else b


def _min(a: float, b: float) -> float:
    return a if a != a or a <= b else b


def _multi_tensor_koalapp(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    *,
    h_scratch: dict[torch.dtype, Tensor] | None = None,
    **hyper: Any,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The same step for many tensors at once, without a host-device synchronisation.

    ``h_scratch`` (the optimizer's, kept across steps) holds one CPU buffer per dtype in which
    each chunk forms H when there is weight decay.
    """
    out = []
    for (device, dtype), idx in bucket_by_device_and_dtype(range(len(params)), params).items():
        for chunk in _cache_sized_chunks([params[i] for i in idx]):
            ps = [params[i] for i in idx[chunk]]
            gs = [grads[i] for i in idx[chunk]]
            hs = None
            if hyper["weight_decay"] != 0.0 and device.type == "cpu" and h_scratch is not None:
                hs = _views_of_scratch(h_scratch, gs, dtype)
            out.append(
                _multi_tensor_chunk(
                    ps,
                    gs,
                    [states[i] for i in idx[chunk]],
                    device=device,
                    dtype=dtype,
                    h_out=hs,
                    **hyper,
                )
            )
    return out


def _views_of_scratch(
    h_scratch: dict[torch.dtype, Tensor], like: list[Tensor], dtype: torch.dtype
) -> list[Tensor]:
    """Contiguous tensors shaped like ``like``, laid end to end in the (grown when too small)
    scratch buffer for ``dtype``."""
    total = sum(t.numel() for t in like)
    buf = h_scratch.get(dtype)
    if buf is None or buf.numel() < total:
        buf = h_scratch[dtype] = torch.empty(total, dtype=dtype)
    views, offset = [], 0
    for t in like:
        views.append(buf[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


# On a CPU every elementwise pass streams its operands through memory, and a ResNet-18 is 47 MB
# per array: a step that ran each of its passes over all tensors at once would miss the cache
# on every pass. Tensors are therefore stepped in groups of about this many bytes per array, so
# that a group's g, p, u, H_prev and H stay in a typical last-level cache through all the passes
# of its step (benchmarks/optimizer_step.py measures the effect). GPUs pay per kernel launch
# instead and have no such cache to exploit, so they take one group.
CPU_CHUNK_BYTES = 4 * 1024 * 1024


def _cache_sized_chunks(tensors: list[Tensor]) -> list[slice]:
    if not tensors or tensors[0].device.type != "cpu":
        return [slice(0, len(tensors))]
    chunks, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        size += t.numel() * t.element_size()
        if size >= CPU_CHUNK_BYTES:
            chunks.append(slice(start, i + 1))
            start, size = i + 1, 0
    if start < len(tensors):
        chunks.append(slice(start, len(tensors)))
    return chunks


def _multi_tensor_chunk(
    ps: list[Tensor],
    gs: list[Tensor],
    sts: list[dict[str, Tensor]],
    *,
    device: torch.device,
    dtype: torch.dtype,
    lr: float,
    sigma: float,
    q: float,
    weight_decay: float,
    symmetric: bool,
    loss: Tensor,
    r: Tensor | float,
    guards: bool,
    guard_eps: float,
    h_out: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step for tensors that share a device and dtype.

    The state holds ``u_k = v_k + Q H_k = H_k (P_{k-1} + Q)``, the gradient times the
    *predicted* covariance, instead of ``v_k``. In u the spec's recursion reads

        lambda = H.u_prev / S_prev,   alpha = a / x,   w = H.u_prev / x - a y / x^2,
        u = (alpha - lambda) u_prev + (w - Q alpha) H_prev + 2 Q H,
        S = H.u + R,                  p <- p - eta L_p u / S,

    with a = H.H_prev, x = ||H_prev||^2, y = H_prev.u_prev (the Q terms of the spec cancel
    exactly), so the update of p is a single pass and S needs one dot product. x and y are the
    previous step's ||H||^2 and H.u, kept rather than recomputed. Per-tensor scalars are
    stacked into vectors, so their arithmetic costs a fixed number of small ops.

    The first visit (v_prev = sigma H, H_prev = H) and the skip rule only change the three
    coefficients of the u update (first visit: only H; skipped: u unchanged and a zero step),
    so no tensor value is branched on.
    """
    wd = weight_decay
    acc = accumulation_dtype(dtype)
    us = [st["u"] for st in sts]
    h_prevs = [st["h_prev"] for st in sts]
    x_old = torch.stack([st["x"] for st in sts])
    y_old = torch.stack([st["y"] for st in sts])
    s_old = torch.stack([st["s_prev"] for st in sts])
    init = torch.stack([st["initialized"] for st in sts])
    rr = on_device(r, device, acc)

    g_sq = squared_norms(gs, acc)
    skip = g_sq.sqrt() < GRAD_SKIP_NORM
    # H lives only through this chunk's step and is then copied into H_prev's buffer: keeping
    # the fresh H as the new H_prev instead would hand the old buffer back to the allocator
    # and make every step fault in new memory for the whole model (on CPU that costs more than
    # the copy). For the same reason a CPU forms H in the optimizer's scratch buffer
    # (``h_out``, one cache-sized chunk) rather than in fresh memory each step; a GPU's
    # caching allocator makes the fresh tensors cheap there. Without weight decay H is the
    # gradient itself. A skipped tensor's H only feeds products that are masked below.
    if wd != 0.0:
        p_sq = squared_norms(ps, acc)
        if h_out is None:
            hs = torch._foreach_add(gs, ps, alpha=wd)
        else:
            hs = h_out
            for h, g, p in zip(hs, gs, ps, strict=True):
                torch.add(g, p, alpha=wd, out=h)
        c = squared_norms(hs, acc)
    else:
        p_sq = None
        hs = gs
        c = g_sq
    a = torch.stack(dot_list(hs, h_prevs, acc))
    b = torch.stack(dot_list(hs, us, acc))
    # First visit: v_prev = sigma H and H_prev = H, so u_prev = (sigma + Q) H and every
    # product is a multiple of ||H||^2.
    first = (sigma + q) * c
    x = torch.where(init, x_old, c)
    y = torch.where(init, y_old, first)
    a = torch.where(init, a, c)
    b = torch.where(init, b, first)
    s_prev = torch.where(init, s_old, y + rr)
    x_true = x
    if guards:
        x = x.clamp_min(guard_eps)
        s_prev = s_prev.clamp_min(guard_eps)
    lam = b / s_prev
    alpha = a / x
    if symmetric:
        w = b / x - a * y / (x * x)
        if guards:
            w = w - torch.where(x > x_true, _guard_correction(q, a, x, x_true), 0.0)
    else:
        w = torch.zeros_like(x)
    c1 = alpha - lam
    c2 = w - q * alpha
    zero, one = torch.zeros_like(c1), torch.ones_like(c1)
    c3 = torch.where(init, torch.full_like(c1, 2 * q), c1 * (sigma + q) + c2 + 2 * q)
    c1 = torch.where(skip, one, torch.where(init, c1, zero))
    c2 = torch.where(skip | ~init, zero, c2)
    c3 = torch.where(skip, zero, c3)

    torch._foreach_mul_(us, split_scalars(c1, acc))
    torch._foreach_addcmul_(us, h_prevs, split_scalars(c2, acc))
    torch._foreach_addcmul_(us, hs, split_scalars(c3, acc))

    d = torch.stack(dot_list(hs, us, acc))
    if guards:
        s = (torch.maximum(d, q * c) + rr).clamp_min(guard_eps)
    else:
        s = d + rr
    layer_loss = loss.to(device, acc)
    if p_sq is not None:
        layer_loss = layer_loss + 0.5 * wd * p_sq
    # A skipped tensor's S may be 0 or NaN: where, not a product, keeps its step at zero.
    coef = torch.where(skip, zero, -lr * layer_loss / s)
    torch._foreach_addcmul_(ps, us, split_scalars(coef, acc))

    # H_prev <- H, except for skipped tensors (lerp with a weight of exactly 0 or 1 returns that
    # endpoint exactly).
    torch._foreach_lerp_(h_prevs, hs, split_scalars(~skip, dtype))
    new_x = torch.where(skip, x_old, c)
    new_y = torch.where(skip, y_old, d)
    new_s = torch.where(skip, s_old, s)
    new_init = init | ~skip
    for st, xi, yi, si, ii in zip(
        sts, new_x.unbind(0), new_y.unbind(0), new_s.unbind(0), new_init.unbind(0), strict=True
    ):
        st["x"], st["y"], st["s_prev"], st["initialized"] = xi, yi, si, ii

    s_min = torch.where(skip, torch.full_like(s, float("inf")), s).min()
    lambda_sum = torch.where(skip, zero, lam).sum()
    return s_min, lambda_sum, (~skip).sum()
