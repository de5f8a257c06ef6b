"""Reconciliation of one contract: DESIGN.md's mismatch table applied to its documents at a given `now`.

Pure: the same documents and `now` always give the same findings, whatever the arrival order of the
events; `next_deadline` says when the answer could change with no new event, so that an incremental pass
re-examines a contract exactly when one of its windows closes."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from collector import conventions as c
from collector.documents import Documents, Invoice, Order, Posting
from collector.policy import HOP_INVOICE, HOP_PAYMENT, HOP_POSTING, Policy


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    amount: Decimal
    currency: str
    evidence: tuple[str, ...]
    leakage: Decimal | None = None
    orphan: bool = False


@dataclass
class _Check:
    docs: Documents
    now: datetime
    policy: Policy
    currency: str | None
    found: list[Finding] = field(default_factory=list)
    deadlines: list[datetime] = field(default_factory=list)

    def add(self, kind: str, subject: str, amount: Decimal, currency: str | None, evidence: list[str],
            leakage: Decimal | None = None, orphan: bool = False) -> None:
        self.found.append(Finding(kind, subject, amount, currency or "XXX", tuple(dict.fromkeys(evidence)),
                                  leakage, orphan))

    def passed(self, deadline: datetime) -> bool:
        """Whether a window has closed; an open one is remembered as the next moment to look again."""
        if self.now > deadline:
            return True
        self.deadlines.append(deadline)
        return False

    def differs(self, a: Decimal, b: Decimal) -> bool:
        return abs(a - b) > self.policy.tolerance

    def foreign(self, currency: str | None) -> bool:
        return self.currency is not None and currency is not None and currency != self.currency


def reconcile(docs: Documents, now: datetime, policy: Policy) -> tuple[list[Finding], datetime | None]:
    """The open findings of one contract at `now`, and the next moment they could change by time alone."""
    chk = _Check(docs, now, policy, docs.currency)
    invoices = sorted(docs.live_invoices(), key=lambda i: (i.at, i.id))
    _duplicates_and_currency(chk)
    _order_vs_invoices(chk, invoices)
    for inv in invoices:
        if not chk.foreign(inv.currency):
            _postings_of(chk, inv)
            _payments_of(chk, inv)
    _unreversed(chk)
    _orphans(chk)
    return chk.found, min(chk.deadlines, default=None)


def _duplicates_and_currency(chk: _Check) -> None:
    docs = chk.docs
    for inv in docs.invoices.values():
        if not inv.live:
            continue
        if inv.duplicate:
            chk.add(c.DUPLICATE_INVOICE, inv.id, inv.issued, inv.currency, [inv.event.event_id])
        elif chk.foreign(inv.currency):
            chk.add(c.CURRENCY_MISMATCH, inv.id, inv.issued, inv.currency, [inv.event.event_id])
    for p in docs.postings.values():
        owner = docs.invoices.get(p.invoice_ref or "")
        if p.reversed or owner is None or owner.duplicate or not owner.live:
            continue
        if chk.foreign(p.currency) and not _is_duplicate_posting(docs, p):
            chk.add(c.CURRENCY_MISMATCH, p.id, p.amount, p.currency, [p.event.event_id])
    for pay in docs.payments:
        paid = docs.invoices.get(pay.invoice_ref or "")
        if pay.kind == c.PAYMENT_FAILED or (paid is not None and (paid.duplicate or not paid.live)):
            continue
        if chk.foreign(pay.currency) and (paid is not None or pay.invoice_ref is None):
            chk.add(c.CURRENCY_MISMATCH, pay.event.event_id, pay.amount, pay.currency, [pay.event.event_id])


def _order_vs_invoices(chk: _Check, invoices: list[Invoice]) -> None:
    order, policy = chk.docs.order, chk.policy
    if order is None or (order.cancelled and not invoices):
        return
    window = policy.invoice_window
    evidence = order.evidence + [i.event.event_id for i in invoices]
    if order.cancelled:
        started = past = 0
    else:
        started = _started(chk, order)
        past = sum(1 for k in range(started) if chk.passed(order.interval_start(k) + window))
    if not order.cancelled and policy.expects(order.entity, HOP_INVOICE):
        for k in range(len(invoices), past):
            subject = f"#{k}"
            chk.add(c.MISSING_INVOICE, subject, order.amount, order.currency, order.evidence, leakage=order.amount)
    domestic = [i for i in invoices if not chk.foreign(i.currency)]
    if not domestic:
        return
    billed = sum((i.net for i in domestic), Decimal(0))
    ceiling = order.amount * started
    if billed > ceiling and chk.differs(billed, ceiling):
        chk.add(c.AMOUNT_MISMATCH, "order", billed - ceiling, order.currency, evidence)
        return
    floor = order.amount * min(len(domestic), past)
    if billed < floor and chk.differs(billed, floor):
        chk.add(c.AMOUNT_MISMATCH, "order", floor - billed, order.currency, evidence, leakage=floor - billed)


def _started(chk: _Check, order: Order) -> int:
    """How many intervals have started: the first always; a later one once its start has passed."""
    n = 1
    for k in range(1, order.intervals):
        if chk.now >= order.interval_start(k):
            n += 1
        else:
            chk.deadlines.append(order.interval_start(k))
            break
    return n


def _is_duplicate_posting(docs: Documents, p: Posting) -> bool:
    live = sorted((q for q in docs.postings.values() if q.invoice_ref == p.invoice_ref and not q.reversed),
                  key=lambda q: (q.at, q.id))
    return bool(live) and live[0] is not p


def _postings_of(chk: _Check, inv: Invoice) -> None:
    docs, policy = chk.docs, chk.policy
    live = sorted((p for p in docs.postings.values() if p.invoice_ref == inv.id and not p.reversed),
                  key=lambda p: (p.at, p.id))
    if not live:
        entity = inv.entity or (docs.order.entity if docs.order else None)
        if policy.expects(entity, HOP_POSTING) and chk.passed(inv.at + policy.posting_window):
            chk.add(c.MISSING_POSTING, inv.id, inv.net, inv.currency, [inv.event.event_id])
        return
    first, *dups = live
    for d in dups:
        chk.add(c.DUPLICATE_POSTING, d.id, d.amount, d.currency, [first.event.event_id, d.event.event_id])
    if chk.foreign(first.currency):
        return
    evidence = [inv.event.event_id, first.event.event_id]
    if chk.differs(first.amount, inv.net):
        chk.add(c.AMOUNT_MISMATCH, first.id, abs(first.amount - inv.net), inv.currency, evidence)
    if chk.differs(first.tax, inv.tax):
        chk.add(c.TAX_MISMATCH, first.id, abs(first.tax - inv.tax), inv.currency, evidence)
    expected_entity = inv.entity or (docs.order.entity if docs.order else None)
    if first.entity is not None and expected_entity is not None and first.entity != expected_entity:
        chk.add(c.ENTITY_MISMATCH, first.id, inv.net, inv.currency, evidence)


def _payments_of(chk: _Check, inv: Invoice) -> None:
    docs, policy = chk.docs, chk.policy
    paid = Decimal(0)
    evidence = [inv.event.event_id]
    for pay in docs.payments:
        if pay.invoice_ref != inv.id or chk.foreign(pay.currency) or pay.kind == c.PAYMENT_FAILED:
            continue
        paid += pay.amount if pay.kind == c.PAYMENT_SUCCEEDED else -pay.amount
        evidence.append(pay.event.event_id)
    total = inv.net + inv.tax
    if paid > total and chk.differs(paid, total):
        chk.add(c.AMOUNT_MISMATCH, f"{inv.id}/paid", paid - total, inv.currency, evidence)
        return
    entity = inv.entity or (docs.order.entity if docs.order else None)
    if paid < total and chk.differs(paid, total) and policy.expects(entity, HOP_PAYMENT):
        due = inv.due_at or inv.at + policy.default_due
        if chk.passed(due + policy.overdue_after):
            chk.add(c.UNPAID_OVERDUE, inv.id, total - paid, inv.currency, evidence)


def _unreversed(chk: _Check) -> None:
    docs, policy = chk.docs, chk.policy
    for p in docs.postings.values():
        inv = docs.invoices.get(p.invoice_ref or "")
        if p.reversed or inv is None or inv.duplicate:
            continue
        ended = inv.ended_at
        if ended is not None and chk.passed(ended + policy.posting_window):
            chk.add(c.UNREVERSED_POSTING, p.id, p.amount, p.currency, [inv.event.event_id, p.event.event_id])


def _orphans(chk: _Check) -> None:
    docs, grace = chk.docs, chk.policy.orphan_grace
    for p in docs.postings.values():
        if not p.reversed and p.invoice_ref is not None and p.invoice_ref not in docs.invoices \
                and chk.passed(p.at + grace):
            chk.add(c.ORPHAN_POSTING, f"{p.event.source}/{p.event.event_id}", p.amount, p.currency,
                    [p.event.event_id], orphan=True)
    for pay in docs.payments:
        if pay.kind == c.PAYMENT_SUCCEEDED and pay.invoice_ref is not None \
                and pay.invoice_ref not in docs.invoices and chk.passed(pay.at + grace):
            chk.add(c.ORPHAN_PAYMENT, f"{pay.event.source}/{pay.event.event_id}", pay.amount, pay.currency,
                    [pay.event.event_id], orphan=True)
