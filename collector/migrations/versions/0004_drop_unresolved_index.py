"""drop the index of unjoined events: the waiting tables took its place

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHERE = "contract_key IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_unresolved", sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.create_index("ix_events_unresolved", ["id"], unique=False, sqlite_where=sa.text(WHERE),
                           postgresql_where=sa.text(WHERE))
