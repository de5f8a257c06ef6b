"""The synthetic event stream of the crash harness: contracts, clean or with one fault each, whose events come
out of order and across batches, the same for the same seed and `now`."""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

CURRENCIES = {"USD": "US01", "EUR": "DE01", "GBP": "GB01"}
# Each contract is clean or carries one fault; the faults are chosen so that the open mismatches of the run
# cover most kinds and the comparison with the reference run means something.
FAULTS = (("clean", 70), ("missing_invoice", 5), ("over_billed", 5), ("missing_posting", 4), ("unpaid", 5),
          ("tax", 3), ("duplicate_invoice", 3), ("void_reissue", 3), ("void_unreversed", 2))


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _contract(rng: random.Random, n: int, now: datetime) -> list[dict[str, Any]]:
    """The events of one contract, every time 10-40 days ago so that every window has passed in both runs,
    and no two at the same instant, so that the trace's event order does not depend on arrival order."""
    cid, cur = f"K{n:07d}", rng.choice(sorted(CURRENCIES))
    ent = CURRENCIES[cur]
    fault = rng.choices([f for f, _ in FAULTS], weights=[w for _, w in FAULTS])[0]
    t0 = now - timedelta(seconds=rng.randrange(10 * 86_400, 40 * 86_400))
    cents = rng.randrange(10_000, 2_000_000)
    evs: list[dict[str, Any]] = []

    def add(eid: str, source: str, type_: str, at: datetime, refs: dict[str, str], named: bool = True,
            **fields: Any) -> None:
        ev: dict[str, Any] = {"event_id": f"{cid}-{eid}", "source": source, "type": type_,
                              "occurred_at": _iso(at), "refs": refs, "system": source + "-sim", **fields}
        if named:
            ev["contract_id"] = cid
        evs.append(ev)

    add("o", "crm", "order.booked", t0, {"order_id": f"O-{n}"}, amount=_money(cents), currency=cur, entity=ent)
    if rng.random() < 0.01:  # a payment for an invoice that never comes: an orphan with no contract
        add("orphan", "payment", "payment.succeeded", t0 + timedelta(days=5), {"invoice_id": f"I-{n}-lost"},
            named=False, amount=_money(cents), currency=cur)
    if fault == "missing_invoice":
        return evs
    t1 = t0 + timedelta(seconds=rng.randrange(3600, 20 * 3600))
    billed = cents + (rng.randrange(100, 50_000) if fault == "over_billed" else 0)
    tax = billed // 5

    def invoice(suffix: str, at: datetime) -> str:
        iid = f"I-{n}{suffix}"
        add(f"i{suffix}", "billing", "invoice.issued", at, {"order_id": f"O-{n}", "invoice_id": iid},
            amount=_money(billed), tax_amount=_money(tax), currency=cur, entity=ent,
            due_at=_iso(at + timedelta(days=rng.randrange(2, 6))))
        return iid

    def posting(suffix: str, iid: str, at: datetime, tax_cents: int) -> str:
        pid = f"P-{n}{suffix}"
        add(f"p{suffix}", "erp", "posting.created", at, {"invoice_id": iid, "posting_id": pid},
            amount=_money(billed), tax_amount=_money(tax_cents), currency=cur, entity=ent)
        return pid

    iid = invoice("", t1)
    if fault in ("void_reissue", "void_unreversed"):
        pid = posting("", iid, t1 + timedelta(minutes=10), tax)
        add("v", "billing", "invoice.voided", t1 + timedelta(hours=2), {"invoice_id": iid})
        if fault == "void_reissue":
            add("r", "erp", "posting.reversed", t1 + timedelta(hours=2, minutes=15), {"posting_id": pid})
        t1 += timedelta(hours=3)
        iid = invoice("b", t1)
    if fault == "duplicate_invoice":
        invoice("d", t1 + timedelta(seconds=rng.randrange(3600, 6 * 3600)))  # after the posting
    if fault != "missing_posting":
        posting("b" if fault.startswith("void") else "", iid, t1 + timedelta(seconds=rng.randrange(60, 3000)),
                tax + (rng.randrange(1, 500) if fault == "tax" else 0))
    if fault != "unpaid":
        # Some payments name only their invoice, as DESIGN.md allows; they join the invoice's contract.
        named = rng.random() < 0.6
        refs = {"invoice_id": iid, "payment_id": f"Y-{n}"} if named else {"invoice_id": iid}
        add("y", "payment", "payment.succeeded", t1 + timedelta(seconds=rng.randrange(86_400, 3 * 86_400)),
            refs, named=named, amount=_money(billed + tax), currency=cur)
    return evs


@dataclass(frozen=True)
class Stream:
    batches: list[list[dict[str, Any]]]
    bodies: list[bytes]
    contracts: list[str]

    @property
    def events(self) -> int:
        return sum(len(b) for b in self.batches)


def build_stream(events: int, seed: int, batch_size: int, now: datetime) -> Stream:
    """The same events for the same seed and `now`: contracts in turn, then each event moved by up to about
    two batches, so that a contract's events arrive out of order and in different batches (payments before
    their invoice too)."""
    rng = random.Random(seed)
    flat: list[dict[str, Any]] = []
    contracts: list[str] = []
    n = 0
    while len(flat) < events:
        evs = _contract(rng, n, now)
        contracts.append(evs[0]["contract_id"])
        flat.extend(evs)
        n += 1
    spread = 2 * batch_size
    placed = sorted((i + rng.uniform(0, spread), i) for i in range(len(flat)))
    flat = [flat[i] for _, i in placed]
    batches = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
    return Stream(batches, [orjson.dumps(b) for b in batches], contracts)
