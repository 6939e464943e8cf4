"""A playbook's version may be date-like (202612011200): the incidents table holds it as a 64-bit
integer. PostgreSQL's 32-bit `integer` refused the incident's first write, so a trigger applied
its levers and recorded nothing.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.alter_column(
            "version", existing_type=sa.Integer, type_=sa.BigInteger, existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.alter_column(
            "version", existing_type=sa.BigInteger, type_=sa.Integer, existing_nullable=False
        )
