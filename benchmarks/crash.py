"""Crash safety: `revtrace serve` is killed with SIGKILL at random moments of a large ingest and restarted on the
same store, while clients retry every batch whose answer they did not get. Afterwards every acknowledged event
must be stored exactly once, replays must come back as duplicates, and the traces and open mismatches must
equal those of a run of the same stream with no crash.

    python -m benchmarks.crash --db sqlite|postgresql --events N --kills K --seed S

The same harness runs, smaller, in tests/test_crash.py."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from collector.db import make_engine, normalize_url

DESCRIPTION = "Kill revtrace serve during a large ingest; compare with a run without crashes."
ROOT = Path(__file__).resolve().parents[1]
EVENTS_PATH = "/api/v1/events"
EVALUATE_PATH = "/api/v1/admin/evaluate"
PG_ADMIN_DEFAULT = os.environ.get("REVTRACE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CURRENCIES = {"USD": "US01", "EUR": "DE01", "GBP": "GB01"}
# Each contract is clean or carries one fault; the faults are chosen so that the open mismatches of the run
# cover most kinds and the comparison with the reference run means something.
FAULTS = (("clean", 70), ("missing_invoice", 5), ("over_billed", 5), ("missing_posting", 4), ("unpaid", 5),
          ("tax", 3), ("duplicate_invoice", 3), ("void_reissue", 3), ("void_unreversed", 2))
MAX_ATTEMPTS = 500  # per batch; far above what any kill plan needs, so only a server that never answers hits it
MAX_SETTLE_PASSES = 20
READY_TIMEOUT = 120.0
PASS_TIMEOUT = 1800.0  # a full pass over a large store takes minutes; waiting is not what is tested here


class HarnessError(RuntimeError):
    """The run could not go on (a server that does not come back, an answer that makes no sense)."""


@dataclass(frozen=True)
class Options:
    events: int = 20_000
    kills: int = 20
    seed: int = 1
    batch_size: int = 500
    clients: int = 4
    max_kill_delay: float = 0.5
    replay_batches: int = 5
    read_concurrency: int = 8
    # Incremental passes asked for all along the ingest: restarts come faster than the scheduler's first
    # pass after a start, and without these no kill would land in a pass.
    evaluate_during_ingest: bool = True
    request_timeout: float = 120.0


# -- the event stream


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


# -- the server under test


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`revtrace serve` as a child process on one store and one port, started again after each kill."""

    def __init__(self, database_url: str, workdir: Path, name: str, token: str):
        self.database_url, self.workdir, self.token = database_url, workdir, token
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(REVTRACE_DATABASE_URL=self.database_url, REVTRACE_LISTEN=f"127.0.0.1:{self.port}",
                   REVTRACE_ADMIN_TOKEN=self.token, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
        return env

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            # cwd is the work directory, so that a revtrace.yaml lying in the caller's directory is not read.
            self.proc = subprocess.Popen([sys.executable, "-m", "revtrace", "serve"], cwd=self.workdir,
                                         env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        await self._ready()

    async def _ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise HarnessError(f"revtrace serve exited during start {self.starts}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.base + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise HarnessError(f"revtrace serve not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    async def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs; a no-op when already gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            await self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- the client


@dataclass
class Ledger:
    """What the clients saw: only a 200 answer acknowledges a batch."""
    batches: int
    acked: int = 0
    attempts: int = 0
    in_flight: int = 0
    events_acked: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    committed_unanswered: int = 0  # retried batches answered all-duplicate: the lost answer's commit held
    retry_duplicates: int = 0  # duplicates answered to retries (the first attempt's commit held)
    partial: int = 0  # answers neither all-new nor all-duplicate: a batch split across commits
    latency: float = 0.2  # seconds, a moving average of answered requests
    errors: Counter[int] = field(default_factory=Counter)  # answers other than 200, by status
    acked_batches: set[int] = field(default_factory=set)

    def record(self, index: int, attempt: int, size: int, answer: dict[str, Any]) -> None:
        if index in self.acked_batches:
            raise HarnessError(f"batch {index} acknowledged twice")
        accepted, dups, rejected = int(answer["accepted"]), int(answer["duplicates"]), len(answer["rejected"])
        if accepted + dups + rejected != size:
            raise HarnessError(f"batch {index}: answer {answer} does not add up to {size} events")
        self.acked_batches.add(index)
        self.acked += 1
        self.events_acked += size
        self.accepted += accepted
        self.duplicates += dups
        self.rejected += rejected
        if attempt > 1:
            self.retry_duplicates += dups
            self.committed_unanswered += dups == size
        if 0 < dups < size:
            self.partial += 1


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _deliver(session: aiohttp.ClientSession, server: ServerProcess, index: int, body: bytes, size: int,
                   ledger: Ledger) -> None:
    """Send one batch until it is answered 200; anything else (no answer, 429, 5xx) means the same batch
    again, after a pause that lets a killed server come back."""
    pause, last = 0.05, ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        ledger.attempts += 1
        ledger.in_flight += 1
        status, retry_after = None, None
        sent_at = time.monotonic()
        try:
            async with session.post(server.base + EVENTS_PATH, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                status, raw = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, last = None, f"{type(exc).__name__}: {exc}"
        finally:
            ledger.in_flight -= 1
        if status == 200:
            ledger.latency = 0.8 * ledger.latency + 0.2 * (time.monotonic() - sent_at)
            ledger.record(index, attempt, size, orjson.loads(raw))
            return
        if status is not None:
            ledger.errors[status] += 1
            last = f"HTTP {status}: {raw[:300]!r}"
            if status != 429 and status < 500:
                raise HarnessError(f"batch {index}: {last}")
        await asyncio.sleep(float(retry_after) if retry_after and retry_after.isdigit() else pause)
        pause = min(pause * 2, 0.25)
    raise HarnessError(f"batch {index}: no 200 after {MAX_ATTEMPTS} attempts; last: {last}\n{server.log_tail()}")


@dataclass
class KillLog:
    planned: int = 0
    done: int = 0
    mid_request: int = 0  # kills with at least one request waiting for its answer
    passes: int = 0  # incremental passes asked for during the ingest and answered
    passes_cut: int = 0  # ... and cut short by a kill
    pass_errors: Counter[int] = field(default_factory=Counter)  # ... and answered otherwise, by status


async def _ingest(session: aiohttp.ClientSession, server: ServerProcess, stream: Stream, opts: Options,
                  thresholds: list[int], rng: random.Random) -> tuple[Ledger, KillLog]:
    """Send every batch with `opts.clients` concurrent clients, killing and restarting the server once the
    number of acknowledged batches reaches each threshold. Clients may run only a few batches past the next
    threshold: without that the ingest outruns the restarts, and most kills would fall on a drained
    stream instead of spreading over it. The last batch waits for the last kill, so every kill falls in the
    ingest."""
    n = len(stream.batches)
    ledger, kills = Ledger(n), KillLog(planned=len(thresholds))
    gate = asyncio.Condition()
    ahead = 2 * opts.clients
    allowed = n if not thresholds else min(thresholds[0] + ahead, n - 1)
    todo = iter(range(n))

    async def open_to(limit: int) -> None:
        nonlocal allowed
        async with gate:
            allowed = limit
            gate.notify_all()

    async def client() -> None:
        for i in todo:
            async with gate:
                await gate.wait_for(lambda: i < allowed)  # noqa: B023 - waited for before i moves on
            await _deliver(session, server, i, stream.bodies[i], len(stream.batches[i]), ledger)

    async def killer() -> None:
        for t in thresholds:
            await open_to(max(allowed, min(t + ahead, n - 1)))
            while ledger.acked < t:
                await asyncio.sleep(0.005)
            # A random moment within about one request's time, so that kills land in requests and in commits;
            # a moment between requests is drawn again (a kill there tests little), unless none can start.
            for _ in range(20):
                await asyncio.sleep(rng.uniform(0, min(opts.max_kill_delay, 1.5 * ledger.latency)))
                if ledger.in_flight or ledger.acked >= allowed:
                    break
            kills.mid_request += ledger.in_flight > 0
            await server.kill()
            kills.done += 1
            await server.start()
        await open_to(n)

    async def evaluator(clients: list[asyncio.Task[None]]) -> None:
        while not all(c.done() for c in clients):
            status: int | None = None
            try:
                status, _ = await _request(session, "POST", server.base + EVALUATE_PATH, b"{}")
            except aiohttp.ClientConnectorError:  # the server is down: no pass was under way
                pass
            except (aiohttp.ClientError, TimeoutError):
                kills.passes_cut += 1
            kills.passes += status == 200
            if status is not None and status != 200:
                kills.pass_errors[status] += 1
            await asyncio.sleep(0.1 if status == 200 else 0.25)

    async with asyncio.TaskGroup() as tg:
        clients = [tg.create_task(client()) for _ in range(opts.clients)]
        tg.create_task(killer())
        if opts.evaluate_during_ingest:
            tg.create_task(evaluator(clients))
    return ledger, kills


def kill_thresholds(batches: int, kills: int, rng: random.Random) -> list[int]:
    """Acknowledged-batch counts spread over the whole ingest (never the last batch, held back until the end);
    with more kills than batches some counts repeat, and the server is killed again soon after a restart."""
    choices = range(1, max(2, batches - 1))
    picked = rng.sample(choices, kills) if kills <= len(choices) else rng.choices(choices, k=kills)
    return sorted(picked)


# -- reading the outcome


async def _request(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                   timeout: float | None = None) -> tuple[int, Any]:
    data = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
    limit = aiohttp.ClientTimeout(total=timeout) if timeout else session.timeout
    async with session.request(method, url, data=data, headers={"Content-Type": "application/json"},
                               timeout=limit) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None


async def _evaluate(session: aiohttp.ClientSession, server: ServerProcess, full: bool) -> dict[str, Any]:
    status, answer = await _request(session, "POST", server.base + EVALUATE_PATH, {"full": full}, PASS_TIMEOUT)
    if status != 200:
        raise HarnessError(f"evaluate: HTTP {status}: {answer}")
    return dict(answer)


def _changed(result: dict[str, Any]) -> bool:
    return any(result.get(k) for k in ("opened", "closed", "updated", "resolved"))


async def _settle(session: aiohttp.ClientSession, server: ServerProcess) -> int | None:
    """Incremental passes until one changes nothing: their count, or None when they never settle."""
    for n in range(1, MAX_SETTLE_PASSES + 1):
        if not _changed(await _evaluate(session, server, False)):
            return n
    return None


MismatchKey = tuple[str, str, str, str, tuple[str, ...]]


def _mismatch_key(m: dict[str, Any]) -> MismatchKey:
    return (m["kind"], m["contract_id"] or "", m["amount_at_risk"], m["currency"], tuple(sorted(m["evidence"])))


@dataclass
class Outcome:
    traces: dict[str, Any]
    contracts: dict[str, Any]
    open_mismatches: Counter[MismatchKey]
    closed: int  # mismatches that opened and closed again: not compared, since arrival order decides them


async def _pages(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page_url = url + ("&cursor=" + cursor if cursor else "")
        status, page = await _request(session, "GET", page_url)
        if status != 200:
            raise HarnessError(f"GET {page_url}: HTTP {status}: {page}")
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def read_outcome(session: aiohttp.ClientSession, server: ServerProcess, contract_ids: list[str],
                       concurrency: int) -> Outcome:
    """Everything a user can see of the result: each contract's trace (closed mismatches left out: when a
    transient one opened and closed depends on arrival order), the contract list and the open mismatches."""
    traces: dict[str, Any] = {}
    todo = iter(contract_ids)

    async def reader() -> None:
        for cid in todo:
            status, trace = await _request(session, "GET", f"{server.base}/api/v1/contracts/{cid}")
            if status == 404:
                traces[cid] = None
                continue
            if status != 200:
                raise HarnessError(f"GET contract {cid}: HTTP {status}: {trace}")
            opened = sorted(_mismatch_key(m) for m in trace["mismatches"] if m["state"] == "open")
            traces[cid] = {"stage": trace.get("stage"), "stages": trace["stages"], "lags": trace["lags"],
                           "events": trace["events"], "open_mismatches": opened}

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(reader())
    rows = await _pages(session, f"{server.base}/api/v1/contracts?limit=1000")
    open_ = await _pages(session, f"{server.base}/api/v1/mismatches?state=open&limit=1000")
    closed = await _pages(session, f"{server.base}/api/v1/mismatches?state=closed&limit=1000")
    return Outcome(traces, {r["contract_id"]: r for r in rows}, Counter(_mismatch_key(m) for m in open_),
                   len(closed))


def compare(crash: Outcome, reference: Outcome, limit: int = 5) -> list[str]:
    """What differs between two outcomes, one line per sort of difference; empty when equal."""
    out: list[str] = []
    for name in ("traces", "contracts"):
        a, b = getattr(crash, name), getattr(reference, name)
        differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if differing:
            out.append(f"{len(differing)} {name} differ, e.g. {differing[:limit]}")
    extra = crash.open_mismatches - reference.open_mismatches
    missing = reference.open_mismatches - crash.open_mismatches
    if extra:
        out.append(f"{sum(extra.values())} open mismatches only after the crashes, e.g. {list(extra)[:limit]}")
    if missing:
        out.append(f"{sum(missing.values())} open mismatches only without crashes, e.g. {list(missing)[:limit]}")
    return out


# -- the store, read directly


@dataclass
class StoreCheck:
    stored: int
    lost: int  # acknowledged, not stored
    doubled: int  # (source, event_id) stored more than once
    unexpected: int  # stored, never sent


def check_store(database_url: str, acknowledged: set[tuple[str, str]]) -> StoreCheck:
    engine = make_engine(database_url, writer=False)
    try:
        with engine.connect() as conn:
            doubled = conn.execute(text(
                "SELECT source, event_id, count(*) FROM events GROUP BY 1, 2 HAVING count(*) > 1")).all()
            stored = {(r[0], r[1]) for r in conn.execute(text("SELECT source, event_id FROM events"))}
    finally:
        engine.dispose()
    return StoreCheck(len(stored), len(acknowledged - stored), len(doubled), len(stored - acknowledged))


# -- one run, and the whole check


@dataclass
class RunResult:
    ledger: Ledger
    kills: KillLog
    store: StoreCheck
    outcome: Outcome
    settle_passes: int | None
    full_pass: dict[str, Any]
    after_replay: dict[str, Any]
    replay_events: int
    replay_duplicates: int
    restarts: int
    ingest_seconds: float
    seconds: float


async def run_once(database_url: str, stream: Stream, opts: Options, workdir: Path, name: str,
                   kills: int) -> RunResult:
    started = time.monotonic()
    rng = random.Random(opts.seed * 7919 + kills)
    token = secrets.token_urlsafe(16)
    server = ServerProcess(database_url, workdir, name, token)
    timeout = aiohttp.ClientTimeout(total=opts.request_timeout)
    connector = aiohttp.TCPConnector(limit=max(opts.clients, opts.read_concurrency) + 4)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=_auth(token), connector=connector) as session:
            await server.start()
            ledger, kill_log = await _ingest(session, server, stream, opts,
                                             kill_thresholds(len(stream.batches), kills, rng) if kills else [], rng)
            ingest_seconds = time.monotonic() - started
            if not server.alive:
                await server.start()
            passes = await _settle(session, server)
            full = await _evaluate(session, server, True)
            outcome = await read_outcome(session, server, stream.contracts, opts.read_concurrency)
            replay_events, replay_dups = await _replay(session, server, stream, opts, rng)
            after = await _evaluate(session, server, False)
        await server.stop()
    finally:
        if server.alive:
            await server.kill()
    acknowledged = {(e["source"], e["event_id"]) for i in ledger.acked_batches for e in stream.batches[i]}
    store = await asyncio.to_thread(check_store, database_url, acknowledged)
    return RunResult(ledger, kill_log, store, outcome, passes, full, after, replay_events, replay_dups,
                     server.starts - 1, ingest_seconds, time.monotonic() - started)


async def _replay(session: aiohttp.ClientSession, server: ServerProcess, stream: Stream, opts: Options,
                  rng: random.Random) -> tuple[int, int]:
    """Send acknowledged batches again, as sent and mixed into a new batch: all must come back duplicates."""
    picked = rng.sample(range(len(stream.batches)), min(opts.replay_batches, len(stream.batches)))
    mixed = rng.sample([e for b in stream.batches for e in b], min(opts.batch_size, stream.events))
    bodies = [stream.bodies[i] for i in picked] + [orjson.dumps(mixed)]
    sent = dups = 0
    for body in bodies:
        status, answer = await _request(session, "POST", server.base + EVENTS_PATH, body)
        if status != 200:
            raise HarnessError(f"replay: HTTP {status}: {answer}")
        sent += int(answer["accepted"]) + int(answer["duplicates"]) + len(answer["rejected"])
        dups += int(answer["duplicates"])
    return sent, dups


@dataclass
class Report:
    db: str
    events: int
    batches: int
    contracts: int
    crash: RunResult
    reference: RunResult
    differences: list[str]

    def open_by_kind(self) -> dict[str, int]:
        tally: Counter[str] = Counter()
        for key, n in self.reference.outcome.open_mismatches.items():
            tally[key[0]] += n
        return dict(sorted(tally.items()))

    def problems(self) -> list[str]:
        out: list[str] = []
        c, r = self.crash, self.reference
        if c.kills.done < c.kills.planned:
            out.append(f"only {c.kills.done} of {c.kills.planned} kills landed during the ingest")
        for name, run in (("crash run", c), ("reference run", r)):
            s, led = run.store, run.ledger
            if s.lost or s.doubled or s.unexpected:
                out.append(f"{name}: {s.lost} lost, {s.doubled} doubled, {s.unexpected} stored but never sent")
            # The stream holds each event once, so a duplicate can only be the answer to a retry whose first
            # attempt was committed: every event is answered as new exactly once, or is such a duplicate.
            if led.accepted + led.retry_duplicates != self.events or led.duplicates != led.retry_duplicates:
                out.append(f"{name}: {led.accepted} events answered as new and {led.retry_duplicates} as duplicates "
                           f"of an unanswered attempt (of {led.duplicates} duplicates); "
                           f"{self.events} distinct events sent")
            if any(s >= 500 for s in led.errors) or run.kills.pass_errors:
                out.append(f"{name}: server errors: ingest {dict(led.errors)}, passes {dict(run.kills.pass_errors)}")
            if led.partial or led.rejected:
                out.append(f"{name}: {led.partial} answers split between new and duplicate, {led.rejected} rejected")
            if run.replay_duplicates != run.replay_events:
                out.append(f"{name}: replay of {run.replay_events} events answered {run.replay_duplicates} duplicates")
            if run.settle_passes is None:
                out.append(f"{name}: incremental passes still changing after {MAX_SETTLE_PASSES}")
            if _changed(run.full_pass):
                out.append(f"{name}: the full pass disagrees with the incremental ones: {run.full_pass}")
            if _changed(run.after_replay):
                out.append(f"{name}: the pass after the replay changed something: {run.after_replay}")
        if r.ledger.duplicates:
            out.append(f"reference run: {r.ledger.duplicates} duplicates answered in a run without retries")
        out.extend(f"outcome: {d}" for d in self.differences)
        return out

    def text(self) -> str:
        c, r = self.crash, self.reference
        led = c.ledger
        lines = [
            f"db {self.db}: {self.events} events in {self.batches} batches, {self.contracts} contracts",
            f"kills {c.kills.done} of {c.kills.planned} planned ({c.kills.mid_request} with a request in flight), "
            f"restarts {c.restarts}; passes during the ingest {c.kills.passes} answered, "
            f"{c.kills.passes_cut} cut short",
            f"batches sent {led.attempts} (retries {led.attempts - led.acked}), batches acknowledged {led.acked}, "
            f"answers other than 200 {dict(led.errors)}",
            f"events acknowledged {led.events_acked}, acknowledged as new {led.accepted}, "
            f"duplicates answered {led.duplicates}, of them to retries {led.retry_duplicates} (batches committed "
            f"but unanswered, then retried: {led.committed_unanswered}), partial answers {led.partial}",
            f"store: {c.store.stored} stored, lost {c.store.lost}, doubled {c.store.doubled}, "
            f"unexpected {c.store.unexpected}",
            f"replay: {c.replay_duplicates} of {c.replay_events} answered as duplicates",
            f"passes to settle {c.settle_passes}, full pass {_brief(c.full_pass)}, "
            f"after replay {_brief(c.after_replay)}",
            f"reference: {r.ledger.accepted} new, {r.ledger.duplicates} duplicates, lost {r.store.lost}, "
            f"doubled {r.store.doubled}, passes to settle {r.settle_passes}, full pass {_brief(r.full_pass)}",
            f"open mismatches {sum(r.outcome.open_mismatches.values())}: {self.open_by_kind()}; closed (not "
            f"compared) {c.outcome.closed} after the crashes, {r.outcome.closed} without",
            "outcome equal to the run without crashes" if not self.differences else
            "outcome DIFFERS: " + "; ".join(self.differences),
            f"time: crash ingest {c.ingest_seconds:.1f} s, crash run {c.seconds:.1f} s, "
            f"reference run {r.seconds:.1f} s",
        ]
        problems = self.problems()
        lines.append("PROBLEMS:\n  " + "\n  ".join(problems) if problems else "no problems")
        return "\n".join(lines)


def _brief(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {result.get(k)}" for k in ("evaluated", "opened", "closed", "updated", "resolved"))


def check_crash_safety(crash_url: str, reference_url: str, opts: Options, workdir: Path) -> Report:
    """The whole check: the stream into `crash_url` with kills, then into `reference_url` without, compared.
    Both URLs name fresh, empty stores of the same kind."""
    # One `now` for both runs, a whole hour, so that the stream is the same and far from every window's edge.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    stream = build_stream(opts.events, opts.seed, opts.batch_size, now)
    crash = asyncio.run(run_once(crash_url, stream, opts, workdir, "crash", opts.kills))
    reference = asyncio.run(run_once(reference_url, stream, opts, workdir, "reference", 0))
    return Report(make_url(normalize_url(crash_url)).get_backend_name(), stream.events, len(stream.batches),
                  len(stream.contracts), crash, reference, compare(crash.outcome, reference.outcome))


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `server_url`, dropped afterwards."""
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"revtrace_crash_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield normalize_url(server_url).rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.crash", description=DESCRIPTION)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--events", type=int, default=Options.events)
    ap.add_argument("--kills", type=int, default=Options.kills)
    ap.add_argument("--seed", type=int, default=Options.seed)
    ap.add_argument("--batch-size", type=int, default=Options.batch_size)
    ap.add_argument("--clients", type=int, default=Options.clients)
    ap.add_argument("--max-kill-delay", type=float, default=Options.max_kill_delay, help="seconds")
    ap.add_argument("--pg", default=PG_ADMIN_DEFAULT, help="a PostgreSQL URL on the server to create databases on")
    ap.add_argument("--workdir", type=Path, help="keep stores (SQLite) and server logs here")
    args = ap.parse_args(argv)
    opts = Options(events=args.events, kills=args.kills, seed=args.seed, batch_size=args.batch_size,
                   clients=args.clients, max_kill_delay=args.max_kill_delay)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="revtrace-crash-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.db == "sqlite":
            stores = (workdir / "crash.db", workdir / "reference.db")
            if any(p.exists() for p in stores):
                ap.error(f"{workdir} already holds a crash.db or reference.db; the runs need fresh stores")
            urls = (f"sqlite:///{stores[0]}", f"sqlite:///{stores[1]}")
        else:
            urls = (stack.enter_context(scratch_database(args.pg)), stack.enter_context(scratch_database(args.pg)))
        report = check_crash_safety(urls[0], urls[1], opts, workdir)
        print(report.text())
        return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
