"""The driver-side Tune callback that writes trials and their epochs to the store, and keeps
the counts the live view shows. Trials never touch the database: they report through Ray."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ..store import StoreWriter, epoch_row


@dataclass
class ArmProgress:
    """What the live view shows for one arm."""

    name: str
    budget: int
    done_before: int = 0
    complete: int = 0
    pruned: int = 0
    diverged: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    durations: list[float] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.done_before + self.complete + self.pruned + self.diverged + self.failed


class StoreCallback(Callback):
    def __init__(
        self,
        writer: StoreWriter,
        arm_id: int,
        progress: ArmProgress,
        *,
        metric: str,
        direction: str,
        on_change=None,
    ) -> None:
        self.writer = writer
        self.arm_id = arm_id
        self.progress = progress
        self.metric = metric
        self.direction = direction
        self.on_change = on_change or (lambda: None)
        self.rows: dict[str, dict[str, int]] = {}  # tune trial id -> seed -> store trial id
        self.last: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.searcher = None  # set by the launcher: tells PRUNED apart

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; the database writer and the live
        # view stay with this process (the store, not Tune's folder, is what resumes a study).
        return {**self.__dict__, "writer": None, "on_change": None, "searcher": None}

    def _start(self, trial) -> None:
        config = trial.config
        self.rows[trial.trial_id] = {
            str(seed): self.writer.start_trial(
                self.arm_id,
                config["params"],
                seed,
                optuna_trial_number=config.get("optuna_trial_number"),
                ray_trial_id=trial.trial_id,
            )
            for seed in config["seeds"]
        }
        self.started[trial.trial_id] = time.monotonic()
        self.progress.running += 1
        self.on_change()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._start(trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        # A retry starts over: its partial rows end as FAILED and new rows take its place.
        for store_id in self.rows.pop(trial.trial_id, {}).values():
            self.writer.finish_trial(
                store_id,
                "FAILED",
                value=None,
                epochs=0,
                error=f"retried: {self._error_text(trial)}",
            )
        self.progress.running -= 1
        self.last.pop(trial.trial_id, None)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "trial_error" in result:  # the trainable's traceback, just before it fails
            self.errors[trial.trial_id] = result["trial_error"]
            return
        rows = self.rows.get(trial.trial_id)
        if rows is None:  # a retried trial whose restart was not announced
            self._start(trial)
            rows = self.rows[trial.trial_id]
        epoch = int(result["epoch"])
        self.writer.record_epochs(
            epoch_row(rows[seed], epoch, metrics) for seed, metrics in result["seeds"].items()
        )
        self.last[trial.trial_id] = result

    def _finish(self, trial, state: str, error: str | None = None) -> None:
        rows = self.rows.pop(trial.trial_id, {})
        result = self.last.pop(trial.trial_id, None)
        epochs = int(result["epoch"]) if result else 0
        for seed, store_id in rows.items():
            value = None
            reason = error
            if result is not None:
                value = result["seeds"][seed].get(self.metric)
                if result.get("divergence") and seed in result["divergence"]:
                    reason = result["divergence"][seed]
            self.writer.finish_trial(store_id, state, value=value, epochs=epochs, error=reason)
        p = self.progress
        p.running -= 1
        if state == "COMPLETE":
            p.complete += 1
        elif state == "PRUNED":
            p.pruned += 1
        elif state == "DIVERGED":
            p.diverged += 1
        else:
            p.failed += 1
        value = result.get("value") if result else None
        if state == "COMPLETE" and value is not None and math.isfinite(value):
            better = p.best is None or (
                value < p.best if self.direction == "minimize" else value > p.best
            )
            if better:
                p.best = value
        if trial.trial_id in self.started:
            p.durations.append(time.monotonic() - self.started.pop(trial.trial_id))
        self.on_change()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = self.last.get(trial.trial_id)
        if self.searcher is not None and trial.trial_id in self.searcher.pruned:
            self._finish(trial, "PRUNED")
        elif result is not None and result.get("diverged"):
            self._finish(trial, "DIVERGED")
        else:
            self._finish(trial, "COMPLETE")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "FAILED", error=self._error_text(trial))

    def _error_text(self, trial) -> str:
        text = self.errors.pop(trial.trial_id, None)
        if text is None:
            text = _last_failure(trial)
        died = (
            "the trial's worker process died without a traceback (killed by a signal, or by an "
            "out-of-memory killer)"
        )
        if not text:
            return died
        text = _ANSI.sub("", str(text))
        # The worker process itself ended (killed by a signal, or by the kernel's or Ray's
        # out-of-memory killer) before the trial could report anything: say so first, then
        # what Ray knows.
        if "ActorDiedError" in text or "RayActorError" in text or "actor died" in text:
            return f"{died}; Ray: {text}"
        return text


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)\n", re.M)


def _last_failure(trial) -> str | None:
    """The latest failure Tune wrote for a trial that failed outside the trainable's own
    reporting (in Ray itself, or in Tune's calls on the worker). Tune writes it to the trial's
    local folder first; ``Trial.get_error`` reads the storage copy, which may not exist yet."""
    try:
        local = trial.error_file
        if local and Path(local).exists():
            parts = _FAILURE_HEADER.split(Path(local).read_text(errors="replace"))
            return parts[-1].strip() or None
        return trial.get_error()
    except Exception:  # noqa: BLE001 - the error file may be gone; say what we know
        return None
