"""Hyperparameter importance per arm, with Optuna's own evaluators (PED-ANOVA and fANOVA).

Only configurations that ran the full budget of epochs count: a pruned configuration's value
was taken earlier in training, and mixing the two would make the hyperparameters that decide
*when* a trial is pruned look important."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

from ..spec import Distribution
from .configurations import searched

EVALUATORS = ("ped_anova", "fanova")
IMPORTANCE_COLUMNS = ["arm", "evaluator", "parameter", "importance", "configurations"]
# Below this many full-budget configurations the importances are noise; say so instead.
MIN_CONFIGURATIONS = 8
# At most this many configurations per arm go into an evaluator (None: all of them).
MAX_CONFIGURATIONS = {"fanova": 250, "ped_anova": None}


def optuna_distribution(dist: Distribution) -> BaseDistribution:
    if dist.kind == "log_uniform":
        return FloatDistribution(float(dist.low), float(dist.high), log=True)
    if dist.kind == "uniform":
        return FloatDistribution(float(dist.low), float(dist.high))
    if dist.kind == "int":
        return IntDistribution(int(dist.low), int(dist.high))
    return CategoricalDistribution(list(dist.values))


def _evaluator(name: str, seed: int):
    if name == "ped_anova":
        return PedAnovaImportanceEvaluator()
    if name == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    raise ValueError(f"unknown importance evaluator {name!r} (known: {', '.join(EVALUATORS)})")


def _value(x):
    return x.item() if isinstance(x, np.generic) else x


def importance(
    configs: pd.DataFrame,
    arms: pd.DataFrame,
    direction: str,
    epochs: int,
    evaluators: tuple[str, ...] = EVALUATORS,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (arm, evaluator, searched hyperparameter): its importance (summing to 1
    per arm and evaluator) and how many full-budget configurations it was computed on.

    ``frame.attrs["notes"]`` says, per arm, why no importance was computed (fewer than two
    searched hyperparameters, or fewer than ``MIN_CONFIGURATIONS`` full-budget
    configurations)."""
    rows, notes = [], []
    for arm, space in zip(arms["arm"], arms["search_space"], strict=True):
        space_ = searched(space)
        if len(space_) < 2:
            notes.append(f"{arm}: one searched hyperparameter, nothing to rank")
            continue
        full = configs[
            (configs["arm"] == arm)
            & (configs["state"] == "COMPLETE")
            & (configs["epochs"] >= epochs)
            & configs["value"].notna()
        ]
        if len(full) < MIN_CONFIGURATIONS:
            notes.append(
                f"{arm}: {len(full)} full-budget configurations, at least "
                f"{MIN_CONFIGURATIONS} needed"
            )
            continue
        distributions = {n: optuna_distribution(d) for n, d in space_.items()}
        frozen = []
        for _, c in full.iterrows():
            params = {n: _value(c[n]) for n in distributions}
            if not all(_in_space(distributions[n], v) for n, v in params.items()):
                continue  # a value outside the stored space (a study file edited by hand)
            frozen.append(
                optuna.trial.create_trial(
                    params=params, distributions=distributions, value=float(c["value"])
                )
            )
        for name in evaluators:
            used = frozen
            limit = MAX_CONFIGURATIONS.get(name)
            if limit is not None and len(frozen) > limit:
                # fANOVA's forest grows faster than linearly with the trials: a fixed random
                # subset keeps a 10,000-trial study within a dashboard refresh.
                pick = np.random.default_rng(seed).choice(len(frozen), limit, replace=False)
                used = [frozen[i] for i in sorted(pick)]
                notes.append(
                    f"{arm}: {name} on a random {limit} of its {len(frozen)} full-budget "
                    "configurations"
                )
            study = _quiet_study(direction)
            study.add_trials(used)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-feature warnings
                values = optuna.importance.get_param_importances(
                    study, evaluator=_evaluator(name, seed), normalize=True
                )
            for param, value in values.items():
                rows.append(
                    {
                        "arm": arm,
                        "evaluator": name,
                        "parameter": param,
                        "importance": float(value),
                        "configurations": len(used),
                    }
                )
    frame = pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS)
    frame.attrs["notes"] = notes
    return frame


def _in_space(dist: BaseDistribution, value) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _quiet_study(direction: str) -> optuna.Study:
    """An in-memory study, without Optuna's "new study created" line on every refresh."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        return optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(before)
