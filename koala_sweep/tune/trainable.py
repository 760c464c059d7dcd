"""What Ray Tune runs for a trial: one sampled configuration, trained for every seed of the
study in lockstep, one epoch at a time, so that the value the pruner judges after epoch k is the
mean over seeds at epoch k.

A class trainable rather than a function: Tune runs a function trainable in a second thread of
the worker, and PyTorch's CPU kernels (OpenMP) run measurably slower there than on the worker's
main thread, where a class trainable's ``step`` runs (10% to 19% slower per epoch, measured on
a 2-core machine in and out of Ray). The launcher also reuses the worker for the next trial
(``reuse_actors``), so that PyTorch is imported and the data loaded once per worker, not once
per trial: ``reset_config`` makes that safe.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import tune


class TrainConfiguration(tune.Trainable):
    """One configuration, every seed; a result per epoch, ``done`` after the last one or as
    soon as a seed diverges. A failure is first reported as a result carrying its traceback
    (the store keeps it whatever Ray does with its own error files), then raised."""

    def setup(self, config: dict[str, Any]) -> None:
        self._limits = contextlib.ExitStack()
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        self._failure: str | None = None
        self._runs: dict[int, Iterator] = {}
        self._epoch = 0
        try:
            # The libraries are loaded before the limit applies: it bounds what the trial
            # allocates (data, model, optimizer state), not the code it runs.
            import torch

            from ..workloads.loop import run_trial

            # A trial gets the CPUs it asked for; without this every concurrent trial would
            # start one thread per core and they would fight over them.
            torch.set_num_threads(max(1, int(config["cpus"])))
            device = "cuda" if config["gpus"] > 0 and torch.cuda.is_available() else "cpu"
            self._limits.enter_context(memory_limit(config.get("memory_gb")))
            # Generators: nothing is built or validated until the first epoch is asked for.
            self._runs = {
                seed: run_trial(
                    config["workload"],
                    config["optimizer"],
                    config["params"],
                    epochs=config["epochs"],
                    seed=seed,
                    workload_args=config["workload_args"],
                    device=device,
                )
                for seed in config["seeds"]
            }
        except Exception as err:  # noqa: BLE001 - reported by the first step
            self._failure = _failure_text(err, config.get("memory_gb"))

    def step(self) -> dict[str, Any]:
        if self._failure is not None:
            raise RuntimeError(self._failure)
        try:
            return self._epoch_result()
        except Exception as err:  # noqa: BLE001 - reported now, raised by the next step
            self._failure = _failure_text(err, self.config.get("memory_gb"))
            self._stop_runs()
            return {"trial_error": self._failure, "value": math.nan, "epoch": 0}

    def _epoch_result(self) -> dict[str, Any]:
        config = self.config
        self._epoch += 1
        per_seed: dict[str, dict[str, float]] = {}
        diverged: dict[str, str] = {}
        for seed, run in self._runs.items():
            report = next(run)
            per_seed[str(seed)] = report.metrics
            if report.diverged:
                diverged[str(seed)] = report.reason or "diverged"
        values = [m[config["metric"]] for m in per_seed.values()]
        value = sum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan
        return {
            "epoch": self._epoch,
            "value": value,
            "seeds": per_seed,
            "diverged": bool(diverged),
            "divergence": diverged,
            "pid": os.getpid(),
            "done": bool(diverged) or self._epoch >= config["epochs"],
        }

    def _stop_runs(self) -> None:
        for run in self._runs.values():
            run.close()
        self._runs = {}

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """The next trial in this worker: the previous one's models and memory limit go first
        (the data stays cached in the process)."""
        self._stop_runs()
        self._limits.close()
        _release_gpu_memory()
        self._start(new_config)
        return True

    def cleanup(self) -> None:
        self._stop_runs()
        self._limits.close()


def _release_gpu_memory() -> None:
    """Give the GPU memory PyTorch cached for the last trial back to the device: with
    fractional GPUs, other trials' workers share it."""
    import torch

    if torch.cuda.is_initialized():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _failure_text(err: BaseException, limit_gb: float | None) -> str:
    text = traceback.format_exc()
    if is_out_of_memory(err):
        where = (
            f"its limit of {limit_gb:g} GiB (resources.memory_gb)"
            if limit_gb
            else "the memory available"
        )
        text = f"out of memory: the trial needed more than {where}\n{text}"
    return text


def is_out_of_memory(err: BaseException) -> bool:
    """Host or GPU memory exhausted: Python's MemoryError, or PyTorch's allocator failing."""
    if isinstance(err, MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


@contextmanager
def memory_limit(gib: float | None):
    """Cap the data this process may allocate at its current size plus ``gib`` (RLIMIT_DATA:
    heap and anonymous mappings, which is where tensors live), restored afterwards because
    Ray may reuse the worker for another trial."""
    if gib is None:
        yield
        return
    import resource

    status = Path("/proc/self/status").read_text()
    in_use = int(re.search(r"VmData:\s+(\d+) kB", status).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = in_use + int(gib * 2**30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
