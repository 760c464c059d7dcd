"""Record the Ray dashboard's URL of a study, for the live dashboard to link to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("koala_study", sa.Column("ray_dashboard_url", sa.String(500)))


def downgrade() -> None:
    with op.batch_alter_table("koala_study") as batch:
        batch.drop_column("ray_dashboard_url")
