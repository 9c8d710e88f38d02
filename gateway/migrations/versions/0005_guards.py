"""guards of the gate page: PIN, override right, sessions at a reader's post

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guards",
        sa.Column("holder_id", sa.String(length=40), nullable=False),
        sa.Column("pin_hash", sa.String(length=255), nullable=False),
        sa.Column("can_override", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_pins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["holder_id"], ["holders.id"]),
        sa.PrimaryKeyConstraint("holder_id"),
    )
    op.create_table(
        "guard_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("holder_id", sa.String(length=40), nullable=False),
        sa.Column("reader", sa.String(length=48), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["holder_id"], ["guards.holder_id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("guard_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guard_sessions_holder_id"), ["holder_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("guard_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guard_sessions_holder_id"))
    op.drop_table("guard_sessions")
    op.drop_table("guards")
