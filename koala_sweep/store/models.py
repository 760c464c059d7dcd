"""The store's tables (SQLAlchemy 2.0 typed models).

Optuna keeps its own tables (``studies``, ``trials``, ...) in the same database; every table of
koala-sweep is prefixed ``koala_`` so that the two never collide, and the schema version lives in
``koala_sweep_alembic_version`` (Optuna uses ``alembic_version`` for its own).

Per-epoch metrics are one row per trial-epoch with a column per metric the loop and workloads
report (reading 10,000 trials x 50 epochs must stay fast), plus ``extra`` (JSON) for any other
name. The tidy frames built from these rows are in ``reader.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")

TRIAL_STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAILED", "DIVERGED")

# Every metric the training loop and the workloads report (koala_sweep.workloads declares
# them; a test keeps the two lists equal).
METRIC_COLUMNS = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_perplexity",
    "epoch_seconds",
    "step_seconds",
    "samples_per_second",
    "lr",
    "koala_s_min",
    "koala_lambda_mean",
    "koala_r",
)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType}


class Study(Base):
    __tablename__ = "koala_study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    workload: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    package_versions: Mapped[dict[str, Any]] = mapped_column(JSONType)
    device: Mapped[str] = mapped_column(String(200))
    ray_dashboard_url: Mapped[str | None] = mapped_column(String(500))

    arms: Mapped[list[Arm]] = relationship(back_populates="study", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("direction IN ('minimize', 'maximize')", name="koala_study_direction"),
    )


class Arm(Base):
    __tablename__ = "koala_arm"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("koala_study.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    optimizer: Mapped[str] = mapped_column(String(50))
    search_space: Mapped[dict[str, Any]] = mapped_column(JSONType)
    budget: Mapped[int] = mapped_column(Integer)
    optuna_study_name: Mapped[str] = mapped_column(String(300), unique=True)

    study: Mapped[Study] = relationship(back_populates="arms")
    trials: Mapped[list[Trial]] = relationship(back_populates="arm", cascade="all, delete-orphan")

    __table_args__ = (UniqueConstraint("study_id", "name", name="koala_arm_study_name"),)


class Trial(Base):
    __tablename__ = "koala_trial"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("koala_arm.id", ondelete="CASCADE"))
    optuna_trial_number: Mapped[int | None] = mapped_column(Integer)
    ray_trial_id: Mapped[str | None] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    seed: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10))
    value: Mapped[float | None] = mapped_column(Float)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)

    arm: Mapped[Arm] = relationship(back_populates="trials")

    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in TRIAL_STATES) + ")",
            name="koala_trial_state",
        ),
        Index("koala_trial_arm", "arm_id"),
    )


class EpochMetrics(Base):
    __tablename__ = "koala_epoch"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("koala_trial.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    val_perplexity: Mapped[float | None] = mapped_column(Float)
    epoch_seconds: Mapped[float | None] = mapped_column(Float)
    step_seconds: Mapped[float | None] = mapped_column(Float)
    samples_per_second: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    koala_s_min: Mapped[float | None] = mapped_column(Float)
    koala_lambda_mean: Mapped[float | None] = mapped_column(Float)
    koala_r: Mapped[float | None] = mapped_column(Float)
    # none_as_null: an epoch without extra metrics stores SQL NULL, not the JSON text 'null'.
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
