"""The documents of one contract (its order, invoices, postings and payments) assembled from its events.

Assembly depends only on the set of events, never on their arrival order: events are taken in
(occurred_at, source, event_id) order, and each document is keyed by its own id."""
from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from operator import attrgetter

from collector import conventions as c
from collector.model import Event


def add_months(t: datetime, months: int) -> datetime:
    """t plus whole calendar months, the day clamped to the month's last (Jan 31 + 1 month = Feb 28/29)."""
    month0 = t.month - 1 + months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


@dataclass
class Order:
    event: Event
    at: datetime
    amount: Decimal
    currency: str | None
    entity: str | None
    intervals: int
    recurring: bool
    cancelled: bool = False
    evidence: list[str] = field(default_factory=list)

    def interval_start(self, k: int) -> datetime:
        return add_months(self.at, k) if self.recurring else self.at


@dataclass
class Invoice:
    event: Event
    id: str
    at: datetime
    issued: Decimal
    tax: Decimal
    currency: str | None
    entity: str | None
    due_at: datetime | None
    voided_at: datetime | None = None
    credits: list[tuple[datetime, Decimal | None, str]] = field(default_factory=list)
    credited: Decimal = Decimal(0)
    closed_by_credit_at: datetime | None = None
    duplicate: bool = False

    @property
    def net(self) -> Decimal:
        return self.issued - self.credited

    @property
    def ended_at(self) -> datetime | None:
        """When it stopped being live (voided, or credited in full), or None while live."""
        times = [t for t in (self.voided_at, self.closed_by_credit_at) if t is not None]
        return min(times) if times else None

    @property
    def live(self) -> bool:
        return self.voided_at is None and self.closed_by_credit_at is None


@dataclass
class Posting:
    event: Event
    id: str
    at: datetime
    amount: Decimal
    tax: Decimal
    currency: str | None
    entity: str | None
    invoice_ref: str | None
    reversed: bool = False


@dataclass
class Payment:
    event: Event
    at: datetime
    kind: str
    amount: Decimal
    currency: str | None
    invoice_ref: str | None


@dataclass
class Documents:
    order: Order | None
    invoices: dict[str, Invoice]
    postings: dict[str, Posting]
    payments: list[Payment]
    latest_at: datetime | None

    def live_invoices(self) -> list[Invoice]:
        """Live invoices that are not duplicates, in (time, id) order."""
        return [i for i in self.invoices.values() if i.live and not i.duplicate]

    @property
    def currency(self) -> str | None:
        if self.order is not None and self.order.currency is not None:
            return self.order.currency
        first = min(self.invoices.values(), key=lambda i: (i.at, i.id), default=None)
        return first.currency if first is not None else None


_sort_key = attrgetter("occurred_at", "source", "event_id")


def assemble(events: Iterable[Event], duplicate_window: timedelta) -> Documents:
    ordered = sorted(events, key=_sort_key)
    order = _order(ordered)
    invoices: dict[str, Invoice] = {}
    postings: dict[str, Posting] = {}
    payments: list[Payment] = []
    voids: list[Event] = []
    credits: list[Event] = []
    reversals: list[Event] = []
    payment_invoice: dict[str, str] = {}
    for e in ordered:
        t = e.type
        if t == c.INVOICE_ISSUED:
            iid = e.refs.get("invoice_id", e.event_id)
            if iid not in invoices:  # a re-sent issue of the same invoice is the same document
                invoices[iid] = Invoice(e, iid, e.occurred_at, e.amount or Decimal(0), e.tax_amount or Decimal(0),
                                        e.currency, e.entity, e.due_at)
        elif t == c.INVOICE_VOIDED:
            voids.append(e)
        elif t == c.INVOICE_CREDITED:
            credits.append(e)
        elif t == c.POSTING_CREATED:
            pid = e.refs.get("posting_id", e.event_id)
            if pid not in postings:
                postings[pid] = Posting(e, pid, e.occurred_at, e.amount or Decimal(0), e.tax_amount or Decimal(0),
                                        e.currency, e.entity, e.refs.get("invoice_id"))
        elif t == c.POSTING_REVERSED:
            reversals.append(e)
        elif t in (c.PAYMENT_SUCCEEDED, c.PAYMENT_REFUNDED, c.PAYMENT_FAILED):
            if t == c.PAYMENT_SUCCEEDED and "payment_id" in e.refs and "invoice_id" in e.refs:
                payment_invoice.setdefault(e.refs["payment_id"], e.refs["invoice_id"])
            payments.append(Payment(e, e.occurred_at, t, e.amount or Decimal(0), e.currency,
                                    e.refs.get("invoice_id")))
    for e in voids:
        inv = invoices.get(e.refs.get("invoice_id", ""))
        if inv is not None and inv.voided_at is None:
            inv.voided_at = e.occurred_at
    for e in credits:
        inv = invoices.get(e.refs.get("invoice_id", ""))
        if inv is not None:
            inv.credits.append((e.occurred_at, e.amount, e.event_id))
    for inv in invoices.values():
        if inv.credits:
            _apply_credits(inv)
        elif inv.issued < 0:  # what _apply_credits makes of no credits at all, without its sort
            inv.credited = inv.issued
    for e in reversals:
        posting = postings.get(e.refs.get("posting_id", ""))
        if posting is not None:
            posting.reversed = True
    for p in payments:
        if p.invoice_ref is None and p.kind == c.PAYMENT_REFUNDED:
            p.invoice_ref = payment_invoice.get(p.event.refs.get("payment_id", ""))
    _mark_duplicates(invoices, duplicate_window)
    _attribute_unnamed(postings, payments, invoices)
    return Documents(order, invoices, postings, payments, ordered[-1].occurred_at if ordered else None)


def _order(events: list[Event]) -> Order | None:
    booked: list[Event] = []
    amended: list[Event] = []
    cancelled: list[Event] = []
    for e in events:
        t = e.type
        if t == c.ORDER_BOOKED:
            booked.append(e)
        elif t == c.ORDER_AMENDED:
            amended.append(e)
        elif t == c.ORDER_CANCELLED:
            cancelled.append(e)
    base = booked[0] if booked else (amended[0] if amended else None)
    if base is None:
        return None
    amount, currency, entity, attributes = base.amount or Decimal(0), base.currency, base.entity, base.attributes
    for e in amended:  # later amendments win, field by field
        amount = e.amount if e.amount is not None else amount
        currency = e.currency or currency
        entity = e.entity or entity
        if "billing" in e.attributes:
            attributes = e.attributes
    billing = attributes.get("billing")
    recurring = isinstance(billing, dict)
    intervals = int(billing["count"]) if isinstance(billing, dict) else 1
    evidence = [e.event_id for e in (booked[:1] + amended + cancelled)]
    return Order(base, base.occurred_at, amount, currency, entity, intervals, recurring, bool(cancelled), evidence)


def _apply_credits(inv: Invoice) -> None:
    total = Decimal(0)
    for at, amount, _ in sorted(inv.credits, key=lambda x: (x[0], x[2])):
        total = inv.issued if amount is None else total + amount  # a credit without an amount credits the rest
        if total >= inv.issued and inv.closed_by_credit_at is None:
            inv.closed_by_credit_at = at
    inv.credited = min(total, inv.issued)


def _mark_duplicates(invoices: dict[str, Invoice], window: timedelta) -> None:
    if len(invoices) < 2:  # the first live invoice is always kept
        return
    kept: list[Invoice] = []
    for inv in sorted((i for i in invoices.values() if i.live), key=lambda i: (i.at, i.id)):
        if any(k.issued == inv.issued and k.currency == inv.currency and inv.at - k.at <= window for k in kept):
            inv.duplicate = True
        else:
            kept.append(inv)


def _attribute_unnamed(postings: dict[str, Posting], payments: list[Payment], invoices: dict[str, Invoice]) -> None:
    """A posting or payment that names no invoice belongs to the contract's one live invoice, if one."""
    live = [i for i in invoices.values() if i.live and not i.duplicate]
    if len(live) != 1:
        return
    only = live[0].id
    for p in postings.values():
        if p.invoice_ref is None:
            p.invoice_ref = only
    for pay in payments:
        if pay.invoice_ref is None:
            pay.invoice_ref = only
