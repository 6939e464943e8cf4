"""Rows written by a workflow task attempt that never committed are superseded, not lost.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("task", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "audit_superseded",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.String(200), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("task", sa.Integer, nullable=False),
        sa.Column("row", sa.Text, nullable=False),
        sa.Column("superseded_by_task", sa.Integer, nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_superseded")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("task")
