"""The reconciliation pass: joins waiting events to their contracts, re-examines every contract that
changed (or whose window closed), and writes what opened, closed or moved, chunk by chunk.

Incremental by default: its cost follows the dirty marks and the closed windows, not the size of the
store. `full=True` re-examines every contract and must agree with the incremental passes."""
from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, select, union, update

from collector import conventions as c
from collector import pg_upkeep, waiting
from collector.db import make_engine
from collector.documents import Documents, assemble
from collector.ingest import record_claims, refs_of
from collector.lag_buckets import deltas as lag_bucket_deltas
from collector.lag_counts import LagCounts
from collector.model import Event, event_from_store
from collector.money import show, to_micros
from collector.pass_lock import pass_lock
from collector.policy import Policy
from collector.reconcile import Finding, reconcile
from collector.schema import contract_totals, contracts, dirty, events, lag_buckets, mismatches
from collector.sqlutil import (
    add_to,
    among,
    driver,
    driver_rows_among,
    driver_rows_between,
    insert_rows,
    insert_tuples,
    update_rows,
    upsert,
    upsert_tuples,
)
from collector.timeutil import from_us, to_us, to_us_delta
from collector.trace import Summary, summarize

CHUNK = 500  # values per IN (...)
# Contracts per write transaction: each commit may run a checkpoint, and a full pass's rows touch each page
# of the contracts indexes fewer times in larger ones.
PASS_CHUNK = 2000
FULL_CHUNK = 10_000
AHEAD = 4  # chunks handed to the examiners beyond the one being written: each has one to work on
# An incremental pass hands the examiners chunks this small, so that the few thousand contracts of a pass
# keep every core busy, not one core on a chunk of 2,000 while the other waits.
SPLIT = 500
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
    lags: LagCounts = field(default_factory=LagCounts, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lags"}


def orphan_scope(ev: Event) -> str:
    return f"~{ev.source}/{ev.event_id}"


@dataclass
class _Examined:
    """One chunk's reconciliation, between reading it and writing it: plain rows, cheap to send from an
    examining process and to compare with the store's."""
    marks: dict[str, int]
    # Per scope, the rows of the mismatches found holding.
    scopes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Per contract, its row of the contracts table, in CONTRACT_COLUMNS order.
    rows: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)


class Examiner:
    """Reads and reconciles chunks of contracts; what it answers is written by the Reconciler."""

    def __init__(self, read_engine: Engine, policy: Policy):
        self.read_engine, self.policy = read_engine, policy

    def assemble(self, evs: Sequence[Event]) -> Documents:
        return assemble(evs, self.policy.duplicate_window)

    def examine(self, keys: list[str], now_us: int, run: bool = False) -> _Examined:
        """`run`: the keys are every contract from the first to the last in the store's order (a chunk of a
        full pass), so that one range scan of the contract index reads their events."""
        with self.read_engine.connect() as reader:
            return self._examine(reader, keys, now_us, run)

    def _examine(self, conn: Connection, keys: list[str], now_us: int, run: bool) -> _Examined:
        """Read and reconcile these contracts. On a reader: no write lock is held while Python works, so
        ingest goes on. An event that lands meanwhile changes its contract's dirty token, so the mark
        survives this pass and the next one looks again."""
        # Through the driver, all at once: row by row through SQLAlchemy, the per-row calls cost a tenth of
        # the pass.
        def read(sql: str) -> list[tuple[Any, ...]]:
            # A run is read by one range scan, half the time of a lookup per key.
            if run:
                return driver_rows_between(conn, sql, keys[0], keys[-1])
            return driver_rows_among(conn, sql, keys)

        # A contract that landed inside a run since it was listed is left, with its mark, to the next pass.
        wanted = set(keys)
        ex = _Examined({k: t for k, t in read("SELECT contract_key, token FROM dirty WHERE contract_key")
                        if k in wanted})
        by_key: dict[str, list[Event]] = defaultdict(list)
        for key, body in read("SELECT contract_key, body FROM events WHERE contract_key"):
            by_key[key].append(event_from_store(body))
        now = from_us(now_us)
        for key in keys:
            evs = by_key.get(key)
            if not evs:
                continue
            docs = self.assemble(evs)
            found, due = reconcile(docs, now, self.policy)
            summary = summarize(docs)
            ex.scopes[key] = [_mismatch_row(f, key, None if f.orphan else key, now_us) for f in found]
            ex.rows[key] = _contract_row(key, docs, summary, due, now_us)
            ex.entities[key] = summary.entity or "none"
        return ex


# The examiner of an examining process (see start_examiner), built once per process.
_examiner: Examiner | None = None


def start_examiner(url: str, policy: Policy) -> None:
    """Initializer of a process that examines chunks for a pass (`examine_chunk`)."""
    global _examiner
    _examiner = Examiner(make_engine(url, writer=False), policy)


def examine_chunk(keys: list[str], now_us: int, run: bool) -> _Examined:
    if _examiner is None:  # pragma: no cover - the pool's initializer always ran
        raise RuntimeError("examiner not started")
    return _examiner.examine(keys, now_us, run)


class Reconciler:
    def __init__(self, engine: Engine, policy: Policy, clock_us: Callable[[], int],
                 read_engine: Engine | None = None,
                 examiners: Callable[[], Executor] | None = None):
        """`examiners` answers a pool of processes started with `start_examiner`, kept from pass to pass:
        they reconcile chunks while this one writes, so a pass uses every core. Without it, chunks are read
        and reconciled here in turn."""
        self.engine, self.policy, self.clock_us = engine, policy, clock_us
        self.read_engine = read_engine if read_engine is not None else engine
        self.examiner = Examiner(self.read_engine, policy)
        self.examiners = examiners

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
        pg_upkeep.refresh_statistics(self.engine)
        self._join_waiting(now_us, res, full)
        written = 0
        pool = self.examiners() if self.examiners is not None else None
        # An incremental pass lists each kind of key (marks, then windows due) once the chunks of the kind
        # before are written: a key of both kinds is then examined again only if an event changed it meanwhile.
        for batches in self._all_keys() if full else self._changed_keys(now_us):
            for examined in self._examined(pool, batches if full else _split(batches), now_us, full):
                with self.engine.begin() as conn:
                    new_lags = self._write(conn, examined, now_us, res)
                written += 1
                # A first full pass fills contracts and mismatches from nothing: their statistics are
                # refreshed as they double (after chunks 1, 2, 4, 8, ...), not only at the end.
                if full and written & (written - 1) == 0:
                    pg_upkeep.refresh_statistics(self.engine)
                for lag in new_lags:  # after the commit: a rolled-back chunk counts nothing
                    res.lags.add(*lag)
        if full:
            pg_upkeep.refresh_statistics(self.engine)
        res.seconds = round(time.perf_counter() - started, 6)
        return res

    # -- which contracts

    def _changed_keys(self, now_us: int) -> tuple[Iterator[list[str]], ...]:
        return self._paged(lambda last: _keys_after(dirty.c.contract_key, last, PASS_CHUNK)), self._due(now_us)

    def _due(self, now_us: int) -> Iterator[list[str]]:
        # All at once through the next_due index: paged in key order, the planner walks every contract's key
        # instead (SQLite does), and the pass would cost what the store's size costs.
        with self.read_engine.connect() as conn:
            due = sorted(conn.execute(select(contracts.c.contract_key)
                                      .where(contracts.c.next_due_us <= now_us)).scalars())
        for i in range(0, len(due), PASS_CHUNK):
            yield due[i:i + PASS_CHUNK]

    def _all_keys(self) -> tuple[Iterator[list[str]], ...]:
        """Every contract once: it has a row once a pass has seen it, and a dirty mark until then. Both tables
        are paged together in the store's key order, so that each chunk is a run of consecutive contracts
        (see Examiner.examine)."""
        def page(last: str | None) -> Any:
            # Each side limited on its own index: a limit on the union alone would sort every remaining key.
            both = union(*(select(_keys_after(key, last, FULL_CHUNK).subquery().c.k)
                           for key in (contracts.c.contract_key, dirty.c.contract_key))).subquery()
            return select(both.c.k).order_by(both.c.k).limit(FULL_CHUNK)
        return (self._paged(page),)

    def _paged(self, page: Callable[[str | None], Any]) -> Iterator[list[str]]:
        """Keys in order, page by page: `page` builds the query of the keys after the last one listed."""
        last: str | None = None
        while True:
            with self.read_engine.connect() as conn:
                keys = list(conn.execute(page(last)).scalars())
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
                self._write_findings(conn, {orphan_scope(ev): [] for ev in evs.values()}, now_us, res)
                res.resolved += len(joined)
        with self.engine.begin() as conn:
            due = waiting.past_grace(conn, now_us - to_us_delta(self.policy.orphan_grace), again=full)
            for i in range(0, len(due), CHUNK):
                part = due[i:i + CHUNK]
                scopes: dict[str, list[dict[str, Any]]] = {}
                for ev in self._events_by_pk(conn, part).values():
                    found, _ = reconcile(self.examiner.assemble([ev]), from_us(now_us), self.policy)
                    scope = orphan_scope(ev)
                    scopes[scope] = [_mismatch_row(f, scope, None, now_us) for f in found]
                self._write_findings(conn, scopes, now_us, res)
                waiting.mark_reported(conn, part)

    @staticmethod
    def _events_by_pk(conn: Connection, pks: list[int]) -> dict[int, Event]:
        out: dict[int, Event] = {}
        for i in range(0, len(pks), CHUNK):
            q = select(events.c.id, events.c.body).where(among(conn, events.c.id, pks[i:i + CHUNK]))
            for pk, body in conn.execute(q):
                out[pk] = event_from_store(body)
        return out

    # -- one chunk of contracts

    def _examined(self, pool: Executor | None, batches: Iterator[list[str]], now_us: int,
                  run: bool) -> Iterator[_Examined]:
        """Each chunk examined, in order; in a pool, a few chunks ahead of the one being written."""
        if pool is None:
            for keys in batches:
                yield self.examiner.examine(keys, now_us, run)
            return
        ahead: deque[Future[_Examined]] = deque()
        for keys in batches:
            ahead.append(pool.submit(examine_chunk, keys, now_us, run))
            if len(ahead) > AHEAD:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def _write(self, conn: Connection, ex: _Examined, now_us: int, res: PassResult) -> list[Lag]:
        """Write what _examine found; answers the hop lags that became known, to be counted once."""
        keys = list(ex.rows)
        prev: dict[str, Sequence[Any]] = {r[0]: r for r in driver_rows_among(conn, _STORED_ROWS, keys)} if keys else {}
        changed: list[tuple[Any, ...]] = []
        new_lags: list[Lag] = []
        for key, row in ex.rows.items():
            before = prev.get(key)
            if before is None or _compared(before) != _compared(row):
                changed.append(row)
            for at, hop in _LAG_AT:
                lag = row[at]
                if lag is not None and (before is None or before[at] is None):
                    new_lags.append((hop, ex.entities[key], lag))
        res.evaluated += len(ex.rows)
        self._write_findings(conn, ex.scopes, now_us, res)
        write_contracts(conn, changed, prev)
        _forget_marks(conn, ex.marks)
        return new_lags

    def _write_findings(self, conn: Connection, scopes: dict[str, list[dict[str, Any]]], now_us: int,
                        res: PassResult) -> None:
        """Open what is new, close what no longer holds, update what moved; one scope is one contract."""
        if not scopes:
            return
        current: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        names = list(scopes)
        # Through the driver, a whole chunk of a full pass at once: in statements of 500 scopes through
        # SQLAlchemy, these reads took 20 statements a chunk and a tenth of the pass worker's time.
        for i in range(0, len(names), FULL_CHUNK):
            for r in driver_rows_among(conn, _OPEN_IN_SCOPE, names[i:i + FULL_CHUNK]):
                current[(r[1], r[2], r[3])] = r
        inserts: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for scope, found in scopes.items():
            for row in found:
                old = current.pop((scope, row["kind"], row["subject"]), None)
                if old is None:
                    inserts.append(row)
                elif (old[4], old[5], old[6], old[7]) != (row["amount_at_risk"], row["currency"], row["evidence"],
                                                          row["leakage_micros"]):
                    changes.append({"id": old[0], **{k: row[k] for k in _MOVABLE}})
        insert_rows(conn, mismatches, inserts)
        update_rows(conn, mismatches, changes)
        update_rows(conn, mismatches, [{"id": old[0], "state": "closed", "closed_us": now_us}
                                       for old in current.values()])
        res.opened += len(inserts)
        res.updated += len(changes)
        res.closed += len(current)


_OPEN_IN_SCOPE = ("SELECT id, scope, kind, subject, amount_at_risk, currency, evidence, leakage_micros "
                  "FROM mismatches WHERE state = 'open' AND scope")
# What a pass may change of a mismatch that still holds.
_MOVABLE = ("amount_at_risk", "amount_micros", "currency", "evidence", "leakage_micros")
TOTALLED = ("booked_micros", "invoiced_micros", "posted_micros", "collected_micros")
# The contracts table's columns as the pass writes them; rows travel as tuples in this order.
CONTRACT_COLUMNS = ("contract_key", "stage", "currency", "entity", "ordered_us", "next_due_us", *TOTALLED,
                    *LAG_COLUMNS.values(), "updated_us")
_STORED_ROWS = f"SELECT {', '.join(CONTRACT_COLUMNS)} FROM contracts WHERE contract_key"
_STAGE, _CURRENCY = CONTRACT_COLUMNS.index("stage"), CONTRACT_COLUMNS.index("currency")
_TOTALLED_AT = tuple(CONTRACT_COLUMNS.index(name) for name in TOTALLED)
_LAG_AT = tuple((CONTRACT_COLUMNS.index(col), hop) for hop, col in LAG_COLUMNS.items())
# A row that differs from the stored one in nothing but when it was computed is not written again.
_compared = itemgetter(*(i for i, name in enumerate(CONTRACT_COLUMNS) if name != "updated_us"))


def write_contracts(conn: Connection, rows: list[tuple[Any, ...]], prev: dict[str, Sequence[Any]]) -> None:
    """Write these contracts' rows (in CONTRACT_COLUMNS order) over their stored ones `prev`, and what they
    change of the totals read beside them: money by currency and stage, lags by bucket."""
    # Only a pass writes contracts, one pass at a time (pass_lock), and none is ever deleted: a key absent
    # from `prev`, read in this transaction, is absent until it commits.
    insert_tuples(conn, contracts, CONTRACT_COLUMNS, [r for r in rows if r[0] not in prev])
    upsert_tuples(conn, contracts, CONTRACT_COLUMNS, [r for r in rows if r[0] in prev], ["contract_key"])
    add_to(conn, contract_totals, _total_deltas(rows, prev), ["currency", "stage"])
    add_to(conn, lag_buckets, lag_bucket_deltas(_lag_changes(rows, prev)), ["hop", "bucket"])


def _keys_after(key: Any, last: str | None, size: int) -> Any:
    """Up to `size` values of a key column after `last`, in order, by its index."""
    q = select(key.label("k")).order_by(key).limit(size)
    return q if last is None else q.where(key > last)


def _split(batches: Iterator[list[str]]) -> Iterator[list[str]]:
    for keys in batches:
        for i in range(0, len(keys), SPLIT):
            yield keys[i:i + SPLIT]


def _total_deltas(rows: list[tuple[Any, ...]], prev: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """What the changed rows add to (and their old versions take from) contract_totals."""
    deltas: dict[tuple[str, str], dict[str, int]] = {}

    def add(row: Sequence[Any], sign: int) -> None:
        d = deltas.setdefault((row[_CURRENCY] or "", row[_STAGE]), dict.fromkeys(("contracts", *TOTALLED), 0))
        d["contracts"] += sign
        for name, at in zip(TOTALLED, _TOTALLED_AT, strict=True):
            d[name] += sign * row[at]

    for row in rows:
        old = prev.get(row[0])
        if old is not None:
            add(old, -1)
        add(row, 1)
    return [{"currency": cur, "stage": stage, **d} for (cur, stage), d in sorted(deltas.items())
            if any(d.values())]


def _lag_changes(rows: list[tuple[Any, ...]], prev: dict[str, Sequence[Any]]) -> Iterator[tuple[str, Any, Any]]:
    for row in rows:
        old = prev.get(row[0])
        for at, hop in _LAG_AT:
            yield hop, None if old is None else old[at], row[at]


def _mismatch_row(f: Finding, scope: str, contract_id: str | None, now_us: int) -> dict[str, Any]:
    return {"scope": scope, "kind": f.kind, "subject": f.subject, "contract_id": contract_id, "state": "open",
            "amount_at_risk": show(f.amount), "amount_micros": to_micros(f.amount), "currency": f.currency,
            "leakage_micros": None if f.leakage is None else to_micros(f.leakage), "detected_us": now_us,
            "closed_us": None, "evidence": orjson.dumps(list(f.evidence)).decode()}


def _contract_row(key: str, docs: Documents, s: Summary, due: datetime | None, now_us: int) -> tuple[Any, ...]:
    """The contract's row, in CONTRACT_COLUMNS order."""
    ordered = s.stages.get("ordered")
    first_at = ordered.at if ordered is not None else docs.latest_at
    return (key, s.stage, s.currency, s.entity, to_us(first_at) if first_at is not None else None,
            to_us(due) if due is not None else None, to_micros(s.amount("ordered")),
            to_micros(s.amount("invoiced")), to_micros(s.amount("posted")), to_micros(s.amount("paid")),
            *(s.lags[hop] for hop in LAG_COLUMNS), now_us)


def _forget_marks(conn: Connection, marks: dict[str, int]) -> None:
    """Remove the dirty marks the pass saw; one whose token changed since (a new event) stays. One statement
    for the chunk on PostgreSQL (the marks as two arrays), the driver's executemany on SQLite: neither
    builds a statement per mark."""
    if not marks:
        return
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            cur.execute("DELETE FROM dirty d USING unnest(%b::text[], %b::bigint[]) AS m(key, token) "
                        "WHERE d.contract_key = m.key AND d.token = m.token", (list(marks), list(marks.values())))
        return
    conn.exec_driver_sql("DELETE FROM dirty WHERE contract_key = ? AND token = ?", list(marks.items()))
