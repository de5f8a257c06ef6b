"""initial schema

Revision ID: 0001
Revises: (none)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contracts',
    sa.Column('contract_key', sa.String(length=200), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('entity', sa.String(length=200), nullable=True),
    sa.Column('ordered_us', sa.BigInteger(), nullable=True),
    sa.Column('next_due_us', sa.BigInteger(), nullable=True),
    sa.Column('booked_micros', sa.BigInteger(), nullable=False),
    sa.Column('invoiced_micros', sa.BigInteger(), nullable=False),
    sa.Column('posted_micros', sa.BigInteger(), nullable=False),
    sa.Column('collected_micros', sa.BigInteger(), nullable=False),
    sa.Column('lag_order_to_invoice', sa.Float(), nullable=True),
    sa.Column('lag_invoice_to_posting', sa.Float(), nullable=True),
    sa.Column('lag_invoice_to_payment', sa.Float(), nullable=True),
    sa.Column('updated_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('contract_key')
    )
    with op.batch_alter_table('contracts', schema=None) as batch_op:
        batch_op.create_index('ix_contracts_next_due', ['next_due_us'], unique=False)
        batch_op.create_index('ix_contracts_ordered', ['ordered_us'], unique=False)
        batch_op.create_index('ix_contracts_stage', ['stage', 'contract_key'], unique=False)

    op.create_table('dirty',
    sa.Column('contract_key', sa.String(length=200), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('contract_key')
    )
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('at_us', sa.BigInteger(), nullable=False),
    sa.Column('contract_key', sa.String(length=200), nullable=True),
    sa.Column('received_us', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'event_id', name='uq_events_source_event_id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_contract_key', ['contract_key'], unique=False)
        batch_op.create_index('ix_events_unresolved', ['id'], unique=False, sqlite_where=sa.text('contract_key IS NULL'), postgresql_where=sa.text('contract_key IS NULL'))

    op.create_table('mismatches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=220), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=220), nullable=False),
    sa.Column('contract_id', sa.String(length=200), nullable=True),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('amount_at_risk', sa.String(length=40), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('leakage_micros', sa.BigInteger(), nullable=True),
    sa.Column('detected_us', sa.BigInteger(), nullable=False),
    sa.Column('closed_us', sa.BigInteger(), nullable=True),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('mismatches', schema=None) as batch_op:
        batch_op.create_index('ix_mismatches_contract', ['contract_id'], unique=False)
        batch_op.create_index('ix_mismatches_scope', ['scope', 'state'], unique=False)
        batch_op.create_index('ix_mismatches_state_kind', ['state', 'kind', 'id'], unique=False)
        batch_op.create_index('uq_mismatches_open', ['scope', 'kind', 'subject'], unique=True, sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'"))

    op.create_table('ref_map',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=200), nullable=False),
    sa.Column('contract_key', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'ref')
    )


def downgrade() -> None:
    op.drop_table('ref_map')
    with op.batch_alter_table('mismatches', schema=None) as batch_op:
        batch_op.drop_index('uq_mismatches_open', sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'"))
        batch_op.drop_index('ix_mismatches_state_kind')
        batch_op.drop_index('ix_mismatches_scope')
        batch_op.drop_index('ix_mismatches_contract')

    op.drop_table('mismatches')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_unresolved', sqlite_where=sa.text('contract_key IS NULL'), postgresql_where=sa.text('contract_key IS NULL'))
        batch_op.drop_index('ix_events_contract_key')

    op.drop_table('events')
    op.drop_table('dirty')
    with op.batch_alter_table('contracts', schema=None) as batch_op:
        batch_op.drop_index('ix_contracts_stage')
        batch_op.drop_index('ix_contracts_ordered')
        batch_op.drop_index('ix_contracts_next_due')

    op.drop_table('contracts')
