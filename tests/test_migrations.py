"""Schema migrations: upgrade from each earlier revision keeps what the store holds, on both databases."""
from __future__ import annotations

import orjson
from sqlalchemy import func, inspect, select, text

from collector.db import downgrade, make_engine, upgrade
from collector.schema import contract_totals, mismatches, waiting
from tests.builders import World, clean, payment


def test_upgrading_a_0002_store_keeps_its_waiting_events_and_totals(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0002")
        orphan = payment(None, owner="Z")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO events (source, event_id, type, at_us, contract_key, received_us, body) "
                              "VALUES ('payment', :eid, 'payment.succeeded', 0, NULL, 0, :body)"),
                         {"eid": orphan["event_id"], "body": orjson.dumps(orphan).decode()})
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(waiting)).scalar() == 1
        world = World(engine)
        world.ingest(*clean("A"))
        world.evaluate()
        assert world.open() == [("orphan_payment", None, "1080.00", "USD")]
        with engine.connect() as conn:
            assert conn.execute(select(func.sum(contract_totals.c.contracts))).scalar() == 1
            assert conn.execute(select(func.count()).select_from(mismatches)).scalar() == 1
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        downgrade(engine, "0001")
        with engine.connect() as conn:
            assert "waiting" not in inspect(conn).get_table_names()
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(waiting)).scalar() == 0
    finally:
        engine.dispose()
