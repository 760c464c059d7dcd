"""Every optimizer a study can name, with the hyperparameter names users write in study files.

``build_optimizer(name, params, hp)`` is the one place where a hyperparameter reaches an
optimizer. Values are checked against a pydantic model per optimizer: unknown names and bad
values raise :class:`HyperparameterError` naming the optimizer and the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import Tensor

from ._koala_v import KOALAV
from ._koalapp import KOALAPlusPlus
from ._measurement import LOSS_VAR_CHOICES, loss_and_loss_var


class UnknownOptimizerError(ValueError):
    """An optimizer name the registry does not know."""

    def __init__(self, optimizer: str) -> None:
        self.optimizer = optimizer
        super().__init__(
            f"unknown optimizer {optimizer!r}; choose one of {', '.join(HYPERPARAMETERS)}"
        )


class HyperparameterError(ValueError):
    """A hyperparameter that an optimizer does not have, or a value it cannot take."""

    def __init__(self, optimizer: str, key: str, message: str) -> None:
        self.optimizer, self.key, self.message = optimizer, key, message
        super().__init__(f"optimizer {optimizer!r}: hyperparameter {key!r}: {message}")


LossVar = Literal["batch_mean_sq", "per_sample_sq", "per_sample_var"]
assert set(LossVar.__args__) == set(LOSS_VAR_CHOICES)  # type: ignore[attr-defined]


class _Hyperparameters(BaseModel):
    """Learning-rate schedule keys shared by every optimizer (stepped once per batch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "constant",
        description="constant; cosine (annealed to 0 over the trial's epochs); step (times "
        "gamma at each milestone epoch)",
    )
    milestones: tuple[int, ...] = Field((), description="epochs at which a step schedule decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor of a step schedule")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m <= 0 for m in v) or list(v) != sorted(set(v)):
            raise ValueError("must be strictly increasing positive epochs")
        return v

    @model_validator(mode="after")
    def _milestones_need_step(self) -> _Hyperparameters:
        if self.lr_schedule == "step" and not self.milestones:
            raise ValueError("milestones: a step schedule needs at least one milestone epoch")
        return self


class _KalmanHyperparameters(_Hyperparameters):
    lr: float = Field(1.0, ge=0.0)
    sigma: float = Field(0.1, ge=0.0)
    q: float = Field(0.1, ge=0.0)
    r: float | Literal["adaptive"] = Field(
        "adaptive", description="a fixed R (>= 0) or 'adaptive' (estimated online from loss_var)"
    )
    alpha_r: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)

    @field_validator("r")
    @classmethod
    def _r_nonnegative(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v < 0:
            raise ValueError("a fixed R must be >= 0")
        return v

    def kalman_kwargs(self) -> dict[str, Any]:
        """Constructor arguments KOALA++ and KOALA-V share (``r=None``: R estimated online)."""
        return dict(
            lr=self.lr,
            sigma=self.sigma,
            q=self.q,
            r=None if self.r == "adaptive" else self.r,
            alpha_r=self.alpha_r,
            weight_decay=self.weight_decay,
        )


class KOALAPlusPlusHyperparameters(_KalmanHyperparameters):
    variant: Literal["symmetric", "vanilla"] = "symmetric"
    # The paper's image-classification scripts feed the square of the batch-mean loss.
    loss_var: LossVar = "batch_mean_sq"
    guards: bool = False


class KOALAVHyperparameters(_KalmanHyperparameters):
    # The original KOALA feeds the mean of per-sample squared losses.
    loss_var: LossVar = "per_sample_sq"


class AdamHyperparameters(_Hyperparameters):
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    amsgrad: bool = False

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class AdamWHyperparameters(AdamHyperparameters):
    weight_decay: float = Field(0.01, ge=0.0)


class SGDHyperparameters(_Hyperparameters):
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    dampening: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _nesterov(self) -> SGDHyperparameters:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening 0")
        return self


HYPERPARAMETERS: dict[str, type[_Hyperparameters]] = {
    "koalapp": KOALAPlusPlusHyperparameters,
    "koala_v": KOALAVHyperparameters,
    "adam": AdamHyperparameters,
    "adamw": AdamWHyperparameters,
    "sgd": SGDHyperparameters,
}
OPTIMIZERS = tuple(HYPERPARAMETERS)
SCHEDULE_KEYS = frozenset(_Hyperparameters.model_fields)


def hyperparameter_names(optimizer: str) -> list[str]:
    return list(_model_for(optimizer).model_fields)


def _model_for(optimizer: str) -> type[_Hyperparameters]:
    try:
        return HYPERPARAMETERS[optimizer]
    except KeyError:
        raise UnknownOptimizerError(optimizer) from None


def validate_hyperparameters(optimizer: str, hp: Mapping[str, Any]) -> _Hyperparameters:
    """Typed, checked hyperparameters, or a :class:`HyperparameterError` for the first problem."""
    model = _model_for(optimizer)
    try:
        return model.model_validate(dict(hp))
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        # Hyperparameters are flat: the key is the first part of the location (the rest names
        # a union member or a list index).
        key = str(first["loc"][0]) if first["loc"] else _key_in(first["msg"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            raise HyperparameterError(
                optimizer, key, f"unknown hyperparameter (known: {known})"
            ) from None
        same_key = [e for e in errors if e["loc"] and str(e["loc"][0]) == key]
        field = model.model_fields.get(key)
        if len(same_key) > 1 and field is not None and field.description:
            message = f"expected {field.description}"  # every alternative of a union failed
        else:
            message = first["msg"].removeprefix("Value error, ")
        if key in hp:
            message = f"{message} (got {hp[key]!r})"
        raise HyperparameterError(optimizer, key, message) from None


def _key_in(message: str) -> str:
    # Model-level checks name their key first ("milestones: ...").
    head = message.removeprefix("Value error, ").split(":", 1)[0]
    return head if " " not in head else "?"


@dataclass
class BuiltOptimizer:
    """An optimizer with what the training loop needs to drive it.

    ``step(per_sample)`` takes the per-sample losses of the batch whose gradients were just
    computed; KOALA optimizers get L and the configured V from them, the others ignore them.
    """

    name: str
    optimizer: torch.optim.Optimizer
    hyperparameters: _Hyperparameters

    @property
    def is_kalman(self) -> bool:
        return isinstance(self.optimizer, (KOALAPlusPlus, KOALAV))

    def step(self, per_sample: Tensor) -> None:
        if self.is_kalman:
            loss, loss_var = loss_and_loss_var(per_sample, self.hyperparameters.loss_var)
            self.optimizer.step(loss=loss, loss_var=loss_var)
        else:
            self.optimizer.step()

    def diagnostics(self) -> dict[str, Tensor]:
        if isinstance(self.optimizer, KOALAPlusPlus):
            return self.optimizer.diagnostics()
        return {}


def build_optimizer(
    name: str, params: Iterable[Tensor] | Iterable[dict[str, Any]], hp: Mapping[str, Any]
) -> BuiltOptimizer:
    """Build optimizer ``name`` (koalapp, koala_v, adam, adamw, sgd) from study-file
    hyperparameters. Schedule keys (lr_schedule, milestones, gamma) are validated here and
    applied by :func:`koala_sweep.optim.schedules.build_lr_scheduler`."""
    h = validate_hyperparameters(name, hp)
    if isinstance(h, KOALAPlusPlusHyperparameters):
        opt: torch.optim.Optimizer = KOALAPlusPlus(
            params, **h.kalman_kwargs(), variant=h.variant, guards=h.guards
        )
    elif isinstance(h, KOALAVHyperparameters):
        opt = KOALAV(params, **h.kalman_kwargs())
    elif isinstance(h, AdamHyperparameters):  # Adam and AdamW share their hyperparameters
        adam = torch.optim.AdamW if isinstance(h, AdamWHyperparameters) else torch.optim.Adam
        opt = adam(
            params,
            lr=h.lr,
            betas=h.betas,
            eps=h.eps,
            weight_decay=h.weight_decay,
            amsgrad=h.amsgrad,
            foreach=True,
        )
    else:
        assert isinstance(h, SGDHyperparameters)
        opt = torch.optim.SGD(
            params,
            lr=h.lr,
            momentum=h.momentum,
            nesterov=h.nesterov,
            dampening=h.dampening,
            weight_decay=h.weight_decay,
            foreach=True,
        )
    return BuiltOptimizer(name, opt, h)
