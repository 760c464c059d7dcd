"""Optuna sampling and pruning under Ray Tune, wired so that Optuna's record is right.

Ray's stock ``OptunaSearch`` gives its study a no-op pruner, and when a Tune scheduler stops a
trial early it tells Optuna COMPLETE with the early value. Here instead:

- :class:`ArmSearcher` runs Optuna ask/tell on the arm's persistent study (in the store's
  database) and remembers which Optuna trial each Tune trial is;
- :class:`OptunaPruningScheduler` reports every epoch's value to that Optuna trial and asks the
  arm's Optuna pruner ``should_prune()``; on a prune it stops the Tune trial and the searcher
  tells Optuna PRUNED.

Both run in the driver, which stays the only writer of the database.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..spec import ArmSpec, Distribution

# Study user attribute: numbers of the trials a dead launcher left behind.
INTERRUPTED = "interrupted_trials"


def optuna_distributions(arm: ArmSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, d in arm.params.items():
        if not isinstance(d, Distribution):
            continue
        if d.kind == "log_uniform":
            out[name] = FloatDistribution(float(d.low), float(d.high), log=True)
        elif d.kind == "uniform":
            out[name] = FloatDistribution(float(d.low), float(d.high))
        elif d.kind == "int":
            out[name] = IntDistribution(int(d.low), int(d.high))
        else:  # choice and grid: grid points are enqueued, so Optuna records them as choices
            out[name] = CategoricalDistribution(list(d.values))
    return out


def grid_points(arm: ArmSpec) -> list[dict[str, Any]]:
    """Every point of the arm's grid, enumerated by Tune's grid generator (Optuna's
    GridSampler is not made for ask/tell from a concurrent scheduler)."""
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    space = {name: tune.grid_search(list(values)) for name, values in arm.grid().items()}
    return [{name: config[name] for name in space} for _, config in generate_variants(space)]


def constants(arm: ArmSpec) -> dict[str, Any]:
    return {k: v for k, v in arm.params.items() if not isinstance(v, Distribution)}


def finished_configurations(study: optuna.Study) -> int:
    """Configurations that count against the arm's budget: everything that ended, except
    trials a dead launcher left behind (those are run again)."""
    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.number not in interrupted)
    )


class ArmSearcher(Searcher):
    """Suggests the arm's configurations from its Optuna study, up to the remaining budget."""

    def __init__(
        self,
        study: optuna.Study,
        arm: ArmSpec,
        *,
        remaining: int,
        base_config: dict[str, Any],
        grid_points: list[dict[str, Any]] | None = None,
        mode: str,
    ) -> None:
        super().__init__(metric="value", mode=mode)
        self.study = study
        self.distributions = optuna_distributions(arm)
        self.constants = constants(arm)
        self.remaining = remaining
        self.base_config = base_config
        self.grid_points = list(grid_points or [])
        self.optuna_trials: dict[str, optuna.Trial] = {}
        self.pruned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm into its experiment folder. The Optuna study (a
        # database connection) is not picklable and is never restored from there: resuming
        # goes through the store and Optuna's own storage instead.
        state = dict(self.__dict__)
        state["study"] = None
        state["optuna_trials"] = {}
        return state

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the arm's state is its Optuna study in the store's database."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see :meth:`save`)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.remaining <= 0:
            return Searcher.FINISHED
        if self.grid_points:
            self.study.enqueue_trial(self.grid_points.pop(0))
        trial = self.study.ask(self.distributions)
        self.remaining -= 1
        self.optuna_trials[trial_id] = trial
        return {
            **self.base_config,
            "params": {**self.constants, **trial.params},
            "optuna_trial_number": trial.number,
        }

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.optuna_trials.pop(trial_id, None)
        if trial is None:
            return
        if trial_id in self.pruned:
            self.study.tell(trial, state=TrialState.PRUNED)
        elif error or result is None or result.get("diverged"):
            # A diverged or failed configuration: the sampler is told FAIL (consistently for
            # both), the store keeps which of the two it was.
            if result is not None and result.get("diverged"):
                trial.set_user_attr("diverged", True)
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            value = result.get("value")
            if value is None or not math.isfinite(value):
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, value)


class OptunaPruningScheduler(FIFOScheduler):
    """Reports each epoch's value to the trial's Optuna trial and stops the Tune trial when the
    arm's Optuna pruner says so."""

    def __init__(self, searcher: ArmSearcher) -> None:
        super().__init__()
        self.searcher = searcher
        self.reported: dict[str, int] = {}  # Tune trial id -> last epoch told to Optuna

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "searcher": None}

    def _report(self, trial, result: dict | None) -> optuna.Trial | None:
        """Tell the trial's Optuna trial this epoch's value, once; None when there is
        nothing to tell (no Optuna trial, no finite value, or the epoch already told)."""
        optuna_trial = self.searcher.optuna_trials.get(trial.trial_id)
        value = (result or {}).get("value")
        if optuna_trial is None or value is None or not math.isfinite(value):
            return None
        epoch = int(result["epoch"])
        if self.reported.get(trial.trial_id) == epoch:
            return None
        optuna_trial.report(value, step=epoch)
        self.reported[trial.trial_id] = epoch
        return optuna_trial

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        optuna_trial = self._report(trial, result)
        if optuna_trial is not None and optuna_trial.should_prune():
            self.searcher.pruned.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        # A trial's last result (marked done) goes to Tune's stop path, not to
        # on_trial_result: its epoch is told to Optuna here, before the searcher's tell.
        self._report(trial, result)
        self.reported.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.reported.pop(trial.trial_id, None)
