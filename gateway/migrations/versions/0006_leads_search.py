"""leads' search: (column, seq) indexes so keyset pages (newest first) need no sort

Revision ID: 0006
Revises: 0005 (the highest below it when written; the lead fixes the chain at merge)
Create Date: 2026-11-21

A page is "the newest N entries with seq below the cursor" for one gate, holder, badge, kind or reason. An index
on (column, seq) answers it by walking the index backwards; the old single-column indexes on badge_id and
holder_id are subsumed by the new ones (same leading column) and dropped, so the decision writer maintains
three more indexes, not five.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NEW = {
    "ix_audit_gate_seq": ["gate", "seq"],
    "ix_audit_holder_seq": ["holder_id", "seq"],
    "ix_audit_badge_seq": ["badge_id", "seq"],
    "ix_audit_kind_seq": ["kind", "seq"],
    "ix_audit_reason_seq": ["reason", "seq"],
}
OLD = {"ix_audit_badge": ["badge_id"], "ix_audit_holder": ["holder_id"]}


def upgrade() -> None:
    for name, columns in NEW.items():
        op.create_index(name, "audit_entries", columns, unique=False)
    for name in OLD:
        op.drop_index(name, table_name="audit_entries")


def downgrade() -> None:
    for name, columns in OLD.items():
        op.create_index(name, "audit_entries", columns, unique=False)
    for name in NEW:
        op.drop_index(name, table_name="audit_entries")
