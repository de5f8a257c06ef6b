"""the pass keeps lag_buckets beside the contract rows it writes: drop the triggers on contracts

SQLite ran migration 0006's per-row trigger for each contract a pass wrote, ~45 us a row, most of what a
first full pass spent writing. The pass is the only writer of contracts; it now adds the same bucket counts
(collector/lag_buckets.py) in the same transaction. The triggers on mismatches stay.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPS = ("insert", "update", "delete")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for op_ in OPS:
        name = f"contracts_read_totals_{op_}"
        if sqlite:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON contracts")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def downgrade() -> None:
    revision_0006 = context.script.get_revision("0006").module  # as Alembic loaded it
    revision_0006.create_triggers(op.get_bind().dialect.name == "sqlite", ["contracts"])
