"""Faulty contracts: one function per fault kind, each injecting exactly one fault and recording exactly
the mismatches revtrace must report for it (see DESIGN.md and docs/reconciliation.md).

Each function builds the whole contract on a `Draft` and answers the variant it chose.
"""
from __future__ import annotations

from collections.abc import Callable

from collector import conventions as c
from probes.config import RECURRING_GAP_MIN_AGE, UNPAID_MIN_AGE, UNREVERSED_MIN_AGE
from probes.documents import Draft, Invoice, Order
from probes.lifecycle import (
    HOUR,
    MINUTE,
    book,
    full_chain,
    full_chain_from,
    issue,
    post,
    recurring,
    settle,
)

Fault = Callable[[Draft], str]


def _cid(d: Draft) -> str:
    assert d.contract_id is not None
    return d.contract_id


def missing_invoice(d: Draft) -> str:
    cfg = d.config
    if (not d.time.live and cfg.recurring_share > 0 and cfg.history[0] > RECURRING_GAP_MIN_AGE
            and d.rng.random() < 0.3):
        order, started = recurring(d, gap=True)
        # DESIGN.md gives the k-th live invoice by time to interval k, so the interval left uninvoiced
        # is seen as the last started one, whichever was skipped.
        d.expect(c.MISSING_INVOICE, order.amount, order.currency, f"{_cid(d)}#{started - 1}",
                 "recurring interval never invoiced", leakage=True)
        return "recurring_gap"
    order = book(d)
    d.expect(c.MISSING_INVOICE, order.amount, order.currency, order.id, "order never invoiced", leakage=True)
    return "one_time"


def amount_mismatch(d: Draft) -> str:
    order = book(d)
    diff = d.delta(order.amount)
    variant = d.rng.choice(("over_billed", "under_billed", "posting_differs", "overpaid"))
    if variant == "over_billed":
        _billed(d, order, order.amount + diff)
        d.expect(c.AMOUNT_MISMATCH, diff, order.currency, order.id, "invoiced above the order")
    elif variant == "under_billed":
        _billed(d, order, order.amount - diff)
        d.expect(c.AMOUNT_MISMATCH, diff, order.currency, order.id, "invoiced below the order", leakage=True)
    elif variant == "posting_differs":
        inv = issue(d, order)
        sign = 1 if d.rng.random() < 0.5 else -1
        posting = post(d, inv, amount=inv.amount + sign * diff)
        settle(d, inv)
        d.expect(c.AMOUNT_MISMATCH, diff, inv.currency, posting.id, "posting amount differs from its invoice")
    else:
        inv = issue(d, order)
        post(d, inv)
        settle(d, inv, amount=inv.total + diff)
        d.expect(c.AMOUNT_MISMATCH, diff, inv.currency, inv.id, "paid more than the invoice total")
    return variant


def _billed(d: Draft, order: Order, amount: int) -> None:
    """Invoiced at `amount`, then posted and paid exactly as invoiced."""
    inv = issue(d, order, amount=amount)
    post(d, inv)
    settle(d, inv)


def currency_mismatch(d: Draft) -> str:
    order = book(d)
    foreign = d.rng.choice([cur for cur in d.config.currencies if cur != order.currency])
    # Some made-up exchange rate: the three documents only have to agree among themselves.
    amount = max(1, order.amount * d.rng.randint(60, 140) // 100)
    inv = issue(d, order, amount=amount, currency=foreign)
    posting = post(d, inv)
    pay = settle(d, inv)
    for doc_id, cents, what in ((inv.id, inv.amount, "invoice"), (posting.id, posting.amount, "posting"),
                                (pay.id, pay.amount, "payment")):
        d.expect(c.CURRENCY_MISMATCH, cents, foreign, doc_id, f"{what} in {foreign}, order in {order.currency}")
    return "billing_chain"


def missing_posting(d: Draft) -> str:
    inv = issue(d, book(d))
    settle(d, inv)
    d.expect(c.MISSING_POSTING, inv.amount, inv.currency, inv.id, "invoice never posted")
    return "not_posted"


def tax_mismatch(d: Draft) -> str:
    inv = issue(d, book(d))
    diff = d.delta(inv.tax or inv.amount)
    sign = -1 if inv.tax > diff and d.rng.random() < 0.5 else 1
    posting = post(d, inv, tax=inv.tax + sign * diff)
    settle(d, inv)
    d.expect(c.TAX_MISMATCH, diff, inv.currency, posting.id, "posted tax differs from the invoice's")
    return "tax_lower" if sign < 0 else "tax_higher"


def entity_mismatch(d: Draft) -> str:
    inv = issue(d, book(d))
    other = d.rng.choice([e.code for e in d.config.entities if e.code != d.entity.code])
    posting = post(d, inv, entity=other)
    settle(d, inv)
    d.expect(c.ENTITY_MISMATCH, inv.amount, inv.currency, posting.id, f"posted to {other}, invoiced by "
             f"{d.entity.code}")
    return "other_entity"


def duplicate_invoice(d: Draft) -> str:
    order = book(d)
    first = full_chain(d, order)
    dup = issue(d, order, at=d.time.after(first.at, (5 * MINUTE, 20 * HOUR)))
    d.expect(c.DUPLICATE_INVOICE, dup.amount, dup.currency, dup.id, f"second invoice for {first.id}")
    return "reissued_twice"


def duplicate_posting(d: Draft) -> str:
    inv = issue(d, book(d))
    first = post(d, inv)
    dup = d.posting(d.time.after(first.at, (MINUTE, 12 * HOUR)), inv)
    settle(d, inv)
    d.expect(c.DUPLICATE_POSTING, dup.amount, dup.currency, dup.id, f"second posting of {inv.id}")
    return "posted_twice"


def unpaid_overdue(d: Draft) -> str:
    inv = issue(d, book(d, min_age=UNPAID_MIN_AGE), overdue=True)
    post(d, inv)
    if d.rng.random() < 0.5:
        paid = inv.total - d.delta(inv.total)
        settle(d, inv, amount=paid)
        variant = "partly_paid"
    else:
        paid = 0
        variant = "not_paid"
    d.expect(c.UNPAID_OVERDUE, inv.total - paid, inv.currency, inv.id, f"{variant.replace('_', ' ')} by due date")
    return variant


def unreversed_posting(d: Draft) -> str:
    order = book(d, min_age=UNREVERSED_MIN_AGE)
    first = issue(d, order)
    first_post = post(d, first)
    cancelled_at = d.time.after(first_post.at, (10 * MINUTE, 12 * HOUR))
    if d.rng.random() < 0.5:
        d.void(cancelled_at, first)
        variant = "voided"
    else:
        d.credit(cancelled_at, first, first.amount)
        variant = "credited_in_full"
    # Issued more than a duplicate window after the first, so it can never pass for a duplicate.
    window = d.time.scaled(d.config.windows.duplicate)
    full_chain_from(d, order, d.time.after(max(first.at + window, cancelled_at), (10 * MINUTE, 12 * HOUR)))
    d.expect(c.UNREVERSED_POSTING, first_post.amount, first_post.currency, first_post.id,
             f"{first.id} {variant.replace('_', ' ')}, its posting never reversed")
    return variant


def orphan_payment(d: Draft) -> str:
    inv = _phantom_invoice(d)
    pay = d.payment(inv.at, inv, inv.total)
    d.expect(c.ORPHAN_PAYMENT, pay.amount, pay.currency, pay.id, f"names unknown invoice {inv.id}")
    return "unknown_invoice"


def orphan_posting(d: Draft) -> str:
    inv = _phantom_invoice(d)
    posting = d.posting(inv.at, inv)
    d.expect(c.ORPHAN_POSTING, posting.amount, posting.currency, posting.id, f"names unknown invoice {inv.id}")
    return "unknown_invoice"


def _phantom_invoice(d: Draft) -> Invoice:
    at = d.time.order_time(d.config.margin + d.config.windows.orphan_grace + HOUR)
    return d.invoice(at, None, d.amount(), exists=False)


FAULTS: dict[str, Fault] = {
    c.MISSING_INVOICE: missing_invoice,
    c.AMOUNT_MISMATCH: amount_mismatch,
    c.CURRENCY_MISMATCH: currency_mismatch,
    c.MISSING_POSTING: missing_posting,
    c.TAX_MISMATCH: tax_mismatch,
    c.ENTITY_MISMATCH: entity_mismatch,
    c.DUPLICATE_INVOICE: duplicate_invoice,
    c.DUPLICATE_POSTING: duplicate_posting,
    c.UNPAID_OVERDUE: unpaid_overdue,
    c.UNREVERSED_POSTING: unreversed_posting,
    c.ORPHAN_PAYMENT: orphan_payment,
    c.ORPHAN_POSTING: orphan_posting,
}
