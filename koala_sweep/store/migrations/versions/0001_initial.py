"""The first schema: studies, arms, trials and per-epoch metrics.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
METRICS = (
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


def upgrade() -> None:
    op.create_table(
        "koala_study",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("spec_yaml", sa.Text, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("workload", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("package_versions", JSONType, nullable=False),
        sa.Column("device", sa.String(200), nullable=False),
        sa.CheckConstraint("direction IN ('minimize', 'maximize')", name="koala_study_direction"),
    )
    op.create_table(
        "koala_arm",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer,
            sa.ForeignKey("koala_study.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("optimizer", sa.String(50), nullable=False),
        sa.Column("search_space", JSONType, nullable=False),
        sa.Column("budget", sa.Integer, nullable=False),
        sa.Column("optuna_study_name", sa.String(300), nullable=False, unique=True),
        sa.UniqueConstraint("study_id", "name", name="koala_arm_study_name"),
    )
    op.create_table(
        "koala_trial",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "arm_id", sa.Integer, sa.ForeignKey("koala_arm.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("optuna_trial_number", sa.Integer),
        sa.Column("ray_trial_id", sa.String(100)),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "state IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAILED', 'DIVERGED')",
            name="koala_trial_state",
        ),
    )
    op.create_index("koala_trial_arm", "koala_trial", ["arm_id"])
    op.create_table(
        "koala_epoch",
        sa.Column(
            "trial_id",
            sa.Integer,
            sa.ForeignKey("koala_trial.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Float) for name in METRICS),
        sa.Column("extra", JSONType),
    )


def downgrade() -> None:
    for table in ("koala_epoch", "koala_trial", "koala_arm", "koala_study"):
        op.drop_table(table)
