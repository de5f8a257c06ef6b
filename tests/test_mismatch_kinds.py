"""One test per mismatch kind of DESIGN.md: it opens with its amount at risk, and closes (history kept)
when the late or corrective document arrives."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from collector.db import make_engine, upgrade
from tests.builders import T0, D, H, World, clean, event, invoice, order, payment, posting, world_on


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    with world_on(sqlite_url) as w:
        yield w


def test_a_clean_contract_has_no_mismatch(world: World) -> None:
    world.ingest(*clean())
    world.evaluate()
    assert world.open() == []


def test_missing_invoice_opens_after_the_window_and_closes_when_the_invoice_arrives(world: World) -> None:
    world.ingest(order())
    world.now = T0 + 23 * H
    world.evaluate()
    assert world.open() == []  # the 24 h window has not passed
    world.now = T0 + 25 * H
    world.evaluate()
    assert world.open() == [("missing_invoice", "C1", "1000.00", "USD")]
    world.ingest(invoice(at=T0 + 2 * H), posting(at=T0 + 2 * H + 5 * timedelta(minutes=1)))
    res = world.evaluate()
    assert res.closed == 1
    assert world.open() == []
    assert world.closed() == [("missing_invoice", "C1")]


def test_a_cancelled_order_expects_no_invoice(world: World) -> None:
    world.ingest(order(), event("C1-x", "order.cancelled", T0 + H))
    world.evaluate()
    assert world.open() == []


def test_over_billing_opens_at_once_and_under_billing_after_the_window(world: World) -> None:
    world.ingest(order("A"), invoice("A", amount="1150.00"), posting("A", amount="1150.00"),
                 payment("A", amount="1230.00"))
    world.ingest(order("B"), invoice("B", amount="900.00"), posting("B", amount="900.00"),
                 payment("B", amount="980.00"))
    world.evaluate()
    assert world.open() == [("amount_mismatch", "A", "150.00", "USD"), ("amount_mismatch", "B", "100.00", "USD")]
    world.ingest(event("B-amend", "order.amended", T0 + 2 * H, "B", amount="900.00", currency="USD"))
    world.evaluate()
    assert world.open() == [("amount_mismatch", "A", "150.00", "USD")]


def test_under_billing_counts_as_leakage(world: World) -> None:
    world.ingest(order("B"), invoice("B", amount="900.00"), posting("B", amount="900.00"),
                 payment("B", amount="980.00"), order("M", amount="50.00"))
    world.evaluate()
    summary = world.reads().trace("B")
    assert summary is not None
    from collector.assurance import Assurance
    assert Assurance(world.engine).summary(None, None)["leakage"] == {"USD": "150.00"}


def test_posting_amount_and_overpayment_are_amount_mismatches(world: World) -> None:
    world.ingest(order(), invoice(), posting(amount="990.00"), payment(amount="1100.00"))
    world.evaluate()
    assert world.open() == [("amount_mismatch", "C1", "10.00", "USD"), ("amount_mismatch", "C1", "20.00", "USD")]
    world.ingest(event("C1-rev", "posting.reversed", T0 + 2 * H, refs={"posting_id": "C1-P1"}),
                 posting(n=2, at=T0 + 2 * H), payment(n=2, amount="20.00", type_="payment.refunded",
                                                       at=T0 + 4 * D))
    world.evaluate()
    assert world.open() == []
    assert len(world.closed()) == 2


def test_currency_mismatch_reports_the_document_in_its_own_currency_only(world: World) -> None:
    world.ingest(order(), invoice(amount="920.00", tax="0.00", currency="EUR"),
                 posting(amount="920.00", tax="0.00", currency="EUR"), payment(amount="920.00", currency="EUR"))
    world.evaluate()
    assert world.open() == [("currency_mismatch", "C1", "920.00", "EUR")] * 3


def test_missing_posting_opens_after_an_hour_and_closes_when_posted(world: World) -> None:
    world.ingest(order(), invoice(), payment())
    world.evaluate()
    assert world.open() == [("missing_posting", "C1", "1000.00", "USD")]
    world.ingest(posting(at=T0 + 5 * H))  # late, but present: the mismatch closes
    world.evaluate()
    assert world.open() == []
    assert world.closed() == [("missing_posting", "C1")]


def test_expected_hops_per_entity_turn_off_missing_posting(world: World) -> None:
    from collector.policy import Policy
    world.policy = Policy(expected_by_entity={"US01": frozenset({"invoice", "payment"})})
    world.ingest(order(), invoice(), payment())
    world.evaluate()
    assert world.open() == []


def test_tax_and_entity_mismatch(world: World) -> None:
    world.ingest(order("T"), invoice("T"), posting("T", tax="70.00"), payment("T"))
    world.ingest(order("E"), invoice("E"), posting("E", entity="DE01"), payment("E"))
    world.evaluate()
    assert world.open() == [("entity_mismatch", "E", "1000.00", "USD"), ("tax_mismatch", "T", "10.00", "USD")]


def test_duplicate_invoice_is_reported_once_and_left_out_of_the_totals(world: World) -> None:
    world.ingest(*clean(), invoice(n=2, at=T0 + 5 * H))
    world.evaluate()
    assert world.open() == [("duplicate_invoice", "C1", "1000.00", "USD")]
    world.ingest(event("C1-void2", "invoice.voided", T0 + 6 * H, refs={"invoice_id": "C1-I2"}))
    world.evaluate()
    assert world.open() == []


def test_an_invoice_a_day_later_is_no_duplicate(world: World) -> None:
    world.ingest(*clean(), invoice(n=2, at=T0 + 26 * H), posting(n=2, inv=2, at=T0 + 26 * H))
    world.evaluate()
    # billed twice the order, and the second invoice is unpaid
    assert world.open() == [("amount_mismatch", "C1", "1000.00", "USD"), ("unpaid_overdue", "C1", "1080.00", "USD")]


def test_duplicate_posting(world: World) -> None:
    world.ingest(*clean(), posting(n=2, at=T0 + 2 * H))
    world.evaluate()
    assert world.open() == [("duplicate_posting", "C1", "1000.00", "USD")]
    world.ingest(event("C1-rev2", "posting.reversed", T0 + 3 * H, refs={"posting_id": "C1-P2"}))
    world.evaluate()
    assert world.open() == []


def test_unpaid_overdue_opens_a_day_after_due_and_closes_when_paid(world: World) -> None:
    world.ingest(order(), invoice(), posting(), payment(amount="500.00"))
    world.now = T0 + H + 14 * D + 23 * H
    world.evaluate()
    assert world.open() == []
    world.now = T0 + H + 15 * D + H
    world.evaluate()
    assert world.open() == [("unpaid_overdue", "C1", "580.00", "USD")]
    world.ingest(payment(n=2, amount="580.00", at=T0 + 16 * D))
    world.evaluate()
    assert world.open() == []


def test_an_invoice_without_due_at_is_due_after_30_days(world: World) -> None:
    inv = invoice()
    del inv["due_at"]
    world.ingest(order(), inv, posting())
    world.now = T0 + H + 30 * D + 23 * H
    world.evaluate()
    assert world.open() == []
    world.now = T0 + H + 31 * D + H
    world.evaluate()
    assert world.open() == [("unpaid_overdue", "C1", "1080.00", "USD")]


def test_partial_refunds_reduce_what_was_paid(world: World) -> None:
    world.ingest(*clean(), payment(n=2, amount="80.00", type_="payment.refunded", at=T0 + 4 * D),
                 payment(n=3, amount="999.00", type_="payment.failed", at=T0 + 4 * D))
    world.evaluate()
    assert world.open() == [("unpaid_overdue", "C1", "80.00", "USD")]


def test_unreversed_posting_after_a_void(world: World) -> None:
    world.ingest(*clean(), event("C1-void", "invoice.voided", T0 + 2 * D, refs={"invoice_id": "C1-I1"}),
                 invoice(n=2, at=T0 + 2 * D + H), posting(n=2, inv=2, at=T0 + 2 * D + 2 * H),
                 payment(n=2, inv=2, at=T0 + 5 * D))
    world.now = T0 + 2 * D + 30 * timedelta(minutes=1)
    world.evaluate()
    assert ("unreversed_posting", "C1", "1000.00", "USD") not in world.open()
    world.now = T0 + 60 * D
    world.evaluate()
    assert ("unreversed_posting", "C1", "1000.00", "USD") in world.open()
    world.ingest(event("C1-rev", "posting.reversed", T0 + 2 * D + 10 * H, refs={"posting_id": "C1-P1"}))
    world.evaluate()
    assert ("unreversed_posting", "C1", "1000.00", "USD") not in world.open()


def test_unreversed_posting_after_a_full_credit_in_parts(world: World) -> None:
    world.ingest(*clean(),
                 event("C1-cr1", "invoice.credited", T0 + 2 * D, amount="400.00", refs={"invoice_id": "C1-I1"}),
                 event("C1-cr2", "invoice.credited", T0 + 3 * D, refs={"invoice_id": "C1-I1"}))
    world.evaluate()
    kinds = [m[0] for m in world.open()]
    assert "unreversed_posting" in kinds
    assert "missing_invoice" in kinds  # credited in full: the order has no live invoice


def test_credits_lower_the_invoice_for_every_comparison(world: World) -> None:
    world.ingest(order(amount="900.00"), invoice(), posting(),
                 event("C1-cr", "invoice.credited", T0 + 2 * H, amount="100.00", refs={"invoice_id": "C1-I1"}),
                 payment(amount="980.00"))
    world.evaluate()
    # order 900 = invoice 1000 - 100; the posting still says 1000; payment 980 = 900 + 80 tax
    assert world.open() == [("amount_mismatch", "C1", "100.00", "USD")]


def test_orphan_payment_has_no_contract_and_closes_when_its_invoice_arrives(world: World) -> None:
    world.ingest(payment(None, owner="Z"))
    world.now = T0 + 3 * D + 30 * timedelta(minutes=1)
    world.evaluate()
    assert world.open() == []  # within the grace
    world.now = T0 + 3 * D + 2 * H
    world.evaluate()
    assert world.open() == [("orphan_payment", None, "1080.00", "USD")]
    world.ingest(order("Z"), invoice("Z"), posting("Z"))
    world.evaluate()
    assert world.open() == []
    assert world.closed() == [("orphan_payment", None)]
    trace = world.reads().trace("Z")
    assert trace is not None and trace["stages"]["paid"]["amount"] == "1080.00"


def test_orphan_posting(world: World) -> None:
    world.ingest(posting(None, inv=7) | {"event_id": "lone-posting"})
    world.evaluate()
    assert world.open() == [("orphan_posting", None, "1000.00", "USD")]


def test_recurring_orders_expect_one_invoice_per_started_interval(world: World) -> None:
    billing = {"billing": {"interval": "month", "count": 12}}
    world.ingest(order(amount="100.00", attributes=billing),
                 invoice(amount="100.00", tax="0.00"), posting(amount="100.00", tax="0.00"),
                 payment(amount="100.00"))
    world.now = T0 + 40 * D  # intervals 0 and 1 have started; interval 1 (Apr 2) is past its window
    world.evaluate()
    assert world.open() == [("missing_invoice", "C1", "100.00", "USD")]
    with world.engine.connect() as conn:
        from sqlalchemy import select

        from collector.schema import mismatches
        assert conn.execute(select(mismatches.c.leakage_micros)).scalar() == 100_000_000
    world.ingest(invoice(n=2, amount="100.00", tax="0.00", at=T0 + 31 * D),
                 posting(n=2, inv=2, amount="100.00", tax="0.00", at=T0 + 31 * D),
                 payment(n=2, inv=2, amount="100.00", at=T0 + 32 * D))
    world.evaluate()
    assert world.open() == []


def test_recurring_billing_ahead_of_the_intervals_started_is_over_billing(world: World) -> None:
    billing = {"billing": {"interval": "month", "count": 12}}
    world.ingest(order(amount="100.00", attributes=billing),
                 invoice(amount="100.00", tax="0.00"), invoice(n=2, amount="100.00", tax="0.00", at=T0 + 2 * D),
                 posting(amount="100.00", tax="0.00"),
                 posting(n=2, inv=2, amount="100.00", tax="0.00", at=T0 + 2 * D),
                 payment(amount="100.00"), payment(n=2, inv=2, amount="100.00"))
    world.now = T0 + 10 * D
    world.evaluate()
    assert world.open() == [("amount_mismatch", "C1", "100.00", "USD")]
    world.now = T0 + 31 * D  # the second interval has started: nothing is over-billed any more
    world.evaluate()
    assert world.open() == []


def test_a_mismatch_follows_its_amount_while_open(world: World) -> None:
    world.ingest(order(), invoice(amount="1150.00"), posting(amount="1150.00"), payment(amount="1230.00"))
    world.evaluate()
    world.ingest(event("C1-cr", "invoice.credited", T0 + 2 * H, amount="100.00", refs={"invoice_id": "C1-I1"}))
    res = world.evaluate()
    assert res.updated >= 1
    assert ("amount_mismatch", "C1", "50.00", "USD") in world.open()


def test_incremental_passes_agree_with_a_full_pass(world: World) -> None:
    world.ingest(*clean("A"), order("B"), invoice("C", amount="5.00"), payment(None, owner="Q"))
    world.evaluate()
    world.ingest(invoice("B"), posting("B", amount="1.00"))
    world.evaluate()
    before = world.open()
    res = world.evaluate(full=True)
    assert (res.opened, res.closed, res.updated) == (0, 0, 0)
    assert world.open() == before


def test_on_postgresql_a_pass_waits_for_or_skips_another_replicas(pg_url: str) -> None:
    from sqlalchemy import text

    from collector.pass_lock import PASS_LOCK
    engine = make_engine(pg_url)
    upgrade(engine)
    try:
        world = World(engine)
        world.ingest(order())
        with engine.connect() as other:  # another replica holds the pass
            other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PASS_LOCK})
            from collector.evaluate import Reconciler
            skipped = Reconciler(engine, world.policy, world.clock_us).run(wait=False)
            assert skipped.skipped and skipped.evaluated == 0
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PASS_LOCK})
        ran = world.evaluate()
        assert not ran.skipped and ran.evaluated == 1
    finally:
        engine.dispose()


def test_on_sqlite_a_pass_skips_while_another_process_holds_the_store(world: World, tmp_path: object) -> None:
    import subprocess
    import sys
    import textwrap

    from collector.evaluate import Reconciler
    world.ingest(order())
    path = world.engine.url.database
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({path!r} + "-pass.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert Reconciler(world.engine, world.policy, world.clock_us).run(wait=False).skipped
    finally:
        holder.kill()  # the system lets go of a dead process's lock
        holder.wait()
    assert world.evaluate().evaluated == 1
