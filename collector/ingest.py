"""Durable ingest: one transaction stores a batch of validated events, idempotently on (source, event_id),
joins them to their contracts where their refs already say which, and marks those contracts for the next
reconciliation pass. When it returns, the events are committed."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, tuple_

from collector import conventions as c
from collector.model import CanonicalEvent
from collector.schema import dirty, events, ref_map
from collector.sqlutil import dialect_insert, insert_ignore, upsert
from collector.timeutil import to_us
from collector.waiting import JOIN_REFS, register

# The document an event creates, whose id then leads to its contract. Only these claims are kept, so the
# contract a ref leads to never depends on which other event happened to mention it first.
OWNED_REF = {c.ORDER_BOOKED: "order_id", c.INVOICE_ISSUED: "invoice_id", c.POSTING_CREATED: "posting_id",
             c.PAYMENT_SUCCEEDED: "payment_id"}
_LOOKUP_CHUNK = 2000  # ids per IN (...): few statements, well under every driver's parameter limit
_SQLITE_INSERT = ("INSERT INTO events (source, event_id, type, at_us, contract_key, received_us, body) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)")


@dataclass(frozen=True)
class Stored:
    """Per event of the batch, whether it was new (else a replay of a stored one)."""
    new: list[bool]


def refs_of(ev: CanonicalEvent, contract_key: str) -> list[dict[str, str]]:
    """The claim this event makes: its own document's id belongs to this contract."""
    kind = OWNED_REF.get(ev.type)
    if kind is None or kind not in ev.refs:
        return []
    return [{"kind": kind, "ref": ev.refs[kind], "contract_key": contract_key}]


class EventStore:
    def __init__(self, engine: Engine, clock_us: Callable[[], int]):
        self.engine = engine
        self.clock_us = clock_us

    def store(self, batch: Sequence[CanonicalEvent]) -> Stored:
        first: dict[tuple[str, str], int] = {}
        for i, ev in enumerate(batch):
            first.setdefault(ev.key, i)
        with self.engine.begin() as conn:
            # Replays are found first, so that a batch of replays writes nothing and costs no more than a
            # new one.
            stored_before = self._stored(conn, list(first))
            unique = [batch[i] for k, i in first.items() if k not in stored_before]
            keys = self._contract_keys(conn, unique)
            inserted = self._insert(conn, unique, keys)
            refs: list[dict[str, str]] = []
            marks: set[str] = set()
            unjoined: list[CanonicalEvent] = []
            for j, ev in enumerate(unique):
                key = keys[j]
                if ev.key not in inserted:
                    continue
                if key is None:
                    unjoined.append(ev)
                else:
                    refs.extend(refs_of(ev, key))
                    marks.add(key)
            register(conn, self._pks(conn, unjoined))
            insert_ignore(conn, ref_map, _dedupe_refs(refs), ["kind", "ref"])
            # Sorted, so that concurrent batches take row locks in one order and never deadlock.
            token = random.getrandbits(62)
            upsert(conn, dirty, [{"contract_key": k, "token": token} for k in sorted(marks)], ["contract_key"])
        return Stored([i == first[ev.key] and ev.key in inserted for i, ev in enumerate(batch)])

    @staticmethod
    def _pks(conn: Connection, evs: list[CanonicalEvent]) -> list[tuple[int, CanonicalEvent]]:
        if not evs:
            return []
        by_key = {ev.key: ev for ev in evs}
        out: list[tuple[int, CanonicalEvent]] = []
        for source in sorted({ev.source for ev in evs}):
            ids = sorted(ev.event_id for ev in evs if ev.source == source)
            for i in range(0, len(ids), _LOOKUP_CHUNK):
                q = select(events.c.id, events.c.event_id).where(events.c.source == source,
                                                                  events.c.event_id.in_(ids[i:i + _LOOKUP_CHUNK]))
                out.extend((pk, by_key[(source, eid)]) for pk, eid in conn.execute(q))
        return out

    @staticmethod
    def _stored(conn: Connection, wanted: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these keys are stored already; by source, so each lookup seeks the unique index."""
        found: set[tuple[str, str]] = set()
        by_source: dict[str, list[str]] = {}
        for source, event_id in wanted:
            by_source.setdefault(source, []).append(event_id)
        for source, ids in sorted(by_source.items()):
            ids.sort()
            for i in range(0, len(ids), _LOOKUP_CHUNK):
                q = select(events.c.event_id).where(events.c.source == source,
                                                    events.c.event_id.in_(ids[i:i + _LOOKUP_CHUNK]))
                found.update((source, e) for e in conn.execute(q).scalars())
        return found

    def _insert(self, conn: Connection, unique: list[CanonicalEvent],
                keys: list[str | None]) -> set[tuple[str, str]]:
        """Insert the events not stored before; answers those that were inserted."""
        if not unique:
            return set()
        received = self.clock_us()
        rows = [(ev.source, ev.event_id, ev.type, to_us(ev.occurred_at), keys[j], received,
                 ev.stored_json().decode()) for j, ev in enumerate(unique)]
        if conn.dialect.name == "sqlite":
            # BEGIN IMMEDIATE makes this the only writer, so what _stored did not find is new: a plain
            # executemany, the fastest insert the driver has.
            conn.exec_driver_sql(_SQLITE_INSERT, rows)
            return {ev.key for ev in unique}
        # Another replica may commit the same event meanwhile: its copy wins and ours is a duplicate.
        stmt = dialect_insert(conn, events).on_conflict_do_nothing(
            index_elements=["source", "event_id"]).returning(events.c.source, events.c.event_id)
        cols = ("source", "event_id", "type", "at_us", "contract_key", "received_us", "body")
        return {(r[0], r[1]) for r in conn.execute(stmt, [dict(zip(cols, row, strict=True)) for row in rows])}

    def _contract_keys(self, conn: Connection, batch: Sequence[CanonicalEvent]) -> list[str | None]:
        """The contract of each event: its contract_id, or the contract its refs name, if known yet."""
        if all(ev.contract_id is not None for ev in batch):
            return [ev.contract_id for ev in batch]
        local: dict[tuple[str, str], str] = {}
        wanted: set[tuple[str, str]] = set()
        for ev in batch:
            if ev.contract_id is not None:
                for claim in refs_of(ev, ev.contract_id):
                    local.setdefault((claim["kind"], claim["ref"]), ev.contract_id)
        for ev in batch:
            if ev.contract_id is None:
                wanted.update((k, ev.refs[k]) for k in JOIN_REFS if k in ev.refs)
        wanted -= local.keys()
        found = dict(local)
        pairs = sorted(wanted)
        for i in range(0, len(pairs), _LOOKUP_CHUNK):
            part = pairs[i:i + _LOOKUP_CHUNK]
            q = select(ref_map.c.kind, ref_map.c.ref, ref_map.c.contract_key).where(
                tuple_(ref_map.c.kind, ref_map.c.ref).in_(part))
            for kind, ref, key in conn.execute(q):
                found.setdefault((kind, ref), key)
        return [ev.contract_id if ev.contract_id is not None else resolve(ev, found) for ev in batch]


def resolve(ev: CanonicalEvent, known: dict[tuple[str, str], str]) -> str | None:
    for k in JOIN_REFS:
        if k in ev.refs:
            key = known.get((k, ev.refs[k]))
            if key is not None:
                return key
    return None


def _dedupe_refs(refs: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for r in refs:
        seen.setdefault((r["kind"], r["ref"]), r)
    return [seen[k] for k in sorted(seen)]
