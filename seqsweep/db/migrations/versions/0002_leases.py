"""Leases and delivery tracking: trials.lease_expires_at, heartbeat_at, enqueued_at;
studies.max_attempts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("trials", sa.Column("enqueued_at", Stamp, nullable=True))
    op.add_column("trials", sa.Column("heartbeat_at", Stamp, nullable=True))
    op.add_column("trials", sa.Column("lease_expires_at", Stamp, nullable=True))
    op.add_column(
        "studies",
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"),
    )


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("max_attempts")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("heartbeat_at")
        batch.drop_column("enqueued_at")
