"""Parsing and validation of the canonical event: one precise "field: reason" per bad event."""
from __future__ import annotations

import gc
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from collector.model import Event, EventError, canonical_from_store, event_from_store, parse_event

GOOD: dict[str, Any] = {"event_id": "e1", "source": "billing", "type": "invoice.issued",
                        "occurred_at": "2026-03-02T10:00:00+02:00", "contract_id": "C1", "amount": "1200.00",
                        "tax_amount": "96.00", "currency": "USD", "refs": {"invoice_id": "I1"}}


def test_a_good_event_has_decimal_money_and_an_aware_time() -> None:
    ev = parse_event(GOOD)
    assert ev.amount == Decimal("1200.00") and isinstance(ev.amount, Decimal)
    assert ev.occurred_at.utcoffset() is not None
    assert ev.occurred_at.isoformat() == "2026-03-02T10:00:00+02:00"
    assert ev.to_json()["amount"] == "1200.00"


def test_parsed_and_stored_events_are_left_out_of_garbage_collections() -> None:
    """A 10,000-event request or a chunk of a pass holds tens of thousands of events at once: the cyclic
    collector would walk each of them at every collection (collector/gc_policy.py)."""
    with_attributes = {**GOOD, "attributes": {"billing": {"interval": "month", "count": 12}}}
    stored = parse_event(with_attributes).stored_json().decode()
    for ev in (parse_event(GOOD), parse_event({**GOOD, "sales_region": "emea"}), parse_event(with_attributes),
               canonical_from_store(stored), event_from_store(stored)):
        assert not gc.is_tracked(ev)


@pytest.mark.parametrize(("change", "quick"), [
    ({}, True),
    ({"attributes": {"billing": {"interval": "month", "count": 12}}, "due_at": "2026-04-01T00:00:00Z"}, True),
    ({"occurred_at": "2026-03-02t10:00:00.25z", "refs": {"invoice_id": "I1", "order_id": "O1"}, "tax_amount": None},
     True),
    # Beyond the microsecond parse_time truncates, where msgspec would round (.123457) or overflow the year.
    ({"occurred_at": "2026-03-02T10:00:00.1234569Z"}, False),
    ({"due_at": "2026-04-01T00:00:00.9999999+01:00"}, False),
    ({"occurred_at": "9999-12-31T23:59:59.9999999Z"}, False),
    # An offset of 60 minutes, which parse_time takes as an hour and msgspec refuses.
    ({"occurred_at": "2026-03-02T10:00:00+00:60"}, False),
], ids=["plain", "attributes-and-due", "lower-case", "seven-decimals", "due-seven-decimals", "last-instant",
        "minute-60"])
def test_a_stored_event_reads_back_as_parsed_either_way(change: dict[str, Any], quick: bool) -> None:
    """Reconciliation reads stored events the quick way (event_from_store), the API the long way; both must
    give back the event as parse_event made it, to the microsecond."""
    parsed = parse_event({k: v for k, v in {**GOOD, **change}.items() if v is not None})
    stored = parsed.stored_json().decode()
    fast, slow = event_from_store(stored), canonical_from_store(stored)
    assert slow == msgspec.structs.replace(parsed, stored_form=None)
    assert (type(fast) is Event) is quick  # else it took the long way
    n = len(msgspec.structs.fields(Event))
    assert msgspec.structs.astuple(fast)[:n] == msgspec.structs.astuple(parsed)[:n]
    assert fast.occurred_at.utcoffset() == parsed.occurred_at.utcoffset()


def test_unknown_fields_are_kept_in_attributes() -> None:
    ev = parse_event({**GOOD, "sales_region": "emea", "attributes": {"channel": "direct"}})
    assert ev.attributes == {"sales_region": "emea", "channel": "direct"}


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"event_id": None}, "event_id", "required"),
    ({"event_id": ""}, "event_id", "non-empty"),
    ({"source": "sap"}, "source", "one of"),
    ({"type": "invoice.paid"}, "type", "not a known event type"),
    ({"occurred_at": "yesterday"}, "occurred_at", "RFC 3339"),
    ({"occurred_at": "2026-03-02T10:00:00"}, "occurred_at", "offset"),
    ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at", "RFC 3339"),
    ({"event_id": "   "}, "event_id", "non-empty string"),
    ({"amount": 1200.0}, "amount", "never a number"),
    ({"amount": "12,00"}, "amount", "decimal string"),
    ({"amount": "1e3"}, "amount", "decimal string"),
    ({"tax_amount": "0.1234567"}, "tax_amount", "6 decimals"),
    ({"event_id": 7}, "event_id", "expected `str`, got `int`"),
    ({"entity": ""}, "entity", "non-empty string"),
    ({"refs": {"invoice_id": ""}}, "refs.invoice_id", "non-empty string"),
    ({"currency": "usd"}, "currency", "ISO 4217"),
    ({"currency": None}, "currency", "required with an amount"),
    ({"refs": {"invoice_id": "I1", "customer": "x"}}, "refs.customer", "unknown ref"),
    ({"refs": []}, "refs", "object"),
    ({"due_at": "soon"}, "due_at", "RFC 3339"),
    ({"attributes": "x"}, "attributes", "object"),
    ({"attributes": {"billing": {"interval": "week", "count": 3}}}, "attributes.billing", "month"),
    ({"attributes": {"billing": {"interval": "month", "count": 0}}}, "attributes.billing.count", "whole number"),
    ({"event_id": "E\x001"}, "event_id", "NUL"),
    ({"contract_id": "\x00"}, "contract_id", "NUL"),
    ({"entity": "US\x0001"}, "entity", "NUL"),
    ({"refs": {"invoice_id": "I\x00"}}, "refs.invoice_id", "NUL"),
])
def test_each_bad_field_is_named_with_its_reason(change: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event({**GOOD, **change})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert reason in str(err.value)


def test_a_nul_in_attributes_is_kept() -> None:
    ev = parse_event({**GOOD, "attributes": {"note": "a\x00b"}})
    assert ev.attributes == {"note": "a\x00b"}


def test_contract_id_may_be_absent_when_refs_resolve_it() -> None:
    bare = {k: v for k, v in GOOD.items() if k != "contract_id"}
    assert parse_event(bare).contract_id is None
    with pytest.raises(EventError, match=r"^contract_id: required when refs"):
        parse_event({**bare, "refs": {"account_id": "A1"}})


def test_the_wire_schema_knows_every_source_and_type_of_the_conventions() -> None:
    from collector import conventions as c
    for source in c.SOURCES:
        assert parse_event({**GOOD, "source": source}).source == source
    for type_ in c.EVENT_TYPES:
        assert parse_event({**GOOD, "type": type_}).type == type_


def test_not_an_object() -> None:
    with pytest.raises(EventError, match=r"^event: must be a JSON object"):
        parse_event(["x"])
