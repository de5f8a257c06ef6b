"""The store's ingest transaction: on PostgreSQL a small batch goes in as one statement (pg_ingest), a
large one as a statement per step; both must leave the store as SQLite's steps do, and both must answer an
event another replica committed meanwhile as a duplicate, stored once."""
from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from collector import bulk, ingest, pg_ingest
from collector.db import make_engine, upgrade
from collector.ingest import EventStore
from collector.model import parse_event
from collector.schema import dirty, events, ref_map, waiting, waiting_refs
from tests.builders import T0, H, clean, invoice, order, payment, posting

# Batches that take every branch of the ingest: claims made and resolved within a batch and across
# batches, an event sent twice in one batch, replays, a ref claimed twice (the first claim wins), and
# events that join nothing yet and wait (one of them may become an orphan).
BATCHES: list[list[dict[str, Any]]] = [
    [order("C1"), invoice("C1")],
    [payment(None, owner="C1"), payment(None, owner="C1"),
     posting("C9", refs={"invoice_id": "C9-I1"}, contract_id=None)],
    [invoice("C2"), payment(None, owner="C2")],
    [order("C1"), invoice("C1"), invoice("C3", refs={"invoice_id": "C1-I1"}), posting("C1")],
    [invoice("C4", refs={"invoice_id": "X-1"}), invoice("C5", refs={"invoice_id": "X-1"}),
     payment(None, owner="X", refs={"invoice_id": "X-1"}, at=T0 + H)],
    [payment(None, owner="C7", refs={"order_id": "C2-O", "payment_id": "C7-Y1"})],
    # Text that COPY's text form would have to escape (tab, newline, backslash, "\\N") and non-ASCII, in
    # ids, refs and attributes.
    [order("C\t8\\N", system="S\t1\\", attributes={"note": "a\tb\nc\\N 'q' \"dq\" 😀"}),
     invoice("C\t8\\N", entity="É\n\\", refs={"order_id": "C\t8\\N-O", "invoice_id": "I\\8\n€"})],
]


def _state(engine: Engine) -> dict[str, Any]:
    """The store's rows, without what differs by nature between two stores (row ids, arrival times, tokens)."""
    with engine.connect() as conn:
        keys = dict(conn.execute(select(events.c.id, events.c.source + "/" + events.c.event_id)).all())
        return {
            "events": sorted(conn.execute(select(events.c.source, events.c.event_id, events.c.type, events.c.at_us,
                                                 events.c.contract_key, events.c.body)).all()),
            "claims": sorted(conn.execute(select(ref_map.c.kind, ref_map.c.ref, ref_map.c.contract_key)).all()),
            "dirty": sorted(conn.execute(select(dirty.c.contract_key)).scalars()),
            "waiting": sorted((keys[pk], at, rep) for pk, at, rep in conn.execute(
                select(waiting.c.event_pk, waiting.c.orphan_at_us, waiting.c.reported))),
            "waiting_refs": sorted((k, r, keys[pk]) for k, r, pk in conn.execute(
                select(waiting_refs.c.kind, waiting_refs.c.ref, waiting_refs.c.event_pk))),
        }


def _ingest_all(url: str) -> tuple[list[list[bool]], dict[str, Any]]:
    engine = make_engine(url)
    upgrade(engine)
    store = EventStore(engine, lambda: 1_700_000_000_000_000)
    answers = [store.store([parse_event(e) for e in batch]).new for batch in BATCHES]
    state = _state(engine)
    engine.dispose()
    return answers, state


@pytest.mark.parametrize("one_statement", [True, False], ids=["one-statement", "statement-per-step"])
def test_postgresql_stores_as_sqlite_does(sqlite_url: str, pg_url: str, one_statement: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not one_statement:
        monkeypatch.setattr(pg_ingest, "UP_TO", 0)
    used: list[int] = []
    real = pg_ingest.store
    monkeypatch.setattr(pg_ingest, "store", lambda *a: used.append(len(a[1])) or real(*a))
    expected = _ingest_all(sqlite_url)
    assert not used
    got = _ingest_all(pg_url)
    assert bool(used) == one_statement
    assert got == expected
    answers, state = expected
    assert answers[1] == [True, False, True] and answers[3] == [False, False, True, True]
    assert ("invoice_id", "C1-I1", "C1") in state["claims"] and ("invoice_id", "X-1", "C4") in state["claims"]
    assert [w[0] for w in state["waiting"]] == ["erp/C9-p1", "payment/C7-y1-succeeded"]


def _commit_meanwhile(engine: Engine, first: Any, store: EventStore, batch: list[Any]) -> list[bool]:
    """Store `batch` while another transaction holds `first` inserted, then commits it: as another replica
    that stored the same event a moment earlier."""
    other = EventStore(engine, lambda: 1)
    answer: list[list[bool]] = []
    with engine.begin() as conn:
        other._store(conn, [first], 1)
        worker = threading.Thread(target=lambda: answer.append(store.store(batch).new))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "the second writer should wait for the first one's commit"
    worker.join(30)
    return answer[0]


@pytest.mark.parametrize("one_statement", [True, False], ids=["one-statement", "statement-per-step"])
def test_an_event_committed_meanwhile_by_another_replica_is_a_duplicate(pg_url: str, one_statement: bool,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if not one_statement:
        monkeypatch.setattr(pg_ingest, "UP_TO", 0)
    engine = make_engine(pg_url)
    upgrade(engine)
    store = EventStore(engine, lambda: 1_700_000_000_000_000)
    first, second = parse_event(order("C1")), parse_event(invoice("C1"))
    if one_statement:
        assert _commit_meanwhile(engine, first, store, [first, second]) == [False, True]
    else:
        # As if the other replica committed `first` just after this one looked for stored events.
        assert store.store([first]).new == [True]

        def nothing_stored(conn: Any, keys: Any) -> set[tuple[str, str]]:
            return set()
        monkeypatch.setattr(bulk, "stored_keys", nothing_stored)
        assert store.store([first, second]).new == [False, True]

    with engine.connect() as conn:
        rows = dict(conn.execute(select(events.c.event_id, func.count()).group_by(events.c.event_id)).all())
        claims = dict(conn.execute(select(ref_map.c.ref, ref_map.c.contract_key)).all())
    assert rows == {first.event_id: 1, second.event_id: 1}
    assert claims == {first.refs["order_id"]: "C1", second.refs["invoice_id"]: "C1"}
    engine.dispose()


@pytest.mark.parametrize("contracts", [15, 1000], ids=["one-statement", "statement-per-step"])
def test_concurrent_writers_of_the_same_events_store_each_once_and_never_deadlock(pg_url: str,
                                                                                  contracts: int) -> None:
    """Two rounds (of one server, or of two replicas) carrying the same events in opposite orders: without
    a common lock order they would each hold a key the other waits for."""
    engine = make_engine(pg_url)
    upgrade(engine)
    batch = [parse_event(e) for n in range(contracts) for e in clean(f"C{n}")]
    assert (len(batch) <= pg_ingest.UP_TO) == (contracts == 15)
    stores = [EventStore(engine, lambda: 1_700_000_000_000_000) for _ in range(2)]
    start = threading.Barrier(2)
    answers: list[tuple[list[Any], list[bool]]] = []
    errors: list[BaseException] = []

    def write(store: EventStore, events: list[Any]) -> None:
        start.wait()
        try:
            answers.append((events, store.store(events).new))
        except BaseException as exc:  # reported by the assertion below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, evs)) for s, evs in zip(stores, (batch, batch[::-1]),
                                                                                   strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    answered_new = [ev.key for evs, new in answers for ev, n in zip(evs, new, strict=True) if n]
    assert sorted(answered_new) == sorted(ev.key for ev in batch)  # each event new to exactly one writer
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == len(batch)
        assert conn.execute(select(func.count()).select_from(dirty)).scalar_one() == contracts
    engine.dispose()


def test_a_write_that_fails_part_way_stores_nothing_and_the_next_one_stores(db_url: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step of the transaction fails after the events went in: none of them is stored, and the
    store takes the same batch again (on SQLite through the connection it keeps, which the failure
    replaced)."""
    engine = make_engine(db_url)
    upgrade(engine)
    store = EventStore(engine, lambda: 1_700_000_000_000_000)
    monkeypatch.setattr(pg_ingest, "UP_TO", 0)  # the statement-per-step path, on both databases
    batch = [parse_event(e) for e in BATCHES[0]]
    real_upsert = ingest.upsert

    def failing(*a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ingest, "upsert", failing)
    with pytest.raises(OSError, match="disk full"):
        store.store(batch)
    assert _state(engine) == {"events": [], "claims": [], "dirty": [], "waiting": [], "waiting_refs": []}
    monkeypatch.setattr(ingest, "upsert", real_upsert)
    assert store.store(batch).new == [True, True]
    assert store.store(batch).new == [False, False]
    assert len(_state(engine)["events"]) == 2
    store.close()
    engine.dispose()
