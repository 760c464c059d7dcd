"""The function Ray Tune runs for a trial: one sampled configuration, trained for every seed of
the study in lockstep, one epoch at a time, so that the value the pruner judges after epoch k
is the mean over seeds at epoch k."""

from __future__ import annotations

import math
import os
import re
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import tune


def train_configuration(config: dict[str, Any]) -> None:
    limit_gb = config.get("memory_gb")
    try:
        # The libraries are loaded before the limit applies: it bounds what the trial
        # allocates (data, model, optimizer state), not the code it runs.
        import torch  # noqa: F401

        from ..workloads import loop  # noqa: F401

        with memory_limit(limit_gb):
            _train(config)
    except Exception as err:
        # The traceback travels to the launcher as a result, so that the store keeps it
        # whatever Ray does with its own error files; then the trial fails as usual.
        text = traceback.format_exc()
        if is_out_of_memory(err):
            where = (
                f"its limit of {limit_gb:g} GiB (resources.memory_gb)"
                if limit_gb
                else ("the memory available")
            )
            text = f"out of memory: the trial needed more than {where}\n{text}"
        tune.report({"trial_error": text, "value": math.nan, "epoch": 0})
        raise


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


def _train(config: dict[str, Any]) -> None:
    import torch

    from ..workloads.loop import run_trial

    # A trial gets the CPUs it asked for; without this every concurrent trial would start one
    # thread per core and they would fight over them.
    torch.set_num_threads(max(1, int(config["cpus"])))
    device = "cuda" if config["gpus"] > 0 and torch.cuda.is_available() else "cpu"
    runs = {
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
    metric = config["metric"]
    for epoch in range(1, config["epochs"] + 1):
        per_seed: dict[str, dict[str, float]] = {}
        diverged: dict[str, str] = {}
        for seed, run in runs.items():
            report = next(run)
            per_seed[str(seed)] = report.metrics
            if report.diverged:
                diverged[str(seed)] = report.reason or "diverged"
        values = [m[metric] for m in per_seed.values()]
        value = sum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan
        tune.report(
            {
                "epoch": epoch,
                "value": value,
                "seeds": per_seed,
                "diverged": bool(diverged),
                "divergence": diverged,
                "pid": os.getpid(),
            }
        )
        if diverged:
            return
