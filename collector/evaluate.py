"""The reconciliation pass: joins waiting events to their contracts, re-examines every contract that
changed (or whose window closed), and writes what opened, closed or moved, chunk by chunk.

Incremental by default: its cost follows the dirty marks and the closed windows, not the size of the
store. `full=True` re-examines every contract and must agree with the incremental passes."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, bindparam, delete, select, update

from collector import conventions as c
from collector import waiting
from collector.documents import Documents, assemble
from collector.ingest import record_claims, refs_of
from collector.model import CanonicalEvent, from_stored
from collector.money import show, to_micros
from collector.pass_lock import pass_lock
from collector.policy import Policy
from collector.reconcile import Finding, reconcile
from collector.schema import contract_totals, contracts, dirty, events, mismatches
from collector.sqlutil import add_to, among, upsert
from collector.timeutil import from_us, to_us, to_us_delta
from collector.trace import Summary, summarize

CHUNK = 500
FULL_CHUNK = 2000  # a full pass writes in larger transactions: fewer commits over the whole store
LAG_COLUMNS = {c.HOPS[0]: "lag_order_to_invoice", c.HOPS[1]: "lag_invoice_to_posting",
               c.HOPS[2]: "lag_invoice_to_payment"}
Lag = tuple[str, str, float]  # hop, entity, seconds


@dataclass
class PassResult:
    evaluated: int = 0
    opened: int = 0
    closed: int = 0
    updated: int = 0
    resolved: int = 0
    full: bool = False
    seconds: float = 0.0
    skipped: bool = False
    # Hop lags that became known in this pass, to be counted once each in the lag histogram.
    lags: list[Lag] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lags"}


def load_event(body: str | bytes) -> CanonicalEvent:
    return from_stored(orjson.loads(body))


def orphan_scope(ev: CanonicalEvent) -> str:
    return f"~{ev.source}/{ev.event_id}"


@dataclass
class _Examined:
    """One chunk's reconciliation, between reading it and writing it."""
    marks: dict[str, int]
    scopes: dict[str, tuple[list[Finding], str | None]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)


class Reconciler:
    def __init__(self, engine: Engine, policy: Policy, clock_us: Callable[[], int],
                 read_engine: Engine | None = None):
        self.engine, self.policy, self.clock_us = engine, policy, clock_us
        self.read_engine = read_engine if read_engine is not None else engine

    def run(self, full: bool = False, wait: bool = True, now_us: int | None = None) -> PassResult:
        """One pass, one at a time over the store; without `wait`, a pass that finds another under way
        (another replica's, or a killed server's last one) is skipped."""
        with pass_lock(self.engine, wait) as held:
            if not held:
                return PassResult(full=full, skipped=True)
            return self._run(full, self.clock_us() if now_us is None else now_us)

    def _run(self, full: bool, now_us: int) -> PassResult:
        started = time.perf_counter()
        res = PassResult(full=full)
        self._join_waiting(now_us, res, full)
        batches = self._all_keys() if full else self._changed_keys(now_us)
        for keys in batches:
            with self.read_engine.connect() as reader:
                examined = self._examine(reader, keys, now_us)
            with self.engine.begin() as conn:
                new_lags = self._write(conn, examined, now_us, res)
            res.lags.extend(new_lags)  # after the commit: a rolled-back chunk counts nothing
        res.seconds = round(time.perf_counter() - started, 6)
        return res

    # -- which contracts

    def _changed_keys(self, now_us: int) -> Iterator[list[str]]:
        yield from self._paged(select(dirty.c.contract_key), dirty.c.contract_key)
        yield from self._paged(select(contracts.c.contract_key).where(contracts.c.next_due_us <= now_us),
                               contracts.c.contract_key)

    def _all_keys(self) -> Iterator[list[str]]:
        # Every contract has a row once a pass has seen it, and a dirty mark until then: the rows first, then
        # the marks still left (those the rows did not clear), each paged along its primary key.
        yield from self._paged(select(contracts.c.contract_key), contracts.c.contract_key, FULL_CHUNK)
        yield from self._paged(select(dirty.c.contract_key), dirty.c.contract_key, FULL_CHUNK)

    def _paged(self, query: Any, key: Any, size: int = CHUNK) -> Iterator[list[str]]:
        last: str | None = None
        while True:
            q = query.order_by(key).limit(size)
            if last is not None:
                q = q.where(key > last)
            with self.read_engine.connect() as conn:
                keys = [r[0] for r in conn.execute(q)]
            if not keys:
                return
            yield keys
            last = keys[-1]

    # -- joining events whose contract was not known at ingest

    def _join_waiting(self, now_us: int, res: PassResult, full: bool) -> None:
        """Join the waiting events a new claim resolves (repeatedly: an invoice that joins lets its payments
        join), then look at those whose orphan grace has passed."""
        while True:
            with self.engine.begin() as conn:
                joined = waiting.joinable(conn)
                if not joined:
                    break
                evs = self._events_by_pk(conn, list(joined))
                conn.execute(update(events).where(events.c.id == bindparam("pk"))
                             .values(contract_key=bindparam("key")),
                             [{"pk": pk, "key": key} for pk, key in joined.items()])
                claims = [r for pk, ev in evs.items() for r in refs_of(ev, joined[pk])]
                record_claims(conn, claims)
                upsert(conn, dirty, [{"contract_key": k, "token": 0} for k in sorted(set(joined.values()))],
                       ["contract_key"])
                waiting.forget(conn, sorted(joined))
                # An event that joined a contract is no orphan any more.
                self._write_findings(conn, {orphan_scope(ev): ([], None) for ev in evs.values()}, now_us, res)
                res.resolved += len(joined)
        with self.engine.begin() as conn:
            due = waiting.past_grace(conn, now_us - to_us_delta(self.policy.orphan_grace), again=full)
            for i in range(0, len(due), CHUNK):
                part = due[i:i + CHUNK]
                scopes: dict[str, tuple[list[Finding], str | None]] = {}
                for ev in self._events_by_pk(conn, part).values():
                    found, _ = reconcile(self._assemble([ev]), from_us(now_us), self.policy)
                    scopes[orphan_scope(ev)] = (found, None)
                self._write_findings(conn, scopes, now_us, res)
                waiting.mark_reported(conn, part)

    @staticmethod
    def _events_by_pk(conn: Connection, pks: list[int]) -> dict[int, CanonicalEvent]:
        out: dict[int, CanonicalEvent] = {}
        for i in range(0, len(pks), CHUNK):
            q = select(events.c.id, events.c.body).where(among(conn, events.c.id, pks[i:i + CHUNK]))
            for pk, body in conn.execute(q):
                out[pk] = load_event(body)
        return out

    # -- one chunk of contracts

    def _assemble(self, evs: Sequence[CanonicalEvent]) -> Documents:
        return assemble(evs, self.policy.duplicate_window)

    def _examine(self, conn: Connection, keys: list[str], now_us: int) -> _Examined:
        """Read and reconcile these contracts. On a reader: no write lock is held while Python works, so
        ingest goes on. An event that lands meanwhile changes its contract's dirty token, so the mark
        survives this pass and the next one looks again."""
        ex = _Examined(dict(conn.execute(select(dirty.c.contract_key, dirty.c.token)
                                         .where(among(conn, dirty.c.contract_key, keys))).all()))
        by_key: dict[str, list[CanonicalEvent]] = defaultdict(list)
        for key, body in conn.execute(select(events.c.contract_key, events.c.body)
                                      .where(among(conn, events.c.contract_key, keys))):
            by_key[key].append(load_event(body))
        now = from_us(now_us)
        for key in keys:
            evs = by_key.get(key)
            if not evs:
                continue
            docs = self._assemble(evs)
            found, due = reconcile(docs, now, self.policy)
            summary = summarize(docs)
            ex.scopes[key] = (found, key)
            ex.rows[key] = _contract_row(key, docs, summary, due, now_us)
            ex.entities[key] = summary.entity or "none"
        return ex

    def _write(self, conn: Connection, ex: _Examined, now_us: int, res: PassResult) -> list[Lag]:
        """Write what _examine found; answers the hop lags that became known, to be counted once."""
        keys = list(ex.rows)
        prev = {r.contract_key: r._asdict() for r in conn.execute(
            select(contracts).where(among(conn, contracts.c.contract_key, keys)))} if keys else {}
        changed: list[dict[str, Any]] = []
        new_lags: list[Lag] = []
        for key, row in ex.rows.items():
            before = prev.get(key)
            if before is None or any(before[k] != v for k, v in row.items() if k != "updated_us"):
                changed.append(row)
            for hop, col in LAG_COLUMNS.items():
                lag = row[col]
                if lag is not None and (before is None or before[col] is None):
                    new_lags.append((hop, ex.entities[key], lag))
        res.evaluated += len(ex.rows)
        self._write_findings(conn, ex.scopes, now_us, res)
        upsert(conn, contracts, changed, ["contract_key"])
        add_to(conn, contract_totals, _total_deltas(changed, prev), ["currency", "stage"])
        if ex.marks:
            conn.execute(delete(dirty).where(and_(dirty.c.contract_key == bindparam("k"),
                                                  dirty.c.token == bindparam("t"))),
                         [{"k": k, "t": t} for k, t in ex.marks.items()])
        return new_lags

    def _write_findings(self, conn: Connection, scopes: dict[str, tuple[list[Finding], str | None]],
                        now_us: int, res: PassResult) -> None:
        """Open what is new, close what no longer holds, update what moved; one scope is one contract."""
        if not scopes:
            return
        cols = (mismatches.c.id, mismatches.c.scope, mismatches.c.kind, mismatches.c.subject,
                mismatches.c.amount_at_risk, mismatches.c.currency, mismatches.c.evidence, mismatches.c.leakage_micros)
        current: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        names = list(scopes)
        for i in range(0, len(names), CHUNK):
            q = select(*cols).where(among(conn, mismatches.c.scope, names[i:i + CHUNK]), mismatches.c.state == "open")
            for r in conn.execute(q):
                current[(r[1], r[2], r[3])] = tuple(r)
        inserts: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for scope, (found, contract_id) in scopes.items():
            for f in found:
                ident = (scope, f.kind, f.subject)
                row = _mismatch_row(f, scope, None if f.orphan else contract_id, now_us)
                old = current.pop(ident, None)
                if old is None:
                    inserts.append(row)
                elif (old[4], old[5], old[6], old[7]) != (row["amount_at_risk"], row["currency"], row["evidence"],
                                                          row["leakage_micros"]):
                    changes.append({"mid": old[0], **{k: row[k] for k in ("amount_at_risk", "amount_micros",
                                                                         "currency", "evidence", "leakage_micros")}})
        if inserts:
            conn.execute(mismatches.insert(), inserts)
        if changes:
            conn.execute(update(mismatches).where(mismatches.c.id == bindparam("mid")).values(
                amount_at_risk=bindparam("amount_at_risk"), amount_micros=bindparam("amount_micros"),
                currency=bindparam("currency"), evidence=bindparam("evidence"),
                leakage_micros=bindparam("leakage_micros")), changes)
        if current:
            conn.execute(update(mismatches).where(mismatches.c.id == bindparam("mid")).values(
                state="closed", closed_us=now_us), [{"mid": old[0]} for old in current.values()])
        res.opened += len(inserts)
        res.updated += len(changes)
        res.closed += len(current)


TOTALLED = ("booked_micros", "invoiced_micros", "posted_micros", "collected_micros")


def _total_deltas(rows: list[dict[str, Any]], prev: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What the changed rows add to (and their old versions take from) contract_totals."""
    deltas: dict[tuple[str, str], dict[str, int]] = {}

    def add(row: dict[str, Any], sign: int) -> None:
        d = deltas.setdefault((row["currency"] or "", row["stage"]), dict.fromkeys(("contracts", *TOTALLED), 0))
        d["contracts"] += sign
        for name in TOTALLED:
            d[name] += sign * row[name]

    for row in rows:
        old = prev.get(row["contract_key"])
        if old is not None:
            add(old, -1)
        add(row, 1)
    return [{"currency": cur, "stage": stage, **d} for (cur, stage), d in sorted(deltas.items())
            if any(d.values())]


def _mismatch_row(f: Finding, scope: str, contract_id: str | None, now_us: int) -> dict[str, Any]:
    return {"scope": scope, "kind": f.kind, "subject": f.subject, "contract_id": contract_id, "state": "open",
            "amount_at_risk": show(f.amount), "amount_micros": to_micros(f.amount), "currency": f.currency,
            "leakage_micros": None if f.leakage is None else to_micros(f.leakage), "detected_us": now_us,
            "closed_us": None, "evidence": orjson.dumps(list(f.evidence)).decode()}


def _contract_row(key: str, docs: Documents, s: Summary, due: datetime | None, now_us: int) -> dict[str, Any]:
    ordered = s.stages.get("ordered")
    first_at = ordered.at if ordered is not None else docs.latest_at
    return {
        "contract_key": key, "stage": s.stage, "currency": s.currency, "entity": s.entity,
        "ordered_us": to_us(first_at) if first_at is not None else None,
        "next_due_us": to_us(due) if due is not None else None,
        "booked_micros": to_micros(s.amount("ordered")), "invoiced_micros": to_micros(s.amount("invoiced")),
        "posted_micros": to_micros(s.amount("posted")), "collected_micros": to_micros(s.amount("paid")),
        **{col: s.lags[hop] for hop, col in LAG_COLUMNS.items()},
        "updated_us": now_us,
    }
