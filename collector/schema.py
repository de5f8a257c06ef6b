"""The store's tables. Times are whole microseconds since the epoch (UTC) and money whole micro-units, so
that ordering and sums are exact and fast on SQLite as on PostgreSQL."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, text

metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid: no extra index

# Every event ever acknowledged, once per (source, event_id). contract_key is the contract it joined, or
# NULL while its refs name nothing known yet.
events = Table(
    "events", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("contract_key", String(200)),
    Column("received_us", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("source", "event_id", name="uq_events_source_event_id"),
    Index("ix_events_contract_key", "contract_key"),
)

# External ids (order, invoice, posting, payment) and the contract each belongs to; the first claim wins.
ref_map = Table(
    "ref_map", metadata,
    Column("kind", String(16), primary_key=True),
    Column("ref", String(200), primary_key=True),
    Column("contract_key", String(200), nullable=False),
)

# Contracts with events not yet reconciled. token changes on every new event, so a pass removes only the
# marks it has seen.
dirty = Table(
    "dirty", metadata,
    Column("contract_key", String(200), primary_key=True),
    Column("token", BigInteger, nullable=False),
)

# One row per contract: what the last pass found, for lists, gauges and the assurance summary.
contracts = Table(
    "contracts", metadata,
    Column("contract_key", String(200), primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("currency", String(3)),
    Column("entity", String(200)),
    Column("ordered_us", BigInteger),
    Column("next_due_us", BigInteger),
    Column("booked_micros", BigInteger, nullable=False),
    Column("invoiced_micros", BigInteger, nullable=False),
    Column("posted_micros", BigInteger, nullable=False),
    Column("collected_micros", BigInteger, nullable=False),
    Column("lag_order_to_invoice", Float),
    Column("lag_invoice_to_posting", Float),
    Column("lag_invoice_to_payment", Float),
    Column("updated_us", BigInteger, nullable=False),
    Index("ix_contracts_stage", "stage", "contract_key"),
    Index("ix_contracts_next_due", "next_due_us"),
    Index("ix_contracts_ordered", "ordered_us"),
    Index("ix_contracts_lag_o2i", "lag_order_to_invoice"),
    Index("ix_contracts_lag_i2p", "lag_invoice_to_posting"),
    Index("ix_contracts_lag_i2pay", "lag_invoice_to_payment"),
)

# Running totals of the contracts table by currency ("" for none) and stage, kept by the pass in the same
# transaction as the rows they sum, so that gauges and the all-time summary never scan every contract.
contract_totals = Table(
    "contract_totals", metadata,
    Column("currency", String(3), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("contracts", BigInteger, nullable=False),
    Column("booked_micros", BigInteger, nullable=False),
    Column("invoiced_micros", BigInteger, nullable=False),
    Column("posted_micros", BigInteger, nullable=False),
    Column("collected_micros", BigInteger, nullable=False),
)

# Every mismatch ever opened. scope is the contract it was found in (or "~source/event_id" for an event that
# joined no contract); while open, (scope, kind, subject) is unique.
mismatches = Table(
    "mismatches", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("scope", String(220), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject", String(220), nullable=False),
    Column("contract_id", String(200)),
    Column("state", String(8), nullable=False),
    Column("amount_at_risk", String(40), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("leakage_micros", BigInteger),
    Column("detected_us", BigInteger, nullable=False),
    Column("closed_us", BigInteger),
    Column("evidence", Text, nullable=False),
    Index("ix_mismatches_scope", "scope", "state"),
    Index("ix_mismatches_state_kind", "state", "kind", "id"),
    Index("ix_mismatches_state_id", "state", "id"),
    Index("ix_mismatches_contract", "contract_id"),
    Index("uq_mismatches_open", "scope", "kind", "subject", unique=True,
          sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'")),
)

# Open mismatches summed by kind and currency, and each hop's lags counted by bucket (collector/lag_buckets.py):
# kept in the same transaction as the rows they sum, by triggers on mismatches (migration 0006) and by the
# pass beside the contract rows it writes (0007), so that the summary, the overview and /metrics never scan
# every open mismatch or lag.
open_mismatch_totals = Table(
    "open_mismatch_totals", metadata,
    Column("kind", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("mismatches", BigInteger, nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("leakage_micros", BigInteger, nullable=False),
)
lag_buckets = Table(
    "lag_buckets", metadata,
    Column("hop", String(32), primary_key=True),
    Column("bucket", Float, primary_key=True),
    Column("contracts", BigInteger, nullable=False),
)

# Events that joined no contract yet, with the refs that may still lead to one. orphan_at_us is the time
# of a posting or payment that names an invoice (it becomes an orphan once the grace has passed), NULL for
# the rest; reported is set once the pass has looked at it after its grace.
waiting = Table(
    "waiting", metadata,
    Column("event_pk", BigInteger, primary_key=True),
    Column("orphan_at_us", BigInteger),
    Column("reported", Integer, nullable=False),
    Index("ix_waiting_orphan", "reported", "orphan_at_us"),
)
waiting_refs = Table(
    "waiting_refs", metadata,
    Column("kind", String(16), primary_key=True),
    Column("ref", String(200), primary_key=True),
    Column("event_pk", BigInteger, primary_key=True),
)
