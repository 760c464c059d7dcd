"""The only code that writes the store. The launcher is its one caller during a study (one
writer process); everything is written through bound parameters.

Every write rides out a database that goes away for a while (``retry.py``) and is idempotent
under a retry: a write whose commit reached the server just before the connection dropped is
not applied twice."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from .models import METRIC_COLUMNS, TRIAL_STATES, Arm, EpochMetrics, Study, Trial
from .retry import call_with_retry


class StoreConflict(ValueError):
    """What is being written contradicts what the store already holds."""


def spec_hash(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epoch_row(trial_id: int, epoch: int, metrics: Mapping[str, float]) -> dict[str, Any]:
    """One koala_epoch row: known metrics in their columns, others in ``extra``. Non-finite
    values (a diverged epoch's NaN loss) are stored as NULL in columns and as text in extra,
    since SQL and JSON have no portable NaN."""
    row: dict[str, Any] = {"trial_id": trial_id, "epoch": epoch}
    extra: dict[str, Any] = {}
    for name, value in metrics.items():
        if name in METRIC_COLUMNS:
            row[name] = _finite_or_none(value)
            if value is not None and row[name] is None:
                extra[name] = str(float(value))
        else:
            extra[name] = value if _finite_or_none(value) is not None else str(value)
    row["extra"] = extra or None
    return row


class StoreWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _retry(self, what: str, fn):
        # A dead server leaves dead connections in the pool: drop them before trying again.
        return call_with_retry(fn, what, on_retry=self.engine.dispose)

    def create_study(
        self,
        name: str,
        spec_yaml: str,
        *,
        workload: str,
        metric: str,
        direction: str,
        package_versions: Mapping[str, str],
        device: str,
        ray_dashboard_url: str | None = None,
    ) -> int:
        """The study's id. Launching the same file again resumes it; a different file under an
        existing study's name is refused rather than mixed in."""

        def attempt(_try: int):
            digest = spec_hash(spec_yaml)
            with Session(self.engine) as session, session.begin():
                existing = session.scalar(select(Study).where(Study.name == name))
                if existing is not None:
                    if existing.spec_hash != digest:
                        raise StoreConflict(
                            f"a study named {name!r} already exists in the store with a different "
                            "study file; rename the study or use another storage"
                        )
                    return existing.id
                study = Study(
                    name=name,
                    spec_yaml=spec_yaml,
                    spec_hash=digest,
                    workload=workload,
                    metric=metric,
                    direction=direction,
                    created_at=_now(),
                    package_versions=dict(package_versions),
                    device=device,
                    ray_dashboard_url=ray_dashboard_url,
                )
                session.add(study)
                session.flush()
                return study.id

        return self._retry("creating the study", attempt)

    def set_ray_dashboard_url(self, study_id: int, url: str | None) -> None:
        def attempt(_try: int):
            with self.engine.begin() as conn:
                conn.execute(
                    update(Study).where(Study.id == study_id).values(ray_dashboard_url=url)
                )

        return self._retry("recording the Ray dashboard URL", attempt)

    def add_arm(
        self,
        study_id: int,
        name: str,
        *,
        optimizer: str,
        search_space: Mapping[str, Any],
        budget: int,
        optuna_study_name: str,
    ) -> int:
        def attempt(_try: int):
            with Session(self.engine) as session, session.begin():
                existing = session.scalar(
                    select(Arm).where(Arm.study_id == study_id, Arm.name == name)
                )
                if existing is not None:
                    return existing.id
                arm = Arm(
                    study_id=study_id,
                    name=name,
                    optimizer=optimizer,
                    search_space=dict(search_space),
                    budget=budget,
                    optuna_study_name=optuna_study_name,
                )
                session.add(arm)
                session.flush()
                return arm.id

        return self._retry("adding an arm", attempt)

    def start_trial(
        self,
        arm_id: int,
        params: Mapping[str, Any],
        seed: int,
        *,
        optuna_trial_number: int | None = None,
        ray_trial_id: str | None = None,
    ) -> int:
        def attempt(retry: int) -> int:
            with self.engine.begin() as conn:
                if retry and ray_trial_id is not None:
                    # The first try may have committed before its connection dropped.
                    earlier = conn.scalar(
                        select(Trial.id).where(
                            Trial.arm_id == arm_id,
                            Trial.ray_trial_id == ray_trial_id,
                            Trial.seed == seed,
                            Trial.state == "RUNNING",
                        )
                    )
                    if earlier is not None:
                        return int(earlier)
                result = conn.execute(
                    insert(Trial).values(
                        arm_id=arm_id,
                        params=dict(params),
                        seed=seed,
                        state="RUNNING",
                        epochs=0,
                        optuna_trial_number=optuna_trial_number,
                        ray_trial_id=ray_trial_id,
                        started_at=_now(),
                    )
                )
                return int(result.inserted_primary_key[0])

        return self._retry("starting a trial", attempt)

    def record_epochs(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert per-epoch rows (from :func:`epoch_row`) in one transaction."""
        batch = list(rows)
        if not batch:
            return 0

        def attempt(retry: int) -> int:
            with self.engine.begin() as conn:
                if retry:
                    # Rows of a first try that committed before its connection dropped are
                    # replaced, not doubled (the primary key would refuse them anyway).
                    for row in batch:
                        conn.execute(
                            delete(EpochMetrics).where(
                                EpochMetrics.trial_id == row["trial_id"],
                                EpochMetrics.epoch == row["epoch"],
                            )
                        )
                conn.execute(insert(EpochMetrics), batch)
            return len(batch)

        return self._retry("recording epochs", attempt)

    def fail_running_trials(self, arm_id: int, message: str) -> int:
        """Mark the arm's RUNNING trials FAILED with ``message`` (a launcher died); returns how
        many there were."""

        def attempt(_try: int):
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(Trial)
                    .where(Trial.arm_id == arm_id, Trial.state == "RUNNING")
                    .values(state="FAILED", error=message, finished_at=_now())
                )
                return int(result.rowcount or 0)

        return self._retry("marking interrupted trials", attempt)

    def finish_trial(
        self,
        trial_id: int,
        state: str,
        *,
        value: float | None,
        epochs: int,
        error: str | None = None,
    ) -> None:
        if state not in TRIAL_STATES or state == "RUNNING":
            raise ValueError(
                f"a finished trial's state is one of COMPLETE, PRUNED, FAILED, "
                f"DIVERGED, got {state!r}"
            )

        def attempt(_try: int):
            with self.engine.begin() as conn:
                conn.execute(
                    update(Trial)
                    .where(Trial.id == trial_id)
                    .values(
                        state=state,
                        value=_finite_or_none(value),
                        epochs=epochs,
                        error=error,
                        finished_at=_now(),
                    )
                )

        return self._retry("finishing a trial", attempt)
