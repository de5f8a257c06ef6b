"""The demo landscape simulator (probes/): schema, determinism, faults against an independent reading of
DESIGN.md's reconciliation rules, delivery noise, streaming, and the live feed against a loopback server."""
from __future__ import annotations

import asyncio
import calendar
import gc
import io
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web

from collector import conventions as c
from probes.batch_sender import retry_after_seconds
from probes.config import LandscapeConfig
from probes.feed import FeedConfig, live_landscape, run_feed
from probes.landscape import build_contract, iter_contracts, run_landscape
from probes.simulate import simulate
from probes.truth import ExpectedMismatch

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SYSTEMS = {"crm": {"salesforce", "servicenow"}, "billing": {"stripe", "zuora", "aria"},
           "erp": {"netsuite", "sap", "dynamics"}, "payment": {"stripe", "adyen"}}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
DECIMAL = re.compile(r"-?\d+\.\d{2}")
Key = tuple[str, str | None, Decimal, str, str, bool]


def config(**kw: Any) -> LandscapeConfig:
    return LandscapeConfig(now=NOW, **kw)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def money(e: dict[str, Any], key: str = "amount") -> Decimal:
    return Decimal(e[key])


def add_months(t: datetime, n: int) -> datetime:
    y, m = divmod(t.month - 1 + n, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def originals(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events without their replays."""
    return list({(e["source"], e["event_id"]): e for e in events}.values())


def keys(truth: Iterable[ExpectedMismatch]) -> Counter[Key]:
    return Counter((m.kind, m.contract_id, m.amount_at_risk, m.currency, m.subject, m.leakage) for m in truth)


# ---------------------------------------------------------------- an independent reading of DESIGN.md
def reconcile(events: list[dict[str, Any]], now: datetime) -> Counter[Key]:
    """What revtrace must report for these deliveries, by DESIGN.md and docs/reconciliation.md, for the
    document shapes the simulator writes."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        unique.setdefault((e["source"], e["event_id"]), e)
    ordered = sorted(unique.values(), key=lambda e: ts(e["occurred_at"]))
    owner = {e["refs"]["invoice_id"]: e["contract_id"] for e in ordered if e["type"] == c.INVOICE_ISSUED}
    found: Counter[Key] = Counter()
    per_contract: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in ordered:
        cid = e.get("contract_id") or owner.get(e["refs"].get("invoice_id", ""))
        if cid is not None:
            per_contract[cid].append(e)
        elif now > ts(e["occurred_at"]) + HOUR:
            kind, doc = ((c.ORPHAN_POSTING, "posting_id") if e["type"] == c.POSTING_CREATED
                         else (c.ORPHAN_PAYMENT, "payment_id"))
            found[(kind, None, money(e), e["currency"], e["refs"][doc], False)] += 1
    for cid, evs in per_contract.items():
        _reconcile_contract(cid, evs, now, found)
    return found


def _reconcile_contract(cid: str, evs: list[dict[str, Any]], now: datetime, found: Counter[Key]) -> None:
    def add(kind: str, amount: Decimal, currency: str, subject: str, leak: bool = False) -> None:
        found[(kind, cid, amount, currency, subject, leak)] += 1

    order = next(e for e in evs if e["type"] == c.ORDER_BOOKED)
    cur, ordered, cancelled = order["currency"], money(order), False
    invoices: dict[str, dict[str, Any]] = {}
    postings: dict[str, dict[str, Any]] = {}
    payments: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in evs:
        t, refs, at = e["type"], e["refs"], ts(e["occurred_at"])
        if t == c.ORDER_AMENDED:
            ordered = money(e)
        elif t == c.ORDER_CANCELLED:
            cancelled = True
        elif t == c.INVOICE_ISSUED:
            invoices[refs["invoice_id"]] = {"at": at, "amount": money(e), "tax": money(e, "tax_amount"),
                                            "currency": e["currency"], "entity": e["entity"],
                                            "due": ts(e["due_at"]), "credits": Decimal(0), "ended": None}
        elif t == c.INVOICE_VOIDED:
            invoices[refs["invoice_id"]]["ended"] = at
        elif t == c.INVOICE_CREDITED:
            inv = invoices[refs["invoice_id"]]
            inv["credits"] += money(e)
            if inv["credits"] >= inv["amount"]:
                inv["ended"] = at
        elif t == c.POSTING_CREATED:
            postings[refs["posting_id"]] = {"at": at, "id": refs["posting_id"], "invoice": refs["invoice_id"],
                                            "amount": money(e), "tax": money(e, "tax_amount"),
                                            "currency": e["currency"], "entity": e["entity"], "reversed": False}
        elif t == c.POSTING_REVERSED:
            postings[refs["posting_id"]]["reversed"] = True
        elif t == c.PAYMENT_SUCCEEDED:
            payments[refs["invoice_id"]].append(e)

    kept: list[tuple[str, dict[str, Any]]] = []
    for iid, inv in sorted(invoices.items(), key=lambda kv: (kv[1]["at"], kv[0])):
        live_posts = sorted((p for p in postings.values() if p["invoice"] == iid and not p["reversed"]),
                            key=lambda p: (p["at"], p["id"]))
        if inv["ended"] is not None:
            for p in live_posts:
                if now > inv["ended"] + HOUR:
                    add(c.UNREVERSED_POSTING, p["amount"], p["currency"], p["id"])
            continue
        if any(k["amount"] == inv["amount"] and k["currency"] == inv["currency"]
               and inv["at"] - k["at"] <= DAY for _, k in kept):
            add(c.DUPLICATE_INVOICE, inv["amount"], inv["currency"], iid)
            continue
        kept.append((iid, inv))
        amount, foreign = inv["amount"] - inv["credits"], inv["currency"] != cur
        if foreign:
            add(c.CURRENCY_MISMATCH, inv["amount"], inv["currency"], iid)
        for p in live_posts[1:]:
            add(c.DUPLICATE_POSTING, p["amount"], p["currency"], p["id"])
        if not live_posts and now > inv["at"] + HOUR:
            add(c.MISSING_POSTING, amount, inv["currency"], iid)
        if live_posts:
            p = live_posts[0]
            if p["entity"] != inv["entity"]:
                add(c.ENTITY_MISMATCH, amount, inv["currency"], p["id"])
            if p["currency"] != cur:
                add(c.CURRENCY_MISMATCH, p["amount"], p["currency"], p["id"])
            elif not foreign:
                if p["amount"] != amount:
                    add(c.AMOUNT_MISMATCH, abs(p["amount"] - amount), cur, p["id"])
                if p["tax"] != inv["tax"]:
                    add(c.TAX_MISMATCH, abs(p["tax"] - inv["tax"]), cur, p["id"])
        paid = Decimal(0)
        for pay in payments[iid]:
            if pay["currency"] != cur:
                add(c.CURRENCY_MISMATCH, money(pay), pay["currency"], pay["refs"]["payment_id"])
            else:
                paid += money(pay)
        total = amount + inv["tax"]
        if not foreign and paid > total:
            add(c.AMOUNT_MISMATCH, paid - total, cur, iid)
        if not foreign and paid < total and now > inv["due"] + DAY:
            add(c.UNPAID_OVERDUE, total - paid, cur, iid)

    order_at, order_id = ts(order["occurred_at"]), order["refs"]["order_id"]
    billed = sum((inv["amount"] - inv["credits"] for _, inv in kept if inv["currency"] == cur), Decimal(0))
    billing = (order.get("attributes") or {}).get("billing")
    ordered = Decimal(0) if cancelled else ordered
    if billing:
        starts = [add_months(order_at, k) for k in range(billing["count"])]
        started = sum(s <= now for s in starts)
        past = [k for k in range(started) if now > starts[k] + DAY]
        for k in past[len(kept):]:
            add(c.MISSING_INVOICE, ordered, cur, f"{cid}#{k}", True)
        due_total, billed_intervals = ordered * started, ordered * min(len(kept), len(past))
    else:
        if not kept and not cancelled and now > order_at + DAY:
            add(c.MISSING_INVOICE, ordered, cur, order_id, True)
        due_total = billed_intervals = ordered
    if any(inv["currency"] == cur for _, inv in kept):
        if billed > due_total:
            add(c.AMOUNT_MISMATCH, billed - due_total, cur, order_id)
        elif billed < billed_intervals and now > order_at + DAY:
            add(c.AMOUNT_MISMATCH, billed_intervals - billed, cur, order_id, True)


# ---------------------------------------------------------------- schema and determinism
def check_event(e: dict[str, Any]) -> None:
    assert isinstance(e["event_id"], str) and e["event_id"]
    assert e["type"] in c.EVENT_TYPES
    assert e["system"] in SYSTEMS[e["source"]]
    assert RFC3339.fullmatch(e["occurred_at"]) and ts(e["occurred_at"]).utcoffset() is not None
    if "due_at" in e:
        assert RFC3339.fullmatch(e["due_at"])
    assert set(e["refs"]) <= set(c.REF_KEYS) and all(isinstance(v, str) for v in e["refs"].values())
    for key in ("amount", "tax_amount"):
        if key in e:
            assert DECIMAL.fullmatch(e[key]) and Decimal(e[key]) >= 0, e
            assert re.fullmatch(r"[A-Z]{3}", e["currency"])
    assert "contract_id" in e or e["refs"].get("invoice_id"), e
    if e["type"] == c.INVOICE_ISSUED:
        assert {"amount", "tax_amount", "currency", "entity", "due_at"} <= set(e)


def test_every_event_follows_the_schema() -> None:
    land = run_landscape(config(seed=5, contracts=800, fault_rate=0.3, orphan_rate=0.05, duplicate_rate=0.05))
    assert len(land.events) > 3000
    for e in land.events:
        check_event(e)
    assert any(e["occurred_at"].endswith(("+01:00", "-05:00")) for e in land.events)


def test_same_seed_same_bytes_and_contracts_do_not_depend_on_their_neighbours() -> None:
    def bytes_of(cfg: LandscapeConfig) -> tuple[bytes, bytes]:
        events, truth = io.BytesIO(), io.BytesIO()
        simulate(cfg, events, truth)
        return events.getvalue(), truth.getvalue()

    cfg = config(seed=11, contracts=400, fault_rate=0.3)
    first = bytes_of(cfg)
    assert first == bytes_of(cfg)
    assert first[0] != bytes_of(config(seed=12, contracts=400, fault_rate=0.3))[0]
    lines = first[0].splitlines()
    assert len(lines) == orjson.loads(first[1])["events"]
    alone = build_contract(cfg, 250)
    streamed = next(r for r in iter_contracts(cfg) if r.contract_id == alone.contract_id)
    assert streamed.events == alone.events and streamed.expected == alone.expected


# ---------------------------------------------------------------- faults and their ground truth
VARIANTS = {
    c.MISSING_INVOICE: {"one_time", "recurring_gap"},
    c.AMOUNT_MISMATCH: {"over_billed", "under_billed", "posting_differs", "overpaid"},
    c.UNPAID_OVERDUE: {"partly_paid", "not_paid"},
    c.UNREVERSED_POSTING: {"voided", "credited_in_full"},
}


@pytest.mark.parametrize("kind", c.MISMATCH_KINDS)
def test_each_fault_kind_yields_exactly_its_ground_truth(kind: str) -> None:
    orphan = kind in (c.ORPHAN_PAYMENT, c.ORPHAN_POSTING)
    cfg = config(seed=3, contracts=60, fault_kinds=(kind,), fault_rate=1.0, orphan_rate=1.0 if orphan else 0.0)
    land = run_landscape(cfg)
    faulty = [r for r in land.runs if r.fault is not None]
    assert faulty and all(r.fault == kind for r in faulty)
    assert len(faulty) == 60 and land.fault_counts[kind] == 60
    per_run = 3 if kind == c.CURRENCY_MISMATCH else 1
    for r in land.runs:
        assert len(r.expected) == (per_run if r.fault else 0)
        assert all(m.kind == kind and m.contract_id == r.contract_id for m in r.expected)
        assert all(m.amount_at_risk > 0 and m.amount_at_risk == m.amount_at_risk.quantize(Decimal("0.01"))
                   for m in r.expected)
    assert {r.variant for r in faulty} >= VARIANTS.get(kind, set())
    assert reconcile(land.events, NOW) == keys(land.truth)


def test_fault_details_follow_the_spec() -> None:
    land = run_landscape(config(seed=8, contracts=500, fault_rate=1.0))
    for r in land.runs:
        evs = {e["type"]: e for e in sorted(r.events, key=lambda e: ts(e["occurred_at"]))}
        if r.variant == "under_billed":
            (m,) = r.expected
            assert m.leakage and money(evs[c.ORDER_BOOKED]) - money(evs[c.INVOICE_ISSUED]) == m.amount_at_risk
        elif r.fault == c.CURRENCY_MISMATCH:
            currencies = {m.currency for m in r.expected}
            assert len(currencies) == 1
            assert currencies != {evs[c.ORDER_BOOKED]["currency"]}
            assert not any(m.leakage for m in r.expected)
        elif r.fault == c.DUPLICATE_INVOICE:
            issued = sorted({ts(e["occurred_at"]) for e in r.events if e["type"] == c.INVOICE_ISSUED})
            assert timedelta(minutes=5) <= issued[1] - issued[0] <= timedelta(hours=20)
        elif r.fault == c.UNREVERSED_POSTING:
            issued = sorted({ts(e["occurred_at"]) for e in r.events if e["type"] == c.INVOICE_ISSUED})
            ended = next(ts(e["occurred_at"]) for e in r.events
                         if e["type"] in (c.INVOICE_VOIDED, c.INVOICE_CREDITED))
            assert issued[1] - issued[0] > DAY and issued[1] > ended and ended < NOW - DAY
            assert not any(e["type"] == c.POSTING_REVERSED for e in r.events)
    leakage: dict[str, Decimal] = defaultdict(Decimal)
    for r in land.runs:
        if r.fault == c.MISSING_INVOICE or r.variant == "under_billed":
            (m,) = r.expected
            leakage[m.currency] += m.amount_at_risk
    assert land.leakage == leakage and len(leakage) == 3


def test_a_mixed_landscape_matches_its_ground_truth_exactly() -> None:
    cfg = config(seed=21, contracts=3000, fault_rate=0.2, orphan_rate=0.02, duplicate_rate=0.05,
                 out_of_order_rate=0.2, refs_only_rate=0.5)
    land = run_landscape(cfg)
    # The truth must not depend on exactly when revtrace evaluates near `now`.
    for at in (NOW - 23 * HOUR, NOW, NOW + 23 * HOUR):
        assert reconcile(land.events, at) == keys(land.truth)
    assert set(land.fault_counts) == set(c.MISMATCH_KINDS)
    assert {"plain", "recurring", "failed_retry", "cancelled", "void_reissue", "amend_credit"} <= {
        r.variant for r in land.runs if r.fault is None}


def test_clean_contracts_are_self_consistent() -> None:
    land = run_landscape(config(seed=4, contracts=600, fault_rate=0.0, orphan_rate=0.0))
    assert not land.truth and not land.leakage
    rates = {"US01": {"0", "0.04", "0.0625", "0.0725", "0.08875"}, "DE01": {"0.19"}, "FR01": {"0.20"},
             "GB01": {"0.20"}}
    plain = [r for r in land.runs if r.variant in ("plain", "failed_retry")]
    assert len(plain) > 300
    for r in plain:
        by = {e["type"]: e for e in r.events}
        order, inv, post, pay = (by[t] for t in (c.ORDER_BOOKED, c.INVOICE_ISSUED, c.POSTING_CREATED,
                                                 c.PAYMENT_SUCCEEDED))
        assert (money(inv), inv["currency"], inv["entity"]) == (money(order), order["currency"], order["entity"])
        assert any(money(inv, "tax_amount") == (money(inv) * Decimal(rate)).quantize(Decimal("0.01"), ROUND_HALF_UP)
                   for rate in rates[inv["entity"]])
        assert (money(post), money(post, "tax_amount"), post["currency"], post["entity"]) == (
            money(inv), money(inv, "tax_amount"), inv["currency"], inv["entity"])
        assert money(pay) == money(inv) + money(inv, "tax_amount")
        issued = ts(inv["occurred_at"])
        assert ts(inv["due_at"]) - issued in (timedelta(days=14), timedelta(days=30))
        assert timedelta(0) < issued - ts(order["occurred_at"]) < timedelta(hours=20, seconds=1)
        lag = ts(post["occurred_at"]) - issued
        assert lag <= timedelta(minutes=40) or HOUR * 2 <= lag <= HOUR * 6
        assert issued < ts(pay["occurred_at"]) <= ts(inv["due_at"])
    recurring = [r for r in land.runs if r.variant == "recurring"]
    assert recurring
    for r in recurring:
        order = next(e for e in r.events if e["type"] == c.ORDER_BOOKED)
        started = sum(add_months(ts(order["occurred_at"]), k) < NOW
                      for k in range(order["attributes"]["billing"]["count"]))
        assert sum(e["type"] == c.INVOICE_ISSUED for e in originals(r.events)) == started
        assert all(money(e) == money(order) for e in r.events if e["type"] == c.INVOICE_ISSUED)


# ---------------------------------------------------------------- delivery noise
def test_delivery_noise_keeps_identity() -> None:
    land = run_landscape(config(seed=9, contracts=500, duplicate_rate=0.1, out_of_order_rate=0.3,
                                refs_only_rate=0.5))
    seen: dict[str, dict[str, Any]] = {}
    replays = 0
    for e in land.events:
        if e["event_id"] in seen:
            replays += 1
            assert e == seen[e["event_id"]] and e["source"] == seen[e["event_id"]]["source"]
            assert e is not seen[e["event_id"]]
        seen[e["event_id"]] = e
    assert replays > 100
    invoices = {e["refs"]["invoice_id"]: e["contract_id"] for e in land.events if e["type"] == c.INVOICE_ISSUED}
    refs_only = [e for e in land.events if "contract_id" not in e]
    assert len(refs_only) > 300
    assert all(e["type"] in (c.POSTING_CREATED, c.PAYMENT_SUCCEEDED, c.PAYMENT_FAILED) for e in refs_only)
    assert sum(e["refs"]["invoice_id"] not in invoices for e in refs_only) == land.orphans
    shuffled = [r for r in land.runs if [ts(e["occurred_at"]) for e in r.events]
                != sorted(ts(e["occurred_at"]) for e in r.events)]
    assert len(shuffled) > 50


def test_no_deadline_within_a_day_of_now() -> None:
    land = run_landscape(config(seed=13, contracts=3000, fault_rate=0.3, orphan_rate=0.02))
    invoices = {e["refs"]["invoice_id"] for e in land.events if e["type"] == c.INVOICE_ISSUED}
    deadlines: list[datetime] = []
    for e in land.events:
        at = ts(e["occurred_at"])
        assert at <= NOW - DAY
        t = e["type"]
        if t == c.ORDER_BOOKED and "attributes" in e:
            for k in range(e["attributes"]["billing"]["count"]):
                start = add_months(at, k)
                assert not NOW - 3 * DAY <= start <= NOW + DAY
                deadlines.append(start + DAY)
        elif t == c.ORDER_BOOKED:
            deadlines.append(at + DAY)
        elif t == c.INVOICE_ISSUED:
            deadlines += [at + HOUR, ts(e["due_at"]) + DAY]
        elif t in (c.INVOICE_VOIDED, c.INVOICE_CREDITED) or e["refs"].get("invoice_id") not in invoices:
            deadlines.append(at + HOUR)  # posting window after a void or credit; an orphan's grace
    assert len(deadlines) > 10000
    assert all(abs(d - NOW) > DAY for d in deadlines)


def test_streaming_does_not_accumulate_contracts() -> None:
    stream = iter_contracts(config(seed=2, contracts=1_000_000))
    assert isinstance(stream, Iterator)
    n = events = 0
    baseline = 0
    for run in stream:
        n += run.contract_id is not None
        events += len(run.deliveries)
        if n == 1_000:
            gc.collect()
            baseline = len(gc.get_objects())
        if n == 20_000:
            break
    gc.collect()
    assert events > 80_000
    # Kept, the 19,000 contracts in between would leave well over 100,000 tracked objects behind.
    assert len(gc.get_objects()) - baseline < 5_000


# ---------------------------------------------------------------- the live feed
class FastClock:
    """Wall-clock time running `speed` times faster, so a compressed lifecycle passes in a blink."""

    def __init__(self, start: datetime, speed: float) -> None:
        self._start, self._speed, self._t0 = start, speed, time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self._speed)


def recording_app(answers: list[int]) -> tuple[web.Application, list[tuple[int, list[dict[str, Any]]]]]:
    """An ingest endpoint answering with `answers` in turn (then 200), recording every request."""
    seen: list[tuple[int, list[dict[str, Any]]]] = []

    async def ingest(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        batch = orjson.loads(await request.read())
        status = answers.pop(0) if answers else 200
        seen.append((status, batch))
        if status != 200:
            return web.Response(status=status, headers={"Retry-After": "0"})
        return web.json_response({"accepted": len(batch), "duplicates": 0, "rejected": []})

    app = web.Application()
    app.router.add_post("/api/v1/events", ingest)
    return app, seen


@pytest.mark.asyncio
async def test_feed_retries_a_refused_batch_and_sends_every_event_once(aiohttp_server: Any) -> None:
    app, seen = recording_app([503])
    server = await aiohttp_server(app)
    start = datetime(2026, 11, 20, 10, 0, 0, 250_000, tzinfo=UTC)
    history = LandscapeConfig(now=start, seed=3, contracts=40, history=(timedelta(days=30), 4 * DAY),
                              fault_rate=0.3, duplicate_rate=0.0, orphan_rate=0.0, out_of_order_rate=0.3)
    feed = FeedConfig(base_url=str(server.make_url("/")), token="tok", rate=2.0, time_scale=86_400.0,
                      batch_size=25, flush_interval=0.02, tick=0.005, retry_initial=0.01,
                      max_live_contracts=10)
    stats = await asyncio.wait_for(run_feed(feed, clock=FastClock(start, 400.0), landscape=history), 30)

    assert seen[0][0] == 503 and seen[1] == (200, seen[0][1])
    received = [e for status, batch in seen if status == 200 for e in batch]
    ids = [(e["source"], e["event_id"]) for e in received]
    assert len(ids) == len(set(ids)) == stats.events_sent == stats.accepted
    assert stats.retries == 1 and stats.live == 10 and stats.backfilled == 40

    expected = {(d.event["source"], d.event["event_id"]) for r in iter_contracts(history, keep_future=True)
                for d in r.deliveries if d.at <= start}
    live = live_landscape(history, feed.time_scale)
    booked = [e for e in received if e["type"] == c.ORDER_BOOKED
              and int(e["contract_id"].rsplit("-", 1)[1]) >= live.first_index]
    assert len(booked) == 10
    for order in booked:
        run = build_contract(live, int(order["contract_id"].rsplit("-", 1)[1]), live_at=ts(order["occurred_at"]))
        expected |= {(e["source"], e["event_id"]) for e in run.events}
    assert set(ids) == expected


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("7", NOW) == 7.0
    assert retry_after_seconds("Fri, 20 Nov 2026 10:00:30 GMT", NOW) == 30.0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds(None, NOW) is None


@pytest.mark.asyncio
async def test_feed_stops_while_the_server_keeps_failing(aiohttp_server: Any) -> None:
    app, seen = recording_app([503] * 1000)
    server = await aiohttp_server(app)
    stop = asyncio.Event()
    feed = FeedConfig(base_url=str(server.make_url("/")), token="tok", backfill_contracts=5, retry_initial=0.01,
                      retry_max=0.02)
    task = asyncio.create_task(run_feed(feed, stop=stop))
    while len(seen) < 3:
        await asyncio.sleep(0.01)
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert stats.events_sent == 0 and stats.retries >= 3
    assert all(batch == seen[0][1] for _, batch in seen)

    task = asyncio.create_task(run_feed(feed))
    while len(seen) < 6:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
