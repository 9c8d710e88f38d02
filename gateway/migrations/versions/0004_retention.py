"""retention of personal data: when a holder's personal data was removed, and the keyed hash kept instead

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("holders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("personal_data_removed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("identity_hmac", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_holders_identity_hmac"), ["identity_hmac"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("holders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_holders_identity_hmac"))
        batch_op.drop_column("identity_hmac")
        batch_op.drop_column("personal_data_removed_at")
