"""The function Ray Tune runs for a trial: one sampled configuration, trained for every seed of
the study in lockstep, one epoch at a time, so that the value the pruner judges after epoch k
is the mean over seeds at epoch k."""

from __future__ import annotations

import math
import os
import traceback
from typing import Any

from ray import tune


def train_configuration(config: dict[str, Any]) -> None:
    try:
        _train(config)
    except Exception:
        # The traceback travels to the launcher as a result, so that the store keeps it
        # whatever Ray does with its own error files; then the trial fails as usual.
        tune.report({"trial_error": traceback.format_exc(), "value": math.nan, "epoch": 0})
        raise


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
