"""A contract's trace summary: the stages it reached, with when and how much, and the lag of every hop."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from collector import conventions as c
from collector.documents import Documents


@dataclass(frozen=True)
class Stage:
    at: datetime
    amount: Decimal
    currency: str | None


@dataclass(frozen=True)
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
    currency = docs.currency

    def domestic(cur: str | None) -> bool:
        return currency is None or cur is None or cur == currency

    stages: dict[str, Stage | None] = dict.fromkeys(c.STAGES)
    order = docs.order
    if order is not None:
        stages["ordered"] = Stage(order.at, Decimal(0) if order.cancelled else order.amount * order.intervals,
                                  order.currency)
    invoices = docs.live_invoices()
    if invoices:
        stages["invoiced"] = Stage(min(i.at for i in invoices),
                                   sum((i.net for i in invoices if domestic(i.currency)), Decimal(0)), currency)
    live_ids = {i.id for i in invoices}
    postings = [p for p in docs.postings.values() if not p.reversed and p.invoice_ref in live_ids]
    if postings:
        stages["posted"] = Stage(min(p.at for p in postings),
                                 sum((p.amount for p in postings if domestic(p.currency)), Decimal(0)), currency)
    succeeded = [p for p in docs.payments if p.kind == c.PAYMENT_SUCCEEDED]
    if succeeded:
        paid = sum((p.amount if p.kind == c.PAYMENT_SUCCEEDED else -p.amount for p in docs.payments
                    if p.kind != c.PAYMENT_FAILED and domestic(p.currency)), Decimal(0))
        stages["paid"] = Stage(min(p.at for p in succeeded), paid, currency)
    lags = {
        c.HOPS[0]: _lag(stages["ordered"], stages["invoiced"]),
        c.HOPS[1]: _lag(stages["invoiced"], stages["posted"]),
        c.HOPS[2]: _lag(stages["invoiced"], stages["paid"]),
    }
    entity = order.entity if order is not None and order.entity else next(
        (i.entity for i in invoices if i.entity), None)
    return Summary(stages, lags, currency, entity)


def _lag(a: Stage | None, b: Stage | None) -> float | None:
    return None if a is None or b is None else (b.at - a.at).total_seconds()
