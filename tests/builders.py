"""Small builders for canonical events and a store driven by a fake clock."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from collector.db import make_engine, upgrade
from collector.evaluate import PassResult, Reconciler
from collector.ingest import EventStore, Stored
from collector.model import parse_event
from collector.policy import Policy
from collector.queries import Reads
from collector.schema import mismatches
from collector.timeutil import to_us

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(eid: str, type_: str, at: datetime, cid: str | None = "C1", **fields: Any) -> dict[str, Any]:
    source = {"order": "crm", "invoice": "billing", "posting": "erp", "payment": "payment"}[type_.split(".")[0]]
    e: dict[str, Any] = {"event_id": eid, "source": source, "type": type_, "occurred_at": iso(at)}
    if cid is not None:
        e["contract_id"] = cid
    if "amount" in fields and "currency" not in fields:
        e["currency"] = "USD"
    e.update(fields)
    return e


def order(cid: str = "C1", amount: str = "1000.00", at: datetime = T0, **kw: Any) -> dict[str, Any]:
    return event(f"{cid}-o", "order.booked", at, cid, amount=amount, entity="US01", refs={"order_id": f"{cid}-O"},
                 **kw)


def invoice(cid: str = "C1", n: int = 1, amount: str = "1000.00", tax: str = "80.00", at: datetime = T0 + H,
            **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"amount": amount, "tax_amount": tax, "entity": "US01",
                              "due_at": iso(at + timedelta(days=14)),
                              "refs": {"order_id": f"{cid}-O", "invoice_id": f"{cid}-I{n}"}}
    fields.update(kw)
    return event(f"{cid}-i{n}", "invoice.issued", at, cid, **fields)


def posting(cid: str = "C1", n: int = 1, inv: int = 1, amount: str = "1000.00", tax: str = "80.00",
            at: datetime = T0 + H + timedelta(minutes=10), **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"amount": amount, "tax_amount": tax, "entity": "US01",
                              "refs": {"invoice_id": f"{cid}-I{inv}", "posting_id": f"{cid}-P{n}"}}
    fields.update(kw)
    return event(f"{cid}-p{n}", "posting.created", at, cid, **fields)


def payment(cid: str | None = "C1", n: int = 1, inv: int = 1, amount: str = "1080.00", at: datetime = T0 + 3 * D,
            type_: str = "payment.succeeded", owner: str = "C1", **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"amount": amount, "refs": {"invoice_id": f"{owner if cid is None else cid}-I{inv}",
                                                         "payment_id": f"{owner if cid is None else cid}-Y{n}"}}
    fields.update(kw)
    return event(f"{owner if cid is None else cid}-y{n}-{type_.split('.')[1]}", type_, at, cid, **fields)


def clean(cid: str = "C1") -> list[dict[str, Any]]:
    return [order(cid), invoice(cid), posting(cid), payment(cid)]


@contextmanager
def world_on(url: str) -> Iterator[World]:
    """A World on a new, migrated store at this URL."""
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield World(engine)
    finally:
        engine.dispose()


@dataclass
class World:
    """A store with a clock the test moves."""
    engine: Engine
    now: datetime = T0 + 60 * D
    policy: Policy = field(default_factory=Policy)

    def clock_us(self) -> int:
        return to_us(self.now)

    def ingest(self, *evs: dict[str, Any]) -> Stored:
        return EventStore(self.engine, self.clock_us).store([parse_event(e) for e in evs])

    def evaluate(self, full: bool = False) -> PassResult:
        return Reconciler(self.engine, self.policy, self.clock_us).run(full)

    def open(self) -> list[tuple[str, str | None, str, str]]:
        """Open mismatches as sorted (kind, contract_id, amount_at_risk, currency)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(mismatches.c.kind, mismatches.c.contract_id, mismatches.c.amount_at_risk,
                                       mismatches.c.currency).where(mismatches.c.state == "open")).all()
        return sorted(tuple(r) for r in rows)  # type: ignore[misc]

    def closed(self) -> list[tuple[str, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(mismatches.c.kind, mismatches.c.contract_id)
                                .where(mismatches.c.state == "closed")).all()
        return sorted(tuple(r) for r in rows)  # type: ignore[misc]

    def reads(self) -> Reads:
        return Reads(self.engine, self.policy)
