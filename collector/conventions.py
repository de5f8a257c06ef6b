"""Every name the collector shows the outside world: sources, event types, stages, hops, mismatch kinds and
metric names. DESIGN.md is their contract; no other module spells them."""
from __future__ import annotations

SOURCES = ("crm", "billing", "erp", "payment")

ORDER_BOOKED = "order.booked"
ORDER_AMENDED = "order.amended"
ORDER_CANCELLED = "order.cancelled"
INVOICE_ISSUED = "invoice.issued"
INVOICE_VOIDED = "invoice.voided"
INVOICE_CREDITED = "invoice.credited"
POSTING_CREATED = "posting.created"
POSTING_REVERSED = "posting.reversed"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
PAYMENT_REFUNDED = "payment.refunded"
EVENT_TYPES = (
    ORDER_BOOKED, ORDER_AMENDED, ORDER_CANCELLED,
    INVOICE_ISSUED, INVOICE_VOIDED, INVOICE_CREDITED,
    POSTING_CREATED, POSTING_REVERSED,
    PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_REFUNDED,
)
REF_KEYS = ("order_id", "invoice_id", "posting_id", "payment_id", "account_id")
# The refs that can lead an event to its contract, in the order they are tried (DESIGN.md: a payment or
# posting that names only refs.invoice_id joins the contract of that invoice).
JOIN_REFS = ("invoice_id", "order_id", "posting_id", "payment_id")

STAGES = ("ordered", "invoiced", "posted", "paid")
HOPS = ("order_to_invoice", "invoice_to_posting", "invoice_to_payment")

MISSING_INVOICE = "missing_invoice"
MISSING_POSTING = "missing_posting"
UNPAID_OVERDUE = "unpaid_overdue"
AMOUNT_MISMATCH = "amount_mismatch"
CURRENCY_MISMATCH = "currency_mismatch"
TAX_MISMATCH = "tax_mismatch"
ENTITY_MISMATCH = "entity_mismatch"
DUPLICATE_INVOICE = "duplicate_invoice"
DUPLICATE_POSTING = "duplicate_posting"
UNREVERSED_POSTING = "unreversed_posting"
ORPHAN_PAYMENT = "orphan_payment"
ORPHAN_POSTING = "orphan_posting"
MISMATCH_KINDS = (
    MISSING_INVOICE, MISSING_POSTING, UNPAID_OVERDUE, AMOUNT_MISMATCH, CURRENCY_MISMATCH, TAX_MISMATCH,
    ENTITY_MISMATCH, DUPLICATE_INVOICE, DUPLICATE_POSTING, UNREVERSED_POSTING, ORPHAN_PAYMENT, ORPHAN_POSTING,
)

SCOPE_INGEST, SCOPE_READ, SCOPE_ADMIN = "ingest", "read", "admin"
SCOPES = (SCOPE_INGEST, SCOPE_READ, SCOPE_ADMIN)

METRIC_EVENTS_INGESTED = "revtrace_events_ingested_total"
METRIC_EVENTS_REJECTED = "revtrace_events_rejected_total"
METRIC_EVENTS_DUPLICATE = "revtrace_events_duplicate_total"
METRIC_STAGE_LAG = "revtrace_stage_lag_seconds"
METRIC_CONTRACTS = "revtrace_contracts"
METRIC_OPEN_MISMATCHES = "revtrace_open_mismatches"
METRIC_AMOUNT_AT_RISK = "revtrace_amount_at_risk"
# Beyond DESIGN.md's list: whether the store answered the scrape, and what its outages refused.
METRIC_STORE_UP = "revtrace_store_up"
METRIC_STORE_UNAVAILABLE = "revtrace_store_unavailable_total"
