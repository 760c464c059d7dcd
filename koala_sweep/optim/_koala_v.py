"""KOALA-V, the original KOALA (Davtyan, Sameni, Cerkezi, Meishvili, Bielski, Favaro, CVPR
2022), as a baseline in the same family as KOALA++.

KOALA-V models the covariance of all weights as one scalar ``sigma``. Each step first predicts
(``sigma <- sigma + q``), then updates every tensor with its own innovation variance
``s = sigma ||g~||^2 + R`` (``g~ = g + wd p``) and shrinks the shared ``sigma`` by the largest
``sigma^2 ||g~||^2 / s`` over the tensors.
"""

from __future__ import annotations

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
    on_device,
    pickled_with_settings,
    split_scalars,
    squared_norms,
    take_measurement,
    update_r,
)

GLOBAL_STATE = "koala"


class KOALAV(Optimizer):
    r"""KOALA-V: Kalman optimization with one scalar covariance for all weights.

    For each step, with ``sigma`` shared by every tensor:

    .. math::
        \sigma &\leftarrow \sigma + q \\
        \tilde g_l &= g_l + \mathrm{wd}\, p_l,\qquad s_l = \sigma \|\tilde g_l\|^2 + R \\
        p_l &\leftarrow p_l - \eta\,(L + \tfrac12 \mathrm{wd}\|p_l\|^2)\,(\sigma / s_l)\, g_l \\
        \sigma &\leftarrow \sigma - \sigma^2 \max_l \|\tilde g_l\|^2 / s_l

    As in the authors' code the parameter moves along the raw gradient ``g_l`` while
    ``g~_l`` enters ``s_l`` and the covariance update. Tensors whose gradient is missing or has
    norm below 1e-9 are skipped; if every tensor is skipped, ``sigma`` keeps its predicted
    value. ``R`` is fixed or estimated online from ``loss_var`` exactly as in
    :class:`KOALAPlusPlus`, and :meth:`step` takes the same arguments.

    Args:
        params: parameters or parameter groups (``lr`` and ``weight_decay`` may differ per
            group; ``sigma``, ``q``, ``r`` and ``alpha_r`` are one value for the optimizer).
        lr: eta, the fraction of the loss each step aims to remove.
        sigma: initial scalar covariance.
        q: process noise added to ``sigma`` before every update.
        r: fixed measurement noise, or ``None`` to estimate it online.
        alpha_r: smoothing of the online R estimate, in [0, 1).
        weight_decay: coupled L2 strength.
        average_loss_across_ranks, process_group: as in :class:`KOALAPlusPlus`.
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
        *,
        average_loss_across_ranks: bool = True,
        process_group: Any = None,
    ) -> None:
        name = type(self).__name__
        check_nonnegative("sigma", sigma, name)
        check_nonnegative("q", q, name)
        check_r_and_alpha(r, alpha_r, name)
        defaults = dict(lr=lr, weight_decay=weight_decay)
        for key, value in defaults.items():
            check_nonnegative(key, value, name)
        self.sigma0, self.q, self.r, self.alpha_r = float(sigma), float(q), r, float(alpha_r)
        self.average_loss_across_ranks = average_loss_across_ranks
        self.process_group = process_group
        super().__init__(params, defaults)
        self.register_load_state_dict_post_hook(_clone_global_state)

    def __getstate__(self) -> dict[str, Any]:
        settings = ("sigma0", "q", "r", "alpha_r", "average_loss_across_ranks")
        return pickled_with_settings(self, super().__getstate__(), settings)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # hooks are not pickled: registered again
        self.register_load_state_dict_post_hook(_clone_global_state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("sigma", "q", "r", "alpha_r"):
            if key in param_group:
                raise ValueError(
                    f"{type(self).__name__}: {key} is one value for the whole optimizer; a "
                    "parameter group cannot set it"
                )
        super().add_param_group(param_group)
        for key in ("lr", "weight_decay"):
            check_nonnegative(key, self.param_groups[-1][key], type(self).__name__)

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], Any] | None = None,
        *,
        loss: Tensor | float | None = None,
        loss_var: Tensor | float | None = None,
    ) -> Any:
        """One predict-and-update step; arguments as :meth:`KOALAPlusPlus.step`."""
        name = type(self).__name__
        m = take_measurement(self, closure, loss, loss_var, needs_loss_var=self.r is None)
        if m.device is None:
            return m.returned(closure)
        device, loss_t, var_t = m.device, m.loss, m.loss_var
        groups = [
            (group, [p for p in group["params"] if p.grad is not None])
            for group in self.param_groups
        ]

        gstate = self.state[GLOBAL_STATE]
        r = update_r(gstate, self.r, self.alpha_r, var_t, device)
        sigma = gstate.get("sigma")
        if sigma is None:
            sigma = torch.tensor(self.sigma0, dtype=torch.float64, device=device)
        sigma = sigma.to(device) + self.q  # predict

        shrink = torch.zeros((), dtype=torch.float64, device=device)
        for group, params in groups:
            if not params:
                continue
            for (dev, dtype), idx in bucket_by_device_and_dtype(range(len(params)), params).items():
                ps = [params[i] for i in idx]
                gs = [p.grad for p in ps]
                if any(g.is_sparse for g in gs):
                    raise RuntimeError(f"{name} does not support sparse gradients")
                acc = accumulation_dtype(dtype)
                sig, rr = sigma.to(dev, acc), on_device(r, dev, acc)
                wd = group["weight_decay"]
                skip = squared_norms(gs, acc).sqrt() < GRAD_SKIP_NORM
                if wd != 0.0:
                    g_tilde_sq = squared_norms(torch._foreach_add(gs, ps, alpha=wd), acc)
                    layer_loss = loss_t.to(dev, acc) + 0.5 * wd * squared_norms(ps, acc)
                else:
                    g_tilde_sq = squared_norms(gs, acc)
                    layer_loss = loss_t.to(dev, acc).expand_as(g_tilde_sq)
                s = sig * g_tilde_sq + rr
                coef = torch.where(skip, 0.0, -group["lr"] * layer_loss * sig / s)
                torch._foreach_addcmul_(ps, gs, split_scalars(coef, acc))
                ratio = torch.where(skip, 0.0, g_tilde_sq / s).max()
                shrink = torch.maximum(shrink, ratio.to(device, torch.float64))
        gstate["sigma"] = sigma - sigma * sigma * shrink
        gstate["step"] = gstate.get("step", torch.zeros((), dtype=torch.int64)) + 1
        return m.returned(closure)


def _clone_global_state(optimizer: Optimizer) -> None:
    # torch.optim copies non-parameter state by reference; clone so that stepping the restored
    # optimizer never writes into the caller's checkpoint.
    gstate = optimizer.state.get(GLOBAL_STATE)
    if gstate:
        device = next(p.device for g in optimizer.param_groups for p in g["params"])
        for k, v in list(gstate.items()):
            if isinstance(v, Tensor):
                gstate[k] = v.detach().clone() if k == "step" else v.detach().to(device).clone()
