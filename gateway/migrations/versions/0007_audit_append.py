"""PostgreSQL: audit_append(), the decision batch's write and commit in one statement

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

A decision batch used to run BEGIN, its reads with the chain's lock, the head read, the INSERT and the COMMIT:
five round trips. Now it reads (head included) in one autocommitted statement, decides, and calls this function,
which takes the chain's lock, checks that the head is still the one the entries were hashed after, and only then
inserts them. Its statement commits on its own, so the lock is held for the insert and the commit alone. When
another writer moved the head in between, nothing is inserted and the function returns the head it found: the
caller hashes the entries again after it (gateway/audit.py, `append_after`). SQLite has no such function and
needs none (a statement there costs microseconds, and BEGIN IMMEDIATE holds its only write lock).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The lock key is gateway/audit.py's _CHAIN_LOCK (0x41435321): every writer of the chain takes it.
# audit_entries is named without a schema: it resolves through search_path, like every other statement here.
FUNCTION = """
CREATE FUNCTION audit_append(expected_seq bigint, expected_hash text, entries json)
RETURNS TABLE (head_seq bigint, head_hash text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1094931233);
    -- A statement of its own, after the lock: it sees every entry committed before the lock was granted.
    SELECT a.seq, a.entry_hash INTO head_seq, head_hash FROM audit_entries a ORDER BY a.seq DESC LIMIT 1;
    head_seq := coalesce(head_seq, 0);
    head_hash := coalesce(head_hash, repeat('0', 64));
    IF head_seq = expected_seq AND head_hash = expected_hash THEN
        INSERT INTO audit_entries SELECT * FROM json_populate_recordset(NULL::audit_entries, entries);
    END IF;
    RETURN NEXT;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_append(bigint, text, json)")
