"""Optuna's RDB storage on the store's database, riding out a database that goes away for a
while the same way the store's own writes do (``retry.py``).

The arms' samplers and pruners ask and tell through this storage from the launcher, so a
PostgreSQL restart in the middle of a study must not fail an ask, a report or a tell."""

from __future__ import annotations

import functools
import time

from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError

from .retry import call_with_retry
from .schema import CREATE_RACE_ATTEMPTS, CREATE_RACE_PAUSE_S

# Every storage call a study makes (BaseStorage's public methods).
_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "check_trial_is_updatable",
)


class RetryingRDBStorage(RDBStorage):
    """``RDBStorage`` whose calls retry while the database is unreachable.

    ``set_trial_state_values`` is made idempotent: if a first try committed just before its
    connection dropped, the retry finds the trial already finished with that state and
    succeeds instead of raising."""

    def __init__(self, url: str, **kwargs) -> None:
        # Launches opening a new database at once race to create Optuna's tables and version
        # rows (the loser's insert or CREATE TABLE fails on the winner's just committed ones);
        # a second try finds them made. Retried a few times, shortly, then raised as it is.
        for attempt in range(1, CREATE_RACE_ATTEMPTS + 1):
            try:
                super().__init__(url, **kwargs)
                return
            except (DBAPIError, StorageInternalError):
                if getattr(self, "engine", None) is not None:
                    self.engine.dispose()
                if attempt == CREATE_RACE_ATTEMPTS:
                    raise
                time.sleep(CREATE_RACE_PAUSE_S * attempt)

    def set_trial_state_values(self, trial_id, state, values=None):
        def attempt(retry: int):
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                if retry and RDBStorage.get_trial(self, trial_id).state == state:
                    return state != TrialState.RUNNING
                raise

        return call_with_retry(attempt, "telling Optuna a trial's state", self._dispose)

    def _dispose(self) -> None:
        self.engine.dispose()


def _retrying(name: str):
    original = getattr(RDBStorage, name)

    @functools.wraps(original)
    def call(self, *args, **kwargs):
        return call_with_retry(
            lambda _try: original(self, *args, **kwargs), f"Optuna {name}", self._dispose
        )

    return call


for _name in _CALLS:
    if _name != "set_trial_state_values":
        setattr(RetryingRDBStorage, _name, _retrying(_name))

__all__ = ["RetryingRDBStorage"]
