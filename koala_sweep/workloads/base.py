"""What every workload provides: a model on a device, batches of real data, per-sample losses,
an evaluation on held-out data, and the names and directions of the metrics it reports."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

Direction = Literal["minimize", "maximize"]


class WorkloadError(ValueError):
    """An unknown workload, a bad workload argument, or data that cannot be found."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: Direction
    description: str


# Metrics every workload reports, from the training loop itself.
LOOP_METRICS = (
    MetricSpec("train_loss", "minimize", "mean training loss over the epoch's batches"),
    MetricSpec("epoch_seconds", "minimize", "wall time of the epoch's training (no evaluation)"),
    MetricSpec("step_seconds", "minimize", "time spent inside optimizer.step during the epoch"),
    MetricSpec("samples_per_second", "maximize", "training samples processed per second"),
    MetricSpec("lr", "minimize", "learning rate of the first parameter group at the epoch's end"),
)
# KOALA++ diagnostics (only for the koalapp optimizer).
KOALA_METRICS = (
    MetricSpec("koala_s_min", "maximize", "smallest innovation variance S seen in the epoch"),
    MetricSpec("koala_lambda_mean", "minimize", "mean of the per-step mean lambda"),
    MetricSpec("koala_r", "minimize", "measurement noise R at the epoch's end"),
)


def data_home() -> Path:
    """Where downloaded or unpacked data sets are kept (``KOALA_SWEEP_DATA`` overrides)."""
    return Path(os.environ.get("KOALA_SWEEP_DATA", Path.home() / ".cache" / "koala-sweep"))


class WorkloadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(ABC):
    """One workload built for one trial: model, data and evaluation, all on ``device``."""

    model: nn.Module
    device: torch.device
    steps_per_epoch: int

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's training batches (inputs, targets), already on the device."""

    @abstractmethod
    def per_sample_loss(self, output: Tensor, targets: Tensor) -> Tensor:
        """One loss per sample (per token for language models), flat; their mean is the loss
        that is minimised."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics on held-out data: ``val_loss`` and the workload's quality metric."""

    def samples(self, targets: Tensor) -> int:
        return int(targets.shape[0])


class Workload(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    data_source: ClassVar[str]
    args_model: ClassVar[type[WorkloadArgs]]
    metrics: ClassVar[tuple[MetricSpec, ...]]

    def parse_args(self, args: Mapping[str, Any] | None) -> WorkloadArgs:
        try:
            return self.args_model.model_validate(dict(args or {}))
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                known = ", ".join(self.args_model.model_fields)
                raise WorkloadError(
                    f"workload {self.name!r}: unknown argument {key!r} (known: {known})"
                ) from None
            raise WorkloadError(
                f"workload {self.name!r}: argument {key!r}: {first['msg']} "
                f"(got {first.get('input')!r})"
            ) from None

    @abstractmethod
    def build(self, args: WorkloadArgs, device: torch.device, seed: int) -> Task:
        """Load the data (cached across calls in this process) and build the model."""

    def all_metrics(self) -> tuple[MetricSpec, ...]:
        return (*self.metrics, *LOOP_METRICS, *KOALA_METRICS)

    def metric(self, name: str) -> MetricSpec:
        for m in self.all_metrics():
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.all_metrics())
        raise WorkloadError(f"workload {self.name!r} reports no metric {name!r} (known: {known})")


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False
) -> Iterator[Tensor]:
    """Index batches of a seeded permutation of range(n)."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def fixed_subset(n_total: int, n: int | None, seed: int = 0) -> Tensor:
    """The same subset for every trial of a study (seed fixed by the workload, not the trial),
    so that configurations are compared on identical data."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
