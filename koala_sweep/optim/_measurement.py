"""The Kalman measurement shared by KOALA++ and KOALA-V: the loss L, the value V that feeds
the measurement noise R, the online estimate of R, and the reductions every step needs.

KOALA treats the minibatch loss as a noisy scalar measurement of the weights. Both optimizers
therefore need, besides the gradients, the scalar L (the minibatch mean loss) and, when R is
estimated online, a scalar V from which R is smoothed. This module turns what the caller gives
(``loss=``/``loss_var=`` or a closure) into those two tensors, keeps them identical across data
parallel ranks, and holds the small numeric helpers both optimizers use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# The reference implementations skip a tensor whose gradient norm is below 1e-9 (its value and
# state stay as they were for that step).
GRAD_SKIP_NORM = 1e-9

# R starts at 1.0 when it is estimated online (the reference's ExpAverage(alpha_r, 1.0)).
R_INIT = 1.0

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which reductions and per-tensor scalars are kept: float64 for float64
    parameters, float32 for everything else (float32, bfloat16, float16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_nonnegative(name: str, value: float, optimizer: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{optimizer}: {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{optimizer}: {name} must be a finite number >= 0, got {value!r}")


def check_r_and_alpha(r: float | None, alpha_r: float, optimizer: str) -> None:
    if r is not None:
        check_nonnegative("r", r, optimizer)
    if (
        not isinstance(alpha_r, (int, float))
        or isinstance(alpha_r, bool)
        or not (0.0 <= alpha_r < 1.0)
    ):
        raise ValueError(f"{optimizer}: alpha_r must be in [0, 1), got {alpha_r!r}")


def resolve_measurement(
    closure: Callable[[], Any] | None,
    loss: Tensor | float | None,
    loss_var: Tensor | float | None,
    *,
    needs_loss_var: bool,
    optimizer: str,
) -> tuple[Any, Tensor, Tensor | None]:
    """Return ``(closure_output, L, V)`` with L and V detached float64 tensors.

    With a closure, the closure runs under ``torch.enable_grad()`` and must call ``backward()``
    on the minibatch *mean* loss itself. It returns either that scalar, giving L = loss and
    V = L**2 (the square of the batch-mean loss, as in the paper's image-classification
    scripts), or the vector of per-sample losses l, giving L = mean(l) and V = mean(l**2) (the
    mean of per-sample squared losses, as in the original KOALA). An explicit ``loss_var``
    overrides the V derived from the closure.
    """
    output = None
    if closure is not None:
        if loss is not None:
            raise ValueError(f"{optimizer}.step: give either a closure or loss=, not both")
        with torch.enable_grad():
            output = closure()
        if output is None:
            raise ValueError(f"{optimizer}.step: the closure must return the loss, got None")
        if isinstance(output, Tensor):
            values = output.detach().to(torch.float64)
        else:
            values = torch.as_tensor(output, dtype=torch.float64)
        if values.ndim == 0:
            loss_t = values
            derived_var = values * values
        else:
            flat = values.reshape(-1)
            if flat.numel() == 0:
                raise ValueError(f"{optimizer}.step: the closure returned an empty loss vector")
            loss_t = flat.mean()
            derived_var = (flat * flat).mean()
        var_t = derived_var if loss_var is None else _scalar(loss_var, "loss_var", optimizer)
        return output, loss_t, var_t

    if loss is None:
        raise ValueError(
            f"{optimizer}.step needs the minibatch mean loss: call step(loss=L, loss_var=V) "
            "after backward(), or step(closure)"
        )
    loss_t = _scalar(loss, "loss", optimizer)
    if loss_var is None:
        if needs_loss_var:
            raise ValueError(
                f"{optimizer}.step: loss_var is required when R is estimated online (r=None); "
                "pass for example loss_var=loss**2, or fix R with r=<number>"
            )
        return output, loss_t, None
    return output, loss_t, _scalar(loss_var, "loss_var", optimizer)


def _scalar(value: Tensor | float, name: str, optimizer: str) -> Tensor:
    # A Python float becomes float64 directly: torch.as_tensor would round it to float32.
    t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
    if t.numel() != 1:
        raise ValueError(
            f"{optimizer}.step: {name} must be a scalar (the minibatch mean), "
            f"got a tensor of shape {tuple(t.shape)}"
        )
    return t.reshape(()).to(torch.float64)


@dataclass
class Measurement:
    """What one step of a KOALA optimizer measured: the closure's output (if any), L and V as
    float64 tensors on ``device`` (the device of the first parameter with a gradient; None when
    no parameter has one and the step has nothing to do)."""

    output: Any
    loss: Tensor
    loss_var: Tensor | None
    device: torch.device | None

    def returned(self, closure: Callable[[], Any] | None) -> Any:
        """What ``step`` returns: the closure's output, or L."""
        return self.output if closure is not None else self.loss


def take_measurement(
    optimizer: Any,
    closure: Callable[[], Any] | None,
    loss: Tensor | float | None,
    loss_var: Tensor | float | None,
    *,
    needs_loss_var: bool,
) -> Measurement:
    """The shared start of a KOALA step: L and V from the caller or the closure, placed on the
    parameters' device and, in a data-parallel job, averaged across ranks."""
    name = type(optimizer).__name__
    output, loss_t, var_t = resolve_measurement(
        closure, loss, loss_var, needs_loss_var=needs_loss_var, optimizer=name
    )
    device = next(
        (p.device for g in optimizer.param_groups for p in g["params"] if p.grad is not None),
        None,
    )
    if device is not None:
        if optimizer.average_loss_across_ranks:
            loss_t, var_t = average_across_ranks(loss_t, var_t, device, optimizer.process_group)
        loss_t = loss_t.to(device)
    return Measurement(output, loss_t, var_t, device)


def average_across_ranks(
    loss: Tensor, loss_var: Tensor | None, device: torch.device, process_group: Any
) -> tuple[Tensor, Tensor | None]:
    """Average L and V over the ranks of a data-parallel job.

    DDP averages gradients but not the loss values KOALA feeds into every update; replicas that
    used their local L and V would drift apart. One all-reduce of two numbers keeps them equal.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return loss, loss_var
    world = dist.get_world_size(process_group)
    if world <= 1:
        return loss, loss_var
    var = loss_var if loss_var is not None else torch.zeros((), dtype=torch.float64, device=device)
    # NCCL reduces only CUDA tensors; gloo takes CPU ones. The parameters' device suits the
    # backend that the job initialised for them.
    buf = torch.stack([loss.to(device), var.to(device)])
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=process_group)
    buf = buf / world
    return buf[0], (buf[1] if loss_var is not None else None)


def update_r(
    global_state: dict[str, Tensor],
    r_fixed: float | None,
    alpha_r: float,
    loss_var: Tensor | None,
    device: torch.device,
) -> Tensor | float:
    """R for this step: the fixed value as a Python float (a new device tensor made from it
    every step would be a host-to-device copy, which waits for the device), or the exponential
    average R <- alpha_r R + (1 - alpha_r) V as a float64 tensor on ``device``, updated once per
    step before any tensor uses it."""
    if r_fixed is not None:
        return float(r_fixed)
    r_prev = global_state.get("r")
    if r_prev is None:
        r_prev = torch.tensor(R_INIT, dtype=torch.float64, device=device)
    assert loss_var is not None
    r_new = alpha_r * r_prev.to(device) + (1 - alpha_r) * loss_var.to(device)
    global_state["r"] = r_new
    return r_new


def on_device(value: Tensor | float, device: torch.device, dtype: torch.dtype) -> Tensor | float:
    """A step scalar (L, R, sigma) where a bucket's arithmetic needs it; floats stay floats."""
    return value.to(device, dtype) if isinstance(value, Tensor) else value


def dot_list(xs: Sequence[Tensor], ys: Sequence[Tensor], acc: torch.dtype) -> list[Tensor]:
    """Per-tensor inner products <x_i, y_i> as 0-d tensors of dtype ``acc``.

    One BLAS dot per tensor: a single read of both operands and no temporary, the cheapest
    reduction on CPU (elementwise products plus a segment sum cost two more passes).
    Low-precision tensors are widened first so that the sum accumulates in float32.
    """
    out = []
    for x, y in zip(xs, ys, strict=True):
        if x.dtype != acc:
            x, y = x.to(acc), y.to(acc)
        out.append(torch.dot(x.reshape(-1), y.reshape(-1)))
    return out


def squared_norms(xs: Sequence[Tensor], acc: torch.dtype) -> Tensor:
    """Per-tensor ||x_i||^2 as one vector of dtype ``acc``.

    On a CPU, tensors already in ``acc`` take a BLAS dot with themselves: it reads each tensor
    once at about twice the speed of ``_foreach_powsum`` there (benchmarks/optimizer_step.py).
    Elsewhere, and for low-precision tensors (which powsum widens on the fly, without a copy),
    the fused multi-tensor reduction is one kernel for the whole list.
    """
    xs = list(xs)
    if xs and xs[0].device.type == "cpu" and all(x.dtype == acc for x in xs):
        return torch.stack([torch.dot(x.reshape(-1), x.reshape(-1)) for x in xs])
    return torch.stack(torch._foreach_powsum(xs, 2, dtype=acc))


def split_scalars(values: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """A vector of per-tensor coefficients as a list of 0-d tensors for ``torch._foreach_*``.

    Multipliers stay in the accumulation dtype (the kernels compute in float32 for bfloat16
    tensors, so the coefficient is not rounded to 8 bits); lerp weights, which are exactly 0 or
    1, take the tensors' own dtype as lerp requires.
    """
    return list(values.to(dtype).unbind(0))


def bucket_by_device_and_dtype(indices: Sequence[int], params: Sequence[Tensor]) -> dict:
    """Group parameter positions by (device, dtype): the multi-tensor kernels need uniform
    lists, and reductions are stacked per bucket."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i in indices:
        p = params[i]
        buckets.setdefault((p.device, p.dtype), []).append(i)
    return buckets


# What feeds the online R estimate, computed from the batch's per-sample losses l with mean L:
# the square of the batch-mean loss (the KOALA++ paper's image scripts), the mean of per-sample
# squared losses (the original KOALA), or the variance of the per-sample losses.
LOSS_VAR_CHOICES = ("batch_mean_sq", "per_sample_sq", "per_sample_var")


def loss_and_loss_var(per_sample: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """L (the mean of ``per_sample``) and V of the chosen ``kind``, both detached 0-d tensors
    on the losses' device (no host synchronisation)."""
    losses = per_sample.detach().reshape(-1).to(torch.float32)
    loss = losses.mean()
    if kind == "batch_mean_sq":
        var = loss * loss
    elif kind == "per_sample_sq":
        var = (losses * losses).mean()
    elif kind == "per_sample_var":
        var = ((losses - loss) ** 2).mean()
    else:
        raise ValueError(f"loss_var must be one of {', '.join(LOSS_VAR_CHOICES)}, got {kind!r}")
    return loss, var


def pickled_with_settings(optimizer: Any, state: dict[str, Any], names: Sequence[str]) -> dict:
    """``torch.optim.Optimizer`` pickles (and deep-copies) only defaults, state and param groups;
    the settings these optimizers keep as attributes are added, or a copy could not step. A
    process group cannot be pickled: a copy uses the default group (``process_group=None``)."""
    return {**state, **{k: getattr(optimizer, k) for k in names}, "process_group": None}
