"""Tidy pandas frames from the store, for analysis, reports, the dashboard and export alike.

``trials_frame``: one row per trial, a column per hyperparameter (named as in the study file).
``metrics_frame``: one row per trial-epoch, a column per metric. Both are read with a handful of
queries whatever the study's size (bound parameters only).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select

from .models import METRIC_COLUMNS, Arm, EpochMetrics, Study, Trial

TRIAL_COLUMNS = ["study", "arm", "optimizer", "trial", "state", "seed", "epochs", "value"]


class UnknownStudy(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        listing = ", ".join(known) if known else "none"
        super().__init__(f"no study named {name!r} in the store (studies there: {listing})")


def studies_frame(engine: Engine) -> pd.DataFrame:
    """One row per study, with its trial counts by state."""
    query = (
        select(
            Study.name.label("study"), Study.workload, Study.metric, Study.direction,
            Study.created_at, Study.device, Study.ray_dashboard_url,
            func.count(Trial.id).label("trials"),
        )
        .select_from(Study)
        .outerjoin(Arm, Arm.study_id == Study.id)
        .outerjoin(Trial, Trial.arm_id == Arm.id)
        .group_by(Study.id)
        .order_by(Study.created_at)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=[
        "study", "workload", "metric", "direction", "created_at", "device",
        "ray_dashboard_url", "trials",
    ])


def study_names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Study.name).order_by(Study.name)))


def study_record(engine: Engine, name: str) -> dict[str, Any]:
    table = Study.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.name == name)).mappings().first()
    if row is None:
        raise UnknownStudy(name, study_names(engine))
    return dict(row)


def _study_id(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        sid = conn.scalar(select(Study.id).where(Study.name == name))
    if sid is None:
        raise UnknownStudy(name, study_names(engine))
    return sid


def trials_frame(engine: Engine, study: str) -> pd.DataFrame:
    sid = _study_id(engine, study)
    query = (
        select(
            Arm.name, Arm.optimizer, Trial.id, Trial.state, Trial.seed, Trial.epochs,
            Trial.value, Trial.params, Trial.optuna_trial_number, Trial.ray_trial_id,
            Trial.started_at, Trial.finished_at, Trial.error,
        )
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid)
        .order_by(Arm.id, Trial.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    base = pd.DataFrame(rows, columns=[
        "arm", "optimizer", "trial", "state", "seed", "epochs", "value", "params",
        "optuna_trial_number", "ray_trial_id", "started_at", "finished_at", "error",
    ])
    base.insert(0, "study", study)
    params = pd.DataFrame.from_records(
        [p if isinstance(p, dict) else json.loads(p) for p in base.pop("params")],
        index=base.index,
    )
    extra = [c for c in base.columns if c not in TRIAL_COLUMNS]
    return pd.concat([base[TRIAL_COLUMNS], params, base[extra]], axis=1)


def metrics_frame(engine: Engine, study: str) -> pd.DataFrame:
    """One row per trial-epoch; only the metric columns that hold any value are kept."""
    sid = _study_id(engine, study)
    metric_cols = [getattr(EpochMetrics, c) for c in METRIC_COLUMNS]
    query = (
        select(Arm.name, Arm.optimizer, Trial.id, EpochMetrics.epoch, *metric_cols,
               EpochMetrics.extra)
        .join(Trial, EpochMetrics.trial_id == Trial.id)
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid)
        .order_by(Trial.id, EpochMetrics.epoch)
    )
    columns = ["arm", "optimizer", "trial", "epoch", *METRIC_COLUMNS, "extra"]
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame.insert(0, "study", study)
    extra = frame.pop("extra")
    if extra.notna().any():
        expanded = pd.DataFrame.from_records(
            [(e if isinstance(e, dict) else json.loads(e)) if e is not None else {}
             for e in extra],
            index=frame.index,
        )
        for col in expanded.columns:
            values = pd.to_numeric(expanded[col], errors="coerce")
            if col in frame.columns:
                frame[col] = frame[col].where(frame[col].notna(), values)
            else:
                frame[col] = values
    keep = [c for c in frame.columns if c not in METRIC_COLUMNS or frame[c].notna().any()]
    return frame[keep]
