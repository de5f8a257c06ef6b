"""One contract's documents, written down as canonical events in the order they happen.

A `Draft` owns the contract's ids, its entity and systems, the events and the mismatches it is expected
to produce. Amounts are whole cents inside; events carry them as decimal strings.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from collector import conventions as c
from probes.config import Entity, LandscapeConfig
from probes.timeline import Timeline, rfc3339
from probes.truth import ExpectedMismatch, money

Event = dict[str, Any]


def cents_text(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    at: datetime
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    at: datetime
    amount: int
    tax: int
    currency: str
    due_at: datetime

    @property
    def total(self) -> int:
        return self.amount + self.tax


@dataclass(frozen=True, slots=True)
class Posting:
    id: str
    at: datetime
    amount: int
    tax: int
    currency: str


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    at: datetime
    amount: int
    currency: str


class Draft:
    def __init__(self, config: LandscapeConfig, index: int, rng: random.Random, time: Timeline, *,
                 orphan: bool = False) -> None:
        self.config = config
        self.rng = rng
        self.time = time
        self.orphan = orphan
        base = f"{config.prefix}-{index}" + ("o" if orphan else "")
        self._base = base
        self.contract_id = None if orphan else f"C-{base}"
        self.entity: Entity = rng.choice(config.entities)
        self.rate: Decimal = rng.choice(self.entity.tax_rates)
        s = config.systems
        self._systems = {"crm": rng.choice(s.crm), "billing": rng.choice(s.billing), "erp": rng.choice(s.erp),
                         "payment": rng.choice(s.payment)}
        self._account = f"ACC-{config.prefix}-{rng.randint(1, config.accounts)}"
        self._local = timezone(timedelta(minutes=self.entity.utc_offset_minutes))
        self._events: list[tuple[datetime, int, Event]] = []
        self._serial: dict[str, int] = {}
        self.expected: list[ExpectedMismatch] = []

    # ---------------------------------------------------------------- reading the draft
    def timed_events(self) -> list[tuple[datetime, Event]]:
        return [(at, ev) for at, _, ev in sorted(self._events, key=lambda x: (x[0], x[1]))]

    def expect(self, kind: str, cents: int, currency: str, subject: str, note: str, *,
               leakage: bool = False) -> None:
        self.expected.append(ExpectedMismatch(kind, self.contract_id, money(cents), currency, subject, note,
                                              leakage))

    # ---------------------------------------------------------------- money
    def amount(self) -> int:
        lo, hi = (int(a * 100) for a in self.config.order_amounts)
        # Uniform within a random decade, so small deals are common and large ones still occur.
        bounds = [lo]
        while bounds[-1] * 10 < hi:
            bounds.append(bounds[-1] * 10)
        bounds.append(hi)
        k = self.rng.randrange(len(bounds) - 1)
        cents = self.rng.randint(bounds[k], bounds[k + 1])
        # Half the deals are quoted in whole units, as people price them.
        return cents - cents % 100 if self.rng.random() < 0.5 and cents >= 100 else cents

    def tax(self, cents: int) -> int:
        return int((Decimal(cents) * self.rate).quantize(Decimal(1), ROUND_HALF_UP))

    def delta(self, cents: int) -> int:
        """A difference of at most a fifth of `cents`, and at least a cent."""
        return self.rng.randint(1, max(1, cents // 5))

    # ---------------------------------------------------------------- documents
    def order(self, at: datetime, amount: int, *, intervals: int | None = None) -> Order:
        order = Order(f"SO-{self._base}", at, amount, self.entity.currency)
        attributes = {"billing": {"interval": "month", "count": intervals}} if intervals else None
        self._emit("crm", c.ORDER_BOOKED, at, {"order_id": order.id, "account_id": self._account},
                   amount=amount, currency=order.currency, entity=self.entity.code, attributes=attributes)
        if intervals is None:
            self.time.deadline(at + self.config.windows.invoice)
        return order

    def amend(self, at: datetime, order: Order, amount: int) -> Order:
        self._emit("crm", c.ORDER_AMENDED, at, {"order_id": order.id, "account_id": self._account},
                   amount=amount, currency=order.currency, entity=self.entity.code)
        return Order(order.id, order.at, amount, order.currency)

    def cancel(self, at: datetime, order: Order) -> None:
        self._emit("crm", c.ORDER_CANCELLED, at, {"order_id": order.id, "account_id": self._account})

    def invoice(self, at: datetime, order: Order | None, amount: int, *, currency: str | None = None,
                overdue: bool = False, exists: bool = True) -> Invoice:
        """An invoice; with `exists=False` only its id is drawn, for an orphan to name."""
        due_at = self.time.due_at(at, overdue=overdue) if exists else at
        inv = Invoice(self._id("INV"), at, amount, self.tax(amount), currency or self.entity.currency, due_at)
        if not exists:
            return inv
        refs = {"invoice_id": inv.id, "account_id": self._account}
        if order is not None:
            refs = {"order_id": order.id, **refs}
        self._emit("billing", c.INVOICE_ISSUED, at, refs, amount=amount, tax=inv.tax, currency=inv.currency,
                   entity=self.entity.code, due_at=due_at)
        self.time.deadline(at + self.config.windows.posting)
        self.time.deadline(due_at + self.config.windows.overdue)
        return inv

    def void(self, at: datetime, inv: Invoice) -> None:
        self._emit("billing", c.INVOICE_VOIDED, at, {"invoice_id": inv.id, "account_id": self._account})
        self.time.deadline(at + self.config.windows.posting)

    def credit(self, at: datetime, inv: Invoice, amount: int) -> None:
        self._emit("billing", c.INVOICE_CREDITED, at, {"invoice_id": inv.id, "account_id": self._account},
                   amount=amount, currency=inv.currency)
        if amount >= inv.amount:
            self.time.deadline(at + self.config.windows.posting)

    def posting(self, at: datetime, inv: Invoice, *, amount: int | None = None, tax: int | None = None,
                entity: str | None = None) -> Posting:
        post = Posting(self._id("JE"), at, inv.amount if amount is None else amount,
                       inv.tax if tax is None else tax, inv.currency)
        self._emit("erp", c.POSTING_CREATED, at, {"invoice_id": inv.id, "posting_id": post.id},
                   amount=post.amount, tax=post.tax, currency=post.currency, entity=entity or self.entity.code)
        if self.orphan:
            self.time.deadline(at + self.config.windows.orphan_grace)
        return post

    def reverse(self, at: datetime, post: Posting, inv: Invoice) -> None:
        self._emit("erp", c.POSTING_REVERSED, at, {"invoice_id": inv.id, "posting_id": post.id},
                   amount=post.amount, currency=post.currency, entity=self.entity.code)

    def payment(self, at: datetime, inv: Invoice, amount: int, *, failed: bool = False) -> Payment:
        pay = Payment(self._id("PAY"), at, amount, inv.currency)
        attributes = {"failure_code": "card_declined"} if failed else None
        self._emit("payment", c.PAYMENT_FAILED if failed else c.PAYMENT_SUCCEEDED, at,
                   {"invoice_id": inv.id, "payment_id": pay.id, "account_id": self._account},
                   amount=amount, currency=pay.currency, attributes=attributes)
        if self.orphan:
            self.time.deadline(at + self.config.windows.orphan_grace)
        return pay

    # ---------------------------------------------------------------- plumbing
    def _id(self, kind: str) -> str:
        n = self._serial.get(kind, 0) + 1
        self._serial[kind] = n
        return f"{kind}-{self._base}-{n}"

    def _emit(self, source: str, type_: str, at: datetime, refs: dict[str, str], *, amount: int | None = None,
              tax: int | None = None, currency: str | None = None, entity: str | None = None,
              due_at: datetime | None = None, attributes: dict[str, Any] | None = None) -> None:
        seq = len(self._events)
        # ERP systems report local time; the others UTC.
        shown = at.astimezone(self._local) if source == "erp" else at
        ev: Event = {"event_id": f"E-{self._base}-{seq + 1}", "source": source, "type": type_,
                     "occurred_at": rfc3339(shown)}
        if self.contract_id is not None:
            ev["contract_id"] = self.contract_id
        ev["refs"] = refs
        if amount is not None:
            ev["amount"] = cents_text(amount)
        if tax is not None:
            ev["tax_amount"] = cents_text(tax)
        if currency is not None:
            ev["currency"] = currency
        if entity is not None:
            ev["entity"] = entity
        if due_at is not None:
            ev["due_at"] = rfc3339(due_at)
        ev["system"] = self._systems[source]
        if attributes:
            ev["attributes"] = attributes
        self._events.append((at, seq, ev))
