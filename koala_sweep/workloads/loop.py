"""The training loop every optimizer shares, one epoch at a time.

Fairness comes from sameness: KOALA++, KOALA-V, Adam, AdamW and SGD see the same model
initialisation (the trial's seed), the same batches in the same order, the same per-batch LR
schedule, and are stepped from the same per-sample losses. The loop stays on the device during an
epoch (losses and diagnostics are summed as tensors) and reads them once at the epoch's end.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..optim.registry import build_optimizer, validate_hyperparameters
from ..optim.schedules import build_lr_scheduler
from . import get_workload


@dataclass
class EpochReport:
    """What one epoch produced. A diverged epoch is a result: ``diverged`` is true, ``reason``
    says why, and it is the last report of the trial."""

    epoch: int
    metrics: dict[str, float]
    diverged: bool = False
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class _StepTimer:
    """Time inside optimizer.step: wall clock on CPU; CUDA events on GPUs, read once per epoch
    so that timing never synchronises the host with the device mid-epoch."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.cpu_seconds = 0.0
        self.events: list[tuple[Any, Any]] = []

    @contextlib.contextmanager
    def measure(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.cpu_seconds += time.perf_counter() - t0

    def seconds(self) -> float:
        if not self.cuda:
            return self.cpu_seconds
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in self.events) / 1000.0


def run_trial(
    workload: str,
    optimizer: str,
    hyperparameters: Mapping[str, Any],
    *,
    epochs: int,
    seed: int = 0,
    workload_args: Mapping[str, Any] | None = None,
    device: str = "auto",
    amp: bool = False,
    divergence_factor: float = 10.0,
) -> Iterator[EpochReport]:
    """Train ``workload`` with ``optimizer`` for up to ``epochs`` epochs, yielding a report per
    epoch. Stops early, with a report marked diverged, when the training or validation loss is
    not finite or the training loss exceeds ``divergence_factor`` times the first epoch's.

    ``amp`` runs forward passes in bfloat16 autocast on CUDA (ignored on CPU). Bad names or
    values raise (WorkloadError, HyperparameterError, ValueError) before any training.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    spec = get_workload(workload)
    args = spec.parse_args(workload_args)
    validate_hyperparameters(optimizer, hyperparameters)
    dev = resolve_device(device)

    torch.manual_seed(seed)
    task = spec.build(args, dev, seed)
    built = build_optimizer(optimizer, task.model.parameters(), hyperparameters)
    scheduler = build_lr_scheduler(
        built.optimizer, built.hyperparameters, epochs=epochs, steps_per_epoch=task.steps_per_epoch
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and dev.type == "cuda"
        else contextlib.nullcontext()
    )
    first_train_loss: float | None = None
    model = task.model
    model.train()
    for epoch in range(1, epochs + 1):
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        batches = 0
        samples = 0
        s_min = torch.full((), math.inf, dtype=torch.float64, device=dev)
        lambda_sum = torch.zeros((), dtype=torch.float64, device=dev)
        timer = _StepTimer(dev)
        t0 = time.perf_counter()
        for inputs, targets in task.train_batches(epoch):
            with autocast:
                output = model(inputs)
            per_sample = task.per_sample_loss(output, targets)
            loss = per_sample.mean()
            built.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with timer.measure():
                built.step(per_sample)
            scheduler.step()
            loss_sum += loss.detach()
            batches += 1
            samples += task.samples(targets)
            diag = built.diagnostics()
            if "s_min" in diag:
                s_min = torch.minimum(s_min, diag["s_min"])
                lambda_sum += diag["lambda_mean"]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds = time.perf_counter() - t0
        train_loss = loss_sum.item() / max(batches, 1)
        metrics: dict[str, float] = {"train_loss": train_loss}
        metrics.update(task.evaluate())
        metrics.update(
            epoch_seconds=epoch_seconds,
            step_seconds=timer.seconds(),
            samples_per_second=samples / epoch_seconds if epoch_seconds > 0 else math.inf,
            lr=float(built.optimizer.param_groups[0]["lr"]),
        )
        diag = built.diagnostics()
        if diag:
            metrics["koala_s_min"] = s_min.item()
            metrics["koala_lambda_mean"] = lambda_sum.item() / max(batches, 1)
            if "r" in diag:
                metrics["koala_r"] = diag["r"].item()
        reason = _divergence(metrics, first_train_loss, divergence_factor)
        if first_train_loss is None:
            first_train_loss = train_loss
        yield EpochReport(epoch, metrics, diverged=reason is not None, reason=reason)
        if reason is not None:
            return


def _divergence(metrics: dict[str, float], first: float | None, factor: float) -> str | None:
    for key in ("train_loss", "val_loss"):
        if not math.isfinite(metrics[key]):
            return f"{key} is {metrics[key]}"
    if first is not None and metrics["train_loss"] > factor * max(first, 1e-12):
        return (
            f"train_loss {metrics['train_loss']:.4g} exceeds {factor:g}x the first epoch's "
            f"({first:.4g})"
        )
    return None
