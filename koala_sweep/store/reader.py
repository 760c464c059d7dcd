"""Tidy pandas frames from the store, for analysis, reports, the dashboard and export alike.

``trials_frame``: one row per trial, a column per hyperparameter (named as in the study file).
``metrics_frame``: one row per trial-epoch, a column per metric. Both are read with a handful of
queries whatever the study's size (bound parameters only).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, case, func, select

from .models import METRIC_COLUMNS, Arm, EpochMetrics, Study, Trial

TRIAL_COLUMNS = ["study", "arm", "optimizer", "trial", "state", "seed", "epochs", "value"]
# Columns of the trials frame after the hyperparameters: where and when a trial ran.
BOOKKEEPING_COLUMNS = ["optuna_trial_number", "ray_trial_id", "started_at", "finished_at", "error"]
# Rows per chunk of a large numeric read: big enough that a fetch call costs nothing per row,
# small enough that one chunk's Python objects (about 0.5 KB a row) stay in reused memory.
FETCH_CHUNK_ROWS = 20_000


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The columns of a trials frame that are hyperparameters (named as in the study file)."""
    fixed = set(TRIAL_COLUMNS) | set(BOOKKEEPING_COLUMNS)
    return [c for c in trials.columns if c not in fixed]


class UnknownStudy(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        listing = ", ".join(known) if known else "none"
        super().__init__(f"no study named {name!r} in the store (studies there: {listing})")


def studies_frame(engine: Engine) -> pd.DataFrame:
    """One row per study, with its trial counts by state."""
    query = (
        select(
            Study.name.label("study"),
            Study.workload,
            Study.metric,
            Study.direction,
            Study.created_at,
            Study.device,
            Study.ray_dashboard_url,
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
    return pd.DataFrame(
        rows,
        columns=[
            "study",
            "workload",
            "metric",
            "direction",
            "created_at",
            "device",
            "ray_dashboard_url",
            "trials",
        ],
    )


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


def arms_frame(engine: Engine, study: str) -> pd.DataFrame:
    """One row per arm: its optimizer, budget (configurations) and search space as written in
    the study file (``{"lr": {"log_uniform": [1e-4, 0.03]}, "momentum": 0.9}``)."""
    sid = _study_id(engine, study)
    query = (
        select(Arm.name, Arm.optimizer, Arm.budget, Arm.search_space)
        .where(Arm.study_id == sid)
        .order_by(Arm.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=["arm", "optimizer", "budget", "search_space"])
    frame["search_space"] = [
        s if isinstance(s, dict) else json.loads(s) for s in frame["search_space"]
    ]
    return frame


def study_version(engine: Engine, study: str) -> tuple:
    """A cheap fingerprint of a study's progress: it changes whenever a trial starts, reports
    an epoch or finishes, so a live view re-reads the frames only when something happened."""
    sid = _study_id(engine, study)
    query = (
        select(
            func.count(Trial.id),
            func.max(Trial.id),
            func.coalesce(func.sum(Trial.epochs), 0),
            func.count(Trial.finished_at),
            func.sum(case((Trial.state == "RUNNING", 1), else_=0)),
        )
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid)
    )
    running_epochs = (
        select(func.count())
        .select_from(EpochMetrics)
        .join(Trial, EpochMetrics.trial_id == Trial.id)
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid, Trial.state == "RUNNING")
    )
    with engine.connect() as conn:
        row = tuple(conn.execute(query).one())
        # Epochs of running trials are in koala_epoch before the trial row's count moves.
        return (*row, conn.scalar(running_epochs))


def trials_frame(engine: Engine, study: str) -> pd.DataFrame:
    sid = _study_id(engine, study)
    query = (
        select(
            Arm.name,
            Arm.optimizer,
            Trial.id,
            Trial.state,
            Trial.seed,
            Trial.epochs,
            Trial.value,
            Trial.params,
            Trial.optuna_trial_number,
            Trial.ray_trial_id,
            Trial.started_at,
            Trial.finished_at,
            Trial.error,
        )
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid)
        .order_by(Arm.id, Trial.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    base = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS[1:], "params", *BOOKKEEPING_COLUMNS])
    base.insert(0, "study", study)
    params = pd.DataFrame.from_records(
        [p if isinstance(p, dict) else json.loads(p) for p in base.pop("params")],
        index=base.index,
    )
    return pd.concat([base[TRIAL_COLUMNS], params, base[BOOKKEEPING_COLUMNS]], axis=1)


def _fetch_array(engine: Engine, query, width: int) -> np.ndarray:
    """The rows of a numeric query as one float array (None becomes NaN), read from the
    driver's cursor as plain tuples: the statement is compiled by SQLAlchemy with bound
    parameters, only the per-row Python objects of a Result are skipped (half the cost of
    reading 500,000 rows). The rows come in chunks turned into arrays as they arrive, so the
    Python objects of one chunk at a time are alive: their memory is reused chunk after chunk
    instead of hundreds of megabytes of fresh pages asked from the kernel per read (which cost
    up to as much again in system time, and more the more memory the machine has handed out)."""
    # render_postcompile: an IN list of trial ids becomes one bound parameter per id.
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    if engine.dialect.positional:
        params: Any = tuple(compiled.params[name] for name in compiled.positiontup)
    else:
        params = compiled.params
    chunks = [np.empty((0, width))]
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        # psycopg's binary protocol sends floats as 8 bytes instead of text to parse: twice
        # as fast for a large read.
        binary = engine.dialect.driver == "psycopg"
        cursor = dbapi.cursor(binary=True) if binary else dbapi.cursor()
        try:
            cursor.execute(str(compiled), params)
            while rows := cursor.fetchmany(FETCH_CHUNK_ROWS):
                chunks.append(np.array(rows, dtype=np.float64).reshape(len(rows), width))
        finally:
            cursor.close()
    return np.concatenate(chunks)


def metrics_frame(
    engine: Engine, study: str, trials: Collection[int] | None = None
) -> pd.DataFrame:
    """One row per trial-epoch; only the metric columns that hold any value are kept.
    ``trials``: only these trials (store ids) of the study, for a live view that re-reads
    just the trials that moved since its last read.

    Read for speed (10,000 trials x 50 epochs within the time a dashboard refresh can spend):
    the numeric columns come in one query as plain tuples and become one float array; the rare
    ``extra`` JSON is read separately, only where it holds something.
    """
    sid = _study_id(engine, study)
    study_trials = select(Trial.id).join(Arm, Trial.arm_id == Arm.id).where(Arm.study_id == sid)
    if trials is not None:
        study_trials = study_trials.where(Trial.id.in_(sorted(int(t) for t in trials)))
    arms_query = (
        select(Trial.id, Arm.name, Arm.optimizer)
        .join(Arm, Trial.arm_id == Arm.id)
        .where(Arm.study_id == sid)
    )
    has_extra = case((EpochMetrics.extra.is_(None), 0), else_=1)
    numeric = select(
        EpochMetrics.trial_id,
        EpochMetrics.epoch,
        *(getattr(EpochMetrics, c) for c in METRIC_COLUMNS),
        has_extra,
    ).where(EpochMetrics.trial_id.in_(study_trials))
    # Unordered: sorting in numpy below is cheaper than on the server.
    values = _fetch_array(engine, numeric, 3 + len(METRIC_COLUMNS))
    with engine.connect() as conn:
        arms = conn.execute(arms_query).all()
    values = values[np.lexsort((values[:, 1], values[:, 0]))]
    extra_rows: list = []
    if values[:, -1].any():  # only then read the JSON column
        extras = select(EpochMetrics.trial_id, EpochMetrics.epoch, EpochMetrics.extra).where(
            EpochMetrics.trial_id.in_(study_trials), EpochMetrics.extra.is_not(None)
        )
        with engine.connect() as conn:
            extra_rows = conn.execute(extras).all()
    values = values[:, :-1]
    frame = pd.DataFrame(values[:, 2:], columns=list(METRIC_COLUMNS))
    trial_ids = values[:, 0].astype(np.int64)
    frame.insert(0, "epoch", values[:, 1].astype(np.int64))
    frame.insert(0, "trial", trial_ids)
    frame.insert(0, "optimizer", frame["trial"].map({t: o for t, _, o in arms}))
    frame.insert(0, "arm", frame["trial"].map({t: a for t, a, _ in arms}))
    frame.insert(0, "study", study)
    extra_rows = [r for r in extra_rows if r[2]]
    if extra_rows:
        position = {
            (t, e): i for i, (t, e) in enumerate(zip(trial_ids, frame["epoch"], strict=False))
        }
        index = [position[(t, e)] for t, e, _ in extra_rows]
        decoded = pd.DataFrame.from_records(
            [x if isinstance(x, dict) else json.loads(x) for _, _, x in extra_rows], index=index
        )
        for col in decoded.columns:
            col_values = pd.to_numeric(decoded[col], errors="coerce").reindex(frame.index)
            if col in frame.columns:
                frame[col] = frame[col].where(frame[col].notna(), col_values)
            else:
                frame[col] = col_values
    keep = [c for c in frame.columns if c not in METRIC_COLUMNS or frame[c].notna().any()]
    return frame[keep]
