"""A contract's trace summary: the stages it reached, with when and how much, and the lag of every hop."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from collector import conventions as c
from collector.documents import Documents


# Slotted, not frozen: a pass builds several per contract, and a frozen dataclass sets each field through
# object.__setattr__, which costs three times as much.
@dataclass(slots=True)
class Stage:
    at: datetime
    amount: Decimal
    currency: str | None


@dataclass(slots=True)
class Summary:
    stages: dict[str, Stage | None]
    lags: dict[str, float | None]
    currency: str | None
    entity: str | None

    @property
    def stage(self) -> str:
        """The furthest stage reached; every contract counts at least as ordered."""
        reached = [s for s in c.STAGES if self.stages.get(s) is not None]
        return reached[-1] if reached else c.STAGES[0]

    def amount(self, stage: str) -> Decimal:
        st = self.stages.get(stage)
        return st.amount if st is not None else Decimal(0)


def summarize(docs: Documents) -> Summary:
    # Plain loops rather than min()/sum() over generators: this runs for every contract of every pass.
    currency = docs.currency
    ordered = invoiced = posted = paid = None
    order = docs.order
    if order is not None:
        ordered = Stage(order.at, Decimal(0) if order.cancelled else order.amount * order.intervals, order.currency)
    invoices = docs.live_invoices()
    entity = order.entity if order is not None and order.entity else None
    if invoices:
        first, total = invoices[0].at, Decimal(0)
        for i in invoices:
            if i.at < first:
                first = i.at
            if currency is None or i.currency is None or i.currency == currency:
                total += i.net
            if entity is None and i.entity:
                entity = i.entity
        invoiced = Stage(first, total, currency)
        live_ids = {i.id for i in invoices}
        first_p: datetime | None = None
        total = Decimal(0)
        for p in docs.postings.values():
            if p.reversed or p.invoice_ref not in live_ids:
                continue
            if first_p is None or p.at < first_p:
                first_p = p.at
            if currency is None or p.currency is None or p.currency == currency:
                total += p.amount
        if first_p is not None:
            posted = Stage(first_p, total, currency)
    first_pay: datetime | None = None
    total = Decimal(0)
    for pay in docs.payments:
        kind = pay.kind
        if kind == c.PAYMENT_SUCCEEDED and (first_pay is None or pay.at < first_pay):
            first_pay = pay.at
        if kind != c.PAYMENT_FAILED and (currency is None or pay.currency is None or pay.currency == currency):
            total = total + pay.amount if kind == c.PAYMENT_SUCCEEDED else total - pay.amount
    if first_pay is not None:
        paid = Stage(first_pay, total, currency)
    stages = {c.STAGES[0]: ordered, c.STAGES[1]: invoiced, c.STAGES[2]: posted, c.STAGES[3]: paid}
    lags = {c.HOPS[0]: _lag(ordered, invoiced), c.HOPS[1]: _lag(invoiced, posted), c.HOPS[2]: _lag(invoiced, paid)}
    return Summary(stages, lags, currency, entity)


def _lag(a: Stage | None, b: Stage | None) -> float | None:
    return None if a is None or b is None else (b.at - a.at).total_seconds()
