"""The store's ingest transaction where replicas race: an event another writer committed between the check
for stored events and the insert is answered as a duplicate, and stored once."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from collector import bulk
from collector.db import make_engine, upgrade
from collector.ingest import EventStore
from collector.model import parse_event
from collector.schema import events, ref_map
from tests.builders import invoice, order


def test_an_event_committed_meanwhile_by_another_replica_is_a_duplicate(pg_url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    store = EventStore(engine, lambda: 1_700_000_000_000_000)
    first, second = parse_event(order("C1")), parse_event(invoice("C1"))
    assert store.store([first]).new == [True]

    # As if the other replica committed `first` just after this one looked for stored events.
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
