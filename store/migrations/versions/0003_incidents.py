"""Incidents: one searchable row per incident, kept up to date from its audit events.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident_id", sa.String(200), primary_key=True),
        sa.Column("playbook", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("level", sa.String(64)),
        sa.Column("triggered_by", sa.String(200)),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
    )
    for column in ("playbook", "state", "level", "triggered_at"):
        op.create_index(f"ix_incidents_{column}", "incidents", [column])


def downgrade() -> None:
    op.drop_table("incidents")
