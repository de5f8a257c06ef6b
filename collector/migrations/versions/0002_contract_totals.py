"""running totals of contracts, and indexes for lag percentiles

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

AMOUNTS = ("booked_micros", "invoiced_micros", "posted_micros", "collected_micros")
LAGS = {"ix_contracts_lag_o2i": "lag_order_to_invoice", "ix_contracts_lag_i2p": "lag_invoice_to_posting",
        "ix_contracts_lag_i2pay": "lag_invoice_to_payment"}


def upgrade() -> None:
    op.create_table(
        "contract_totals",
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("contracts", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in AMOUNTS),
        sa.PrimaryKeyConstraint("currency", "stage"),
    )
    # A store from 0001 already has contract rows: the totals start from them.
    sums = ", ".join(f"SUM({name})" for name in AMOUNTS)
    op.execute(f"INSERT INTO contract_totals (currency, stage, contracts, {', '.join(AMOUNTS)}) "
               f"SELECT COALESCE(currency, ''), stage, COUNT(*), {sums} FROM contracts "
               f"GROUP BY COALESCE(currency, ''), stage")
    with op.batch_alter_table("contracts") as batch:
        for index, column in LAGS.items():
            batch.create_index(index, [column], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contracts") as batch:
        for index in LAGS:
            batch.drop_index(index)
    op.drop_table("contract_totals")
