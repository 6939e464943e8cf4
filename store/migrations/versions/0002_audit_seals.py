"""Seals: signed chain heads.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "audit_seals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("incident_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("sealed_at", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.UniqueConstraint("incident_id", "seq", name="uq_seal_incident_seq"),
    )
    op.create_index("ix_audit_seals_incident_id", "audit_seals", ["incident_id"])


def downgrade() -> None:
    op.drop_table("audit_seals")
