"""events waiting for their contract, kept apart so that a pass joins them by index

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JOIN_REFS = ("invoice_id", "order_id", "posting_id", "payment_id")
ORPHANABLE = ("posting.created", "payment.succeeded")


def upgrade() -> None:
    op.create_table(
        "waiting",
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.Column("orphan_at_us", sa.BigInteger(), nullable=True),
        sa.Column("reported", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event_pk"),
    )
    op.create_index("ix_waiting_orphan", "waiting", ["reported", "orphan_at_us"])
    op.create_table(
        "waiting_refs",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "ref", "event_pk"),
    )
    # Events a 0002 store holds unjoined wait in the new tables; the next pass joins or reports them.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, type, at_us, body FROM events WHERE contract_key IS NULL")).all()
    for pk, type_, at_us, body in rows:
        refs = json.loads(body).get("refs") or {}
        orphan_at = at_us if type_ in ORPHANABLE and "invoice_id" in refs else None
        conn.execute(sa.text("INSERT INTO waiting (event_pk, orphan_at_us, reported) VALUES (:p, :a, 0)"),
                     {"p": pk, "a": orphan_at})
        for kind in JOIN_REFS:
            if kind in refs:
                conn.execute(sa.text("INSERT INTO waiting_refs (kind, ref, event_pk) VALUES (:k, :r, :p)"),
                             {"k": kind, "r": refs[kind], "p": pk})


def downgrade() -> None:
    op.drop_table("waiting_refs")
    op.drop_index("ix_waiting_orphan", table_name="waiting")
    op.drop_table("waiting")
