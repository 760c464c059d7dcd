"""A study as read from the store, and every analysis of it computed once (lazily)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import pandas as pd
import yaml

from .. import analysis
from ..analysis.robustness import TOLERANCES
from ..store import Store
from ..store.reader import arms_frame, metrics_frame, study_record, trials_frame


@dataclass
class StudyData:
    name: str
    record: dict[str, Any]
    arms: pd.DataFrame
    trials: pd.DataFrame
    metrics: pd.DataFrame

    @property
    def metric(self) -> str:
        return self.record["metric"]

    @property
    def direction(self) -> str:
        return self.record["direction"]

    @cached_property
    def epochs(self) -> int:
        """The study's budget of epochs per trial, from its study file."""
        try:
            spec = yaml.safe_load(self.record.get("spec_yaml") or "")
            return int(spec["epochs"])
        except (yaml.YAMLError, TypeError, KeyError, ValueError):
            return int(self.trials["epochs"].max()) if len(self.trials) else 0

    @cached_property
    def colors(self) -> dict[str, str]:
        from .figures import arm_colors

        return arm_colors(list(self.arms["arm"]))


def load_study_data(store: Store, name: str) -> StudyData:
    """Everything a report needs from the store, in four reads (bound parameters only)."""
    record = study_record(store.engine, name)  # raises UnknownStudy listing the studies
    return StudyData(
        name=name,
        record=record,
        arms=arms_frame(store.engine, name),
        trials=trials_frame(store.engine, name),
        metrics=metrics_frame(store.engine, name),
    )


class StudyAnalysis:
    """The analyses of one snapshot of a study, each computed on first use and kept."""

    def __init__(self, data: StudyData) -> None:
        self.data = data

    @cached_property
    def configurations(self) -> pd.DataFrame:
        return analysis.configurations(self.data.trials)

    def sensitivity(self, tolerance: float) -> pd.DataFrame:
        return analysis.sensitivity(
            self.configurations, self.data.arms, self.data.direction, tolerance
        )

    @cached_property
    def tunability(self) -> pd.DataFrame:
        return analysis.tunability(self.configurations, self.data.direction)

    def robustness(self, tolerances: tuple[float, ...] = TOLERANCES) -> pd.DataFrame:
        return analysis.robustness(self.configurations, self.data.direction, tolerances)

    @cached_property
    def cost(self) -> pd.DataFrame:
        return analysis.cost(self.data.metrics)

    def importance(self, evaluators: tuple[str, ...]) -> pd.DataFrame:
        key = tuple(evaluators)
        cache = self.__dict__.setdefault("_importance", {})
        if key not in cache:
            cache[key] = analysis.importance(
                self.configurations,
                self.data.arms,
                self.data.direction,
                self.data.epochs,
                evaluators=key,
            )
        return cache[key]

    def reuse_importance(self, other: StudyAnalysis, computed_at: float) -> None:
        """Take ``other``'s importances instead of recomputing them (the live dashboard does
        between two fANOVA runs); their notes say when they were computed."""
        stamp = datetime.fromtimestamp(computed_at).strftime("%H:%M:%S")
        reused = {}
        for key, frame in other.__dict__.get("_importance", {}).items():
            copy = frame.copy()
            copy.attrs["notes"] = (
                [
                    *frame.attrs.get("notes", []),
                    f"computed at {stamp} on the configurations finished then; recomputed at most "
                    "once a minute while the study runs",
                ]
                if not any("computed at" in n for n in frame.attrs.get("notes", []))
                else list(frame.attrs.get("notes", []))
            )
            reused[key] = copy
        self.__dict__["_importance"] = reused

    def variant_pairs(self, max_distance: float) -> pd.DataFrame:
        return analysis.variant_pairs(self.configurations, self.data.arms, max_distance)

    @cached_property
    def headline(self) -> pd.DataFrame:
        return analysis.headline(
            self.configurations,
            self.data.arms,
            self.tunability,
            self.robustness(),
            self.cost,
            self.data.direction,
        )
