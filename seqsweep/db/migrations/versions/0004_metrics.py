"""Task and objective: trials.metrics, every final metric of a trial by name.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Trials recorded before keep NULL there; their metrics are the val/test loss and
accuracy columns, which every trial still fills where they apply.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Spelled out, not imported from schema.py: a migration must not change when the schema does.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("metrics", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("metrics")
