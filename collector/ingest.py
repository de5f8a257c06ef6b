"""Durable ingest: one transaction stores a batch of validated events, idempotently on (source, event_id),
joins them to their contracts where their refs already say which, and marks those contracts for the next
reconciliation pass. When it returns, the events are committed."""
from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from collector import bulk, pg_ingest
from collector import conventions as c
from collector.model import CanonicalEvent, Event
from collector.schema import dirty
from collector.sqlutil import driver, upsert
from collector.timeutil import to_us
from collector.waiting import register

# The document an event creates, whose id then leads to its contract. Only these claims are kept, so the
# contract a ref leads to never depends on which other event happened to mention it first.
OWNED_REF = {c.ORDER_BOOKED: "order_id", c.INVOICE_ISSUED: "invoice_id", c.POSTING_CREATED: "posting_id",
             c.PAYMENT_SUCCEEDED: "payment_id"}


@dataclass(frozen=True)
class Stored:
    """Per event of the batch, whether it was new (else a replay of a stored one)."""
    new: list[bool]


def refs_of(ev: Event, contract_key: str) -> list[dict[str, str]]:
    """The claim this event makes: its own document's id belongs to this contract."""
    kind = OWNED_REF.get(ev.type)
    if kind is None or kind not in ev.refs:
        return []
    return [{"kind": kind, "ref": ev.refs[kind], "contract_key": contract_key}]


class EventStore:
    def __init__(self, engine: Engine, clock_us: Callable[[], int]):
        self.engine = engine
        self.clock_us = clock_us
        self._lock = threading.Lock()
        self._held: Connection | None = None  # SQLite's writing connection, see _transaction

    def close(self) -> None:
        with self._lock:
            if self._held is not None:
                self._held.close()
                self._held = None

    def store(self, batch: Sequence[CanonicalEvent]) -> Stored:
        keys = [ev.key for ev in batch]
        first: dict[tuple[str, str], int] = {}
        for i, k in enumerate(keys):  # an event sent twice in one batch is new once
            first.setdefault(k, i)
        unique = [batch[i] for i in first.values()]
        token = random.getrandbits(62)
        if self.engine.dialect.name == "postgresql" and len(unique) <= pg_ingest.UP_TO:
            with self.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                inserted = pg_ingest.store(driver(conn), unique, OWNED_REF, self.clock_us(), token)
        else:
            with self._transaction() as conn:
                inserted = self._store(conn, unique, token)
        return Stored([first[k] == i and k in inserted for i, k in enumerate(keys)])

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction. On SQLite, which takes one writer at a time anyway, the connection is kept
        from one to the next: its checkout from the pool and return cost 40-90 us, a sixth of a single
        event's durable write here. PostgreSQL's come from the pool, which checks each one is still open (a
        restarted server closes them)."""
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as conn:
                yield conn
            return
        with self._lock:
            if self._held is None:
                self._held = self.engine.connect()
            try:
                with self._held.begin():
                    yield self._held
            except BaseException:
                # Rolled back; whatever failed may have left the connection unusable, so the next write
                # opens another.
                self._held.invalidate()
                self._held.close()
                self._held = None
                raise

    def _store(self, conn: Connection, batch: list[CanonicalEvent], token: int) -> set[tuple[str, str]]:
        """Store these distinct events in the connection's transaction, a statement per step (pg_ingest does
        the same steps in one statement)."""
        if conn.dialect.name == "postgresql":
            # Replays are found first, so that a batch of replays writes nothing and costs no more than a new
            # one; new events are then COPYed. SQLite's insert passes over replays itself (bulk.insert_events).
            stored_before = bulk.stored_keys(conn, [ev.key for ev in batch])
            unique = [ev for ev in batch if ev.key not in stored_before]
        else:
            unique = batch
        contracts = self._contract_keys(conn, unique)
        inserted = self._insert(conn, unique, contracts)
        claims: list[tuple[str, str, str]] = []
        marks: set[str] = set()
        unjoined: list[CanonicalEvent] = []
        for ev, key in zip(unique, contracts, strict=True):
            if ev.key not in inserted:
                continue
            if key is None:
                unjoined.append(ev)
                continue
            marks.add(key)
            kind = OWNED_REF.get(ev.type)
            if kind is not None and kind in ev.refs:
                claims.append((kind, ev.refs[kind], key))
        register(conn, self._pks(conn, unjoined))
        keep_claims(conn, claims)
        # Sorted, so that concurrent batches take row locks in one order and never deadlock.
        upsert(conn, dirty, [{"contract_key": k, "token": token} for k in sorted(marks)], ["contract_key"])
        return inserted

    @staticmethod
    def _pks(conn: Connection, evs: list[CanonicalEvent]) -> list[tuple[int, CanonicalEvent]]:
        pks = bulk.event_pks(conn, [ev.key for ev in evs]) if evs else {}
        return [(pks[ev.key], ev) for ev in evs]

    def _insert(self, conn: Connection, unique: list[CanonicalEvent],
                keys: list[str | None]) -> set[tuple[str, str]]:
        """Insert the events not stored before; answers those that were inserted."""
        received = self.clock_us()
        return bulk.insert_events(conn, [(ev.source, ev.event_id, ev.type, to_us(ev.occurred_at), keys[j], received,
                                          ev.stored_json().decode()) for j, ev in enumerate(unique)])

    def _contract_keys(self, conn: Connection, batch: Sequence[CanonicalEvent]) -> list[str | None]:
        """The contract of each event: its contract_id, or the contract its refs name, if known yet."""
        named = [ev.contract_id for ev in batch]
        if None not in named:
            return named
        local: dict[tuple[str, str], str] = {}
        wanted: set[tuple[str, str]] = set()
        for ev in batch:
            if ev.contract_id is None:
                wanted.update((k, ev.refs[k]) for k in c.JOIN_REFS if k in ev.refs)
            elif (kind := OWNED_REF.get(ev.type)) is not None and kind in ev.refs:
                local.setdefault((kind, ev.refs[kind]), ev.contract_id)
        found = {**bulk.claims(conn, sorted(wanted - local.keys())), **local}
        return [ev.contract_id if ev.contract_id is not None else resolve(ev, found) for ev in batch]


def resolve(ev: CanonicalEvent, known: dict[tuple[str, str], str]) -> str | None:
    for k in c.JOIN_REFS:
        if k in ev.refs:
            key = known.get((k, ev.refs[k]))
            if key is not None:
                return key
    return None


def record_claims(conn: Connection, claims: list[dict[str, str]]) -> None:
    """Keep these claims; within them, as in the store, the first claim of a ref wins."""
    keep_claims(conn, [(r["kind"], r["ref"], r["contract_key"]) for r in claims])


def keep_claims(conn: Connection, claims: list[tuple[str, str, str]]) -> None:
    """(kind, ref, contract_key) claims; the first claim of a ref wins, here as in the store."""
    first: dict[tuple[str, str], str] = {}
    for kind, ref, key in claims:
        first.setdefault((kind, ref), key)
    bulk.add_claims(conn, sorted((kind, ref, key) for (kind, ref), key in first.items()))
