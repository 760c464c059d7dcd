"""Learning-rate schedules as hyperparameters: constant, cosine, step decay at milestones.

The schedule scales each parameter group's initial ``lr`` and is stepped once per batch, so it
acts the same way on KOALA++ (whose ``lr`` is the fraction of the loss a step removes) as on
Adam and SGD. Milestones are in epochs, as in the paper's recipes (decay at 30, 60, 90).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(schedule: str, progress_epochs: float, epochs: int, milestones, gamma: float):
    """Multiplier of the initial learning rate after ``progress_epochs`` (fractional) epochs."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress_epochs / max(epochs, 1), 1.0)))
    if schedule == "step":
        return gamma ** sum(1 for m in milestones if progress_epochs >= m)
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, hp, *, epochs: int, steps_per_epoch: int
) -> LambdaLR:
    """A per-batch scheduler for the schedule keys of validated hyperparameters ``hp``."""
    steps = max(steps_per_epoch, 1)

    def factor(step: int) -> float:
        return lr_factor(hp.lr_schedule, step / steps, epochs, hp.milestones, hp.gamma)

    return LambdaLR(optimizer, factor)
