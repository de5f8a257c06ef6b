"""The HTTP API from outside: tokens and scopes, per-event rejection, and bad input that changes nothing."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from collector.schema import events
from collector.timeutil import to_us
from revtrace.config import Settings
from revtrace.server import Server
from tests.builders import T0, clean, order, payment

ADMIN, READER, FEEDER = "admin-token", "read-token", "ingest-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(db_url: str, aiohttp_client: Callable[..., Any]) -> AsyncIterator[tuple[TestClient, Server]]:
    settings = Settings(database_url=db_url, evaluate_every=0, max_body_bytes=2_000_000,
                        tokens={ADMIN: frozenset({"ingest", "read", "admin"}), READER: frozenset({"read"}),
                                FEEDER: frozenset({"ingest"})})
    server = Server(settings, clock_us=lambda: to_us(T0 + timedelta(days=60)))
    yield await aiohttp_client(server.app()), server


def stored(server: Server) -> int:
    with server.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


async def post(cl: TestClient, body: Any, token: str = FEEDER, ctype: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await cl.post("/api/v1/events", data=data, headers={**bearer(token), "Content-Type": ctype})


async def test_a_batch_is_stored_once_and_replays_are_duplicates(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    r = await post(cl, clean())
    assert r.status == 200
    assert await r.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    r = await post(cl, [*clean(), order("B")])
    assert await r.json() == {"accepted": 1, "duplicates": 4, "rejected": []}
    r = await post(cl, [order("C"), order("C")])  # twice in one batch: the second is a replay
    assert await r.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert stored(server) == 6


async def test_bad_events_are_rejected_by_index_and_the_good_ones_kept(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    bad_time = order("B") | {"occurred_at": "yesterday"}
    bad_money = order("C") | {"amount": 12.5}
    r = await post(cl, [order("A"), bad_time, "not an object", bad_money])
    body = await r.json()
    assert r.status == 200
    assert body["accepted"] == 1 and body["duplicates"] == 0
    assert [x["index"] for x in body["rejected"]] == [1, 2, 3]
    assert body["rejected"][0]["error"].startswith("occurred_at: ")
    assert body["rejected"][1]["error"].startswith("event: ")
    assert body["rejected"][2]["error"].startswith("amount: ")
    assert stored(server) == 1


async def test_a_nul_in_an_id_is_refused_alone_and_its_batch_stored(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    r = await post(cl, [order("N1"), order("N2") | {"event_id": "N2\x00"}, order("N3") | {"attributes": {"n": "\x00"}}])
    body = await r.json()
    assert r.status == 200
    assert (body["accepted"], [x["index"] for x in body["rejected"]]) == (2, [1])
    assert body["rejected"][0]["error"].startswith("event_id: must not contain the NUL")
    assert stored(server) == 2


async def test_ndjson_with_a_torn_line(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    body = orjson.dumps(order("A")) + b"\n{\"event_id\": \n" + orjson.dumps(order("B")) + b"\n"
    r = await post(cl, body, ctype="application/x-ndjson")
    res = await r.json()
    assert (res["accepted"], [x["index"] for x in res["rejected"]]) == (2, [1])
    assert res["rejected"][0]["error"].startswith("event: not JSON")
    assert stored(server) == 2


@pytest.mark.parametrize("body", [b"", b"[{\"event_id\": \"x\", ", b"{\"event_id\": \"x\"}", b"\xff\xfe"])
async def test_an_unreadable_body_is_400_and_changes_nothing(client: tuple[TestClient, Server], body: bytes) -> None:
    cl, server = client
    r = await post(cl, body)
    assert r.status == 400
    assert "unreadable body" in (await r.json())["error"]
    assert stored(server) == 0


async def test_too_many_events_or_too_many_bytes_is_413(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    many = [{"event_id": f"e{i}"} for i in range(10_001)]
    r = await post(cl, many)
    assert r.status == 413
    r = await post(cl, [order("A") | {"attributes": {"pad": "x" * 2_100_000}}])
    assert r.status == 413
    assert stored(server) == 0


async def test_tokens_and_scopes(client: tuple[TestClient, Server]) -> None:
    cl, server = client
    assert (await cl.post("/api/v1/events", data=orjson.dumps(clean()))).status == 401
    assert (await post(cl, clean(), token="nobody")).status == 401
    assert (await post(cl, clean(), token=READER)).status == 403
    assert (await cl.get("/api/v1/mismatches", headers=bearer(FEEDER))).status == 403
    assert (await cl.post("/api/v1/admin/evaluate", headers=bearer(READER))).status == 403
    assert (await cl.get("/metrics")).status == 401
    assert (await cl.get("/healthz")).status == 200
    assert (await cl.get("/readyz")).status == 200
    assert stored(server) == 0


async def test_evaluate_then_read_lists_with_paging_and_filters(client: tuple[TestClient, Server]) -> None:
    cl, _ = client
    await post(cl, [*clean("A"), order("B"), order("C"), payment(None, owner="Z")])
    r = await cl.post("/api/v1/admin/evaluate", data=b'{"full": true}', headers=bearer(ADMIN))
    res = await r.json()
    assert (res["evaluated"], res["opened"], res["full"]) == (3, 3, True)
    r = await cl.get("/api/v1/mismatches", params={"state": "open", "limit": "2"}, headers=bearer(READER))
    page = await r.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    r = await cl.get("/api/v1/mismatches", params={"state": "open", "limit": "2", "cursor": page["next_cursor"]},
                     headers=bearer(READER))
    rest = await r.json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    kinds = sorted(m["kind"] for m in page["items"] + rest["items"])
    assert kinds == ["missing_invoice", "missing_invoice", "orphan_payment"]
    r = await cl.get("/api/v1/contracts", params={"mismatch": "missing_invoice"}, headers=bearer(READER))
    assert [c["contract_id"] for c in (await r.json())["items"]] == ["B", "C"]
    r = await cl.get("/api/v1/contracts", params={"stage": "paid"}, headers=bearer(READER))
    assert [c["contract_id"] for c in (await r.json())["items"]] == ["A"]
    assert (await cl.get("/api/v1/contracts/nope", headers=bearer(READER))).status == 404


@pytest.mark.parametrize(("path", "params"), [
    ("/api/v1/mismatches", {"kind": "nonsense"}), ("/api/v1/mismatches", {"state": "pending"}),
    ("/api/v1/mismatches", {"limit": "0"}), ("/api/v1/mismatches", {"cursor": "%%%"}),
    ("/api/v1/contracts", {"stage": "shipped"}), ("/api/v1/contracts", {"cursor": "MQ"}),
    ("/api/v1/assurance", {"from": "monday"}),
])
async def test_bad_query_parameters_are_400(client: tuple[TestClient, Server], path: str,
                                            params: dict[str, str]) -> None:
    cl, _ = client
    r = await cl.get(path, params=params, headers=bearer(READER))
    assert r.status == 400
    assert ": " in (await r.json())["error"]


async def test_evaluate_body_must_be_an_object_with_a_boolean(client: tuple[TestClient, Server]) -> None:
    cl, _ = client
    for body in (b"[", b'{"full": "yes"}'):
        assert (await cl.post("/api/v1/admin/evaluate", data=body, headers=bearer(ADMIN))).status == 400


async def test_metrics_name_what_happened(client: tuple[TestClient, Server]) -> None:
    cl, _ = client
    await post(cl, [*clean("A"), *clean("A"), order("B") | {"amount": 1}])
    await cl.post("/api/v1/admin/evaluate", headers=bearer(ADMIN))
    text = await (await cl.get("/metrics", headers=bearer(READER))).text()
    assert 'revtrace_events_ingested_total{source="crm",type="order.booked"} 1.0' in text
    assert 'revtrace_events_duplicate_total{source="billing"} 1.0' in text
    assert 'revtrace_events_rejected_total{reason="amount",source="crm"} 1.0' in text
    assert 'revtrace_contracts{stage="paid"} 1.0' in text
    assert 'revtrace_stage_lag_seconds_count{entity="US01",hop="order_to_invoice"} 1.0' in text


async def test_the_writer_refuses_past_its_bound_rather_than_queue_without_end() -> None:
    """What the API answers as 429 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Event as ThreadEvent

    from collector.ingest import Stored
    from collector.model import parse_event
    from collector.writer import INLINE_EVENTS, BatchWriter, Overloaded

    gate = ThreadEvent()

    class SlowStore:
        def store(self, batch: list[Any]) -> Stored:
            gate.wait(5)
            return Stored([True] * len(batch))

    # More events than a round written on the loop itself, so that the slow store holds a thread, not the loop.
    batch = [parse_event(e) for n in range(INLINE_EVENTS) for e in clean(f"C{n}")]
    writer = BatchWriter(SlowStore(), ThreadPoolExecutor(1), max_pending=len(batch))  # type: ignore[arg-type]
    writer.start()
    first = asyncio.create_task(writer.submit(batch))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded):
        await writer.submit([parse_event(order("B"))])
    gate.set()
    assert await first == [True] * len(batch)
    await writer.stop()


async def test_the_writer_writes_as_many_rounds_at_once_as_it_is_given() -> None:
    """PostgreSQL's two rounds: a second round is written while the first waits on the database, and each
    request gets the answer of its own round."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from collector.ingest import Stored
    from collector.model import parse_event
    from collector.writer import INLINE_EVENTS, ROUND_EVENTS, BatchWriter

    both_in = Barrier(2, timeout=5)  # broken, and the store raises, unless two rounds are in it at once

    class MeetingStore:
        def store(self, batch: list[Any]) -> Stored:
            both_in.wait()
            return Stored([ev.contract_id == batch[0].contract_id for ev in batch])

    size = ROUND_EVENTS // 2 + 1  # two of them do not fit in one round
    assert size > INLINE_EVENTS
    batches = [[parse_event(order(f"{tag}{n}")) for n in range(size)] for tag in ("A", "B")]
    writer = BatchWriter(MeetingStore(), ThreadPoolExecutor(2), rounds=2)  # type: ignore[arg-type]
    writer.start()
    answers = await asyncio.gather(*(writer.submit(b) for b in batches))
    await writer.stop()
    assert [sum(a) for a in answers] == [1, 1]
    assert all(a[0] for a in answers)
