"""Crash safety, from outside: `revtrace serve` is killed with SIGKILL at 20 random moments of an ingest and
restarted, while clients retry every batch they got no answer for. Every acknowledged event must be stored
exactly once, replays must come back as duplicates, and what the API shows afterwards must equal a run of the
same stream with no crash. The same holds when the server runs on and its PostgreSQL goes away 20 times
instead, every request it refuses meanwhile answered 503. The larger run is `python -m benchmarks.crash`
(see benchmarks/crash.py)."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.crash import check_crash_safety
from benchmarks.crash_report import Report
from benchmarks.crash_run import Options
from benchmarks.crash_store import scratch_database

# Small enough for CI's two cores, large enough that 20 kills spread over 40 batches of a real ingest.
OPTIONS = Options(events=20_000, faults=20, seed=11, batch_size=500, clients=4)

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_reference_url(pg_url: str) -> Iterator[str]:
    """A second fresh PostgreSQL database, beside pg_url's, for the run without crashes."""
    with scratch_database(pg_url) as url:
        yield url


def assert_crash_safe(report: Report) -> None:
    text = report.text()
    print(text)  # the figures, shown with -s
    crash = report.crash
    assert crash.faults.done >= 20, text
    assert (crash.store.lost, crash.store.doubled, crash.store.unexpected) == (0, 0, 0), text
    assert crash.ledger.accepted + crash.ledger.retry_duplicates == report.events, text
    assert crash.replay_events > 0 and crash.replay_duplicates == crash.replay_events, text
    assert report.differences == [], text
    assert sum(report.reference.outcome.open_mismatches.values()) > 0, text  # the comparison has substance
    assert report.problems() == [], text


def test_sigkill_during_ingest_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    report = check_crash_safety(sqlite_url, f"sqlite:///{tmp_path}/reference.db", OPTIONS, tmp_path)
    assert_crash_safe(report)


@pytest.mark.postgres
def test_sigkill_during_ingest_postgresql(pg_url: str, pg_reference_url: str, tmp_path: Path) -> None:
    report = check_crash_safety(pg_url, pg_reference_url, OPTIONS, tmp_path)
    assert_crash_safe(report)


@pytest.mark.postgres
def test_database_outages_during_ingest_postgresql(pg_url: str, pg_reference_url: str, tmp_path: Path) -> None:
    report = check_crash_safety(pg_url, pg_reference_url, dataclasses.replace(OPTIONS, fault="outage"), tmp_path)
    assert_crash_safe(report)
    crash = report.crash
    assert crash.restarts == 0, report.text()  # the server rode the outages out
    # The outages were felt, and answered as the store being unavailable, never as another error.
    assert crash.ledger.errors[503] > 0 and set(crash.ledger.errors) <= {429, 503}, report.text()
