"""The canonical event: parsing and validation of DESIGN.md's event schema.

A bad event gets one precise error, "field: reason"; a good one becomes a `CanonicalEvent` whose money is
Decimal and whose times are timezone-aware. Unknown fields are kept in `attributes`."""
from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Struct

from collector import conventions as c

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_KNOWN = frozenset({"event_id", "source", "type", "occurred_at", "contract_id", "refs", "amount", "tax_amount",
                    "currency", "entity", "due_at", "system", "attributes"})
MAX_ID = 200


class EventError(ValueError):
    """Why one event was refused, as "field: reason"."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


class Event(Struct, frozen=True, gc=False):
    """What reconciliation reads of an event. Immutable; a Struct rather than a frozen dataclass, whose
    generated __init__ sets each field through object.__setattr__ and cost more than the whole JSON decode
    of the event. Left out of the cyclic garbage collector (gc=False): what it holds comes from JSON and
    never refers back to it, and a request or a chunk of a pass holds tens of thousands of events that each
    collection would otherwise walk."""
    event_id: str
    source: str
    type: str
    occurred_at: datetime
    contract_id: str | None = None
    refs: dict[str, str] = msgspec.field(default_factory=dict)
    amount: Decimal | None = None
    tax_amount: Decimal | None = None
    currency: str | None = None
    entity: str | None = None
    due_at: datetime | None = None
    system: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.event_id)


class CanonicalEvent(Event, frozen=True, gc=False):
    """An event as received: its times also as the text sent, which the API shows as it came."""
    raw_occurred_at: str = ""
    raw_due_at: str | None = None
    # The JSON text as received, when it is already what the store keeps (nothing to move into
    # attributes): stored as it came, which spares re-encoding every event.
    stored_form: bytes | None = None

    def stored_json(self) -> bytes:
        return self.stored_form if self.stored_form is not None else orjson.dumps(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The event as the API shows it: DESIGN.md's fields, absent ones left out."""
        out: dict[str, Any] = {"event_id": self.event_id, "source": self.source, "type": self.type,
                               "occurred_at": self.raw_occurred_at}
        if self.contract_id is not None:
            out["contract_id"] = self.contract_id
        if self.refs:
            out["refs"] = self.refs
        if self.amount is not None:
            out["amount"] = f"{self.amount:f}"
        if self.tax_amount is not None:
            out["tax_amount"] = f"{self.tax_amount:f}"
        for name in ("currency", "entity", "system"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.raw_due_at is not None:
            out["due_at"] = self.raw_due_at
        out["attributes"] = self.attributes
        return out


def parse_time(value: Any, name: str) -> tuple[datetime, str]:
    if not isinstance(value, str):
        raise EventError(name, "must be an RFC 3339 time string with an offset")
    if not _TIME.fullmatch(value):
        raise EventError(name, f"{_clip(value)!r} is not an RFC 3339 time with an offset")
    try:
        return _instant(value), value
    except ValueError:
        raise EventError(name, f"{_clip(value)!r} is not a valid RFC 3339 date and time") from None


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("z", "Z"))


def _clip(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


# The wire schema, checked by msgspec in C: a batch of 10,000 events is validated in milliseconds.
_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]
_Money = Annotated[str, Meta(pattern=r"^-?\d{1,15}(\.\d{1,6})?$")]


_RefKey = Literal["order_id", "invoice_id", "posting_id", "payment_id", "account_id"]


class _Refs(Struct, forbid_unknown_fields=True, gc=False):
    order_id: _Id | None = None
    invoice_id: _Id | None = None
    posting_id: _Id | None = None
    payment_id: _Id | None = None
    account_id: _Id | None = None


class _Wire(Struct, gc=False):
    event_id: _Id
    source: Literal["crm", "billing", "erp", "payment"]
    type: Literal["order.booked", "order.amended", "order.cancelled", "invoice.issued", "invoice.voided",
                  "invoice.credited", "posting.created", "posting.reversed", "payment.succeeded", "payment.failed",
                  "payment.refunded"]
    occurred_at: str  # checked by parse_time, which keeps the text as sent
    contract_id: _Id | None = None
    refs: _Refs | None = None
    amount: _Money | None = None
    tax_amount: _Money | None = None
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$")] | None = None
    entity: _Id | None = None
    due_at: str | None = None
    system: _Id | None = None
    attributes: dict[str, Any] | None = None



class _Plain(_Wire, forbid_unknown_fields=True):
    """An event already in canonical form: nothing to move into attributes, so it is stored as received.
    Its refs decode straight into the dict the event keeps (known keys, non-empty ids; any error sends the
    event the long way, which says it precisely)."""
    refs: dict[_RefKey, _Id] | None = None  # type: ignore[assignment]


_WIRE = msgspec.json.Decoder(_Wire)
_PLAIN = msgspec.json.Decoder(_Plain)
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_REQUIRED = frozenset({"event_id", "source", "type", "occurred_at"})
_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`")
_REASONS = {
    "amount": 'must be a decimal string such as "1200.00" with at most 15 digits and 6 decimals '
              "(money is never a number)",
    "tax_amount": 'must be a decimal string such as "96.00" with at most 15 digits and 6 decimals '
                  "(money is never a number)",
    "occurred_at": "must be an RFC 3339 time with an offset, such as 2026-03-02T10:00:00Z",
    "due_at": "must be an RFC 3339 time with an offset, such as 2026-03-02T10:00:00Z",
    "currency": "must be an ISO 4217 code such as USD",
    "source": f"must be one of {', '.join(c.SOURCES)}",
    "type": "not a known event type; known: " + ", ".join(c.EVENT_TYPES),
    "refs": "must be an object of external ids",
    "attributes": "must be an object",
}


def _wire_error(exc: msgspec.ValidationError) -> EventError:
    """msgspec's message, said as DESIGN.md's "field: reason"."""
    m = _AT.match(str(exc))
    message, path = (m.group(1), m.group(2) or "") if m else (str(exc), "")
    where = path.lstrip(".")
    if (miss := _MISSING.match(message)) is not None:
        return EventError(".".join(filter(None, (where, miss.group(1)))), "required")
    if (extra := _UNKNOWN.match(message)) is not None:
        return EventError(f"{where}.{extra.group(1)}", "unknown ref; known: " + ", ".join(c.REF_KEYS))
    if not where:
        return EventError("event", "must be a JSON object")
    if "got `null`" in message and where in _REQUIRED:
        return EventError(where, "required")
    if where in _REASONS:
        return EventError(where, _REASONS[where])
    if "length >=" in message or "length <=" in message:  # every other string field is an _Id
        return EventError(where, f"must be a non-empty string of at most {MAX_ID} characters")
    return EventError(where, message[0].lower() + message[1:] if message else "invalid")


def parse_raw(raw: bytes | msgspec.Raw) -> CanonicalEvent:
    """One canonical event from the JSON text of one event, or EventError naming the first bad field."""
    # Most events come canonical: one decode checks them. A null anywhere (a null ref must be dropped), an
    # unknown field or any error takes the long way, which also finds the precise error.
    raw = bytes(raw)
    if b"null" not in raw:
        try:
            return _canonical(_PLAIN.decode(raw), None, raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    try:
        obj = _OBJECT.decode(raw)
    except msgspec.ValidationError:
        raise EventError("event", "must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise EventError("event", f"not JSON ({exc})") from None
    try:
        wire = _WIRE.decode(raw)
    except msgspec.ValidationError as exc:
        raise _wire_error(exc) from None
    return _canonical(wire, obj, raw)


def _plain_refs(refs: Any) -> bool:
    return refs is None or all(v is not None for v in refs.values())


def parse_event(obj: Any) -> CanonicalEvent:
    """One canonical event from its JSON object (already decoded), or EventError."""
    if not isinstance(obj, dict):
        raise EventError("event", "must be a JSON object")
    return parse_raw(orjson.dumps(obj))


def _canonical(w: _Wire, obj: dict[str, Any] | None, raw: bytes) -> CanonicalEvent:
    """`obj` is the decoded object when the event may not be canonical, None when _Plain accepted it."""
    # The ids that name things must name something.
    if not w.event_id.strip():
        raise EventError("event_id", f"must be a non-empty string of at most {MAX_ID} characters")
    if w.contract_id is not None and not w.contract_id.strip():
        raise EventError("contract_id", f"must be a non-empty string of at most {MAX_ID} characters")
    wire_refs = w.refs
    if wire_refs is None:
        refs: dict[str, str] = {}
    elif isinstance(wire_refs, dict):  # _Plain's
        refs = wire_refs
    else:
        refs = {k: v for k in c.REF_KEYS if (v := getattr(wire_refs, k)) is not None}
    if b"\\u0000" in raw:  # JSON writes NUL only so; a plain search keeps the common case free
        _refuse_nul(w, refs)
    if w.contract_id is None and refs.keys().isdisjoint(c.JOIN_REFS):
        raise EventError("contract_id", "required when refs name no order, invoice, posting or payment")
    if w.currency is None and (w.amount is not None or w.tax_amount is not None):
        raise EventError("currency", "required with an amount")
    occurred_at, raw_at = parse_time(w.occurred_at, "occurred_at")
    due_at, raw_due = parse_time(w.due_at, "due_at") if w.due_at is not None else (None, None)
    attributes = w.attributes or {}
    stored = obj is None or (obj.keys() <= _KNOWN and _plain_refs(obj.get("refs")))
    if obj is not None and not stored:
        unknown = {k: v for k, v in obj.items() if k not in _KNOWN}
        if unknown:
            attributes = {**unknown, **attributes}
    if "billing" in attributes:
        _check_billing(attributes)
    return CanonicalEvent(
        w.event_id, w.source, w.type, occurred_at, w.contract_id, refs,
        None if w.amount is None else Decimal(w.amount), None if w.tax_amount is None else Decimal(w.tax_amount),
        w.currency, w.entity, due_at, w.system, attributes, raw_at, raw_due, raw if stored else None)


def _refuse_nul(w: _Wire, refs: dict[str, str]) -> None:
    """A NUL in a name is refused here: PostgreSQL's text holds none, so the store would fail the whole
    write round, other clients' events with it. In attributes it stays, escaped in the stored JSON."""
    named = {"event_id": w.event_id, "contract_id": w.contract_id, "entity": w.entity, "system": w.system,
             **{f"refs.{k}": v for k, v in refs.items()}}
    for field, value in named.items():
        if value is not None and "\x00" in value:
            raise EventError(field, "must not contain the NUL character (U+0000)")


_STORED = msgspec.json.Decoder(Event)
# A time with more than 6 decimals: msgspec rounds it to the microsecond where parse_time truncates it.
_LONG_FRACTION = re.compile(r"\.\d{7}")


def event_from_store(body: str) -> Event:
    """A stored event, for reconciliation, which reads every stored event of a contract on each pass:
    decoded straight into an Event by msgspec in C, at less than half the cost of `canonical_from_store`.
    A body it would read otherwise than `parse_raw` did (more than 6 decimals of a second, which it rounds;
    anything it refuses) takes the long way, so both ways give the same event."""
    if _LONG_FRACTION.search(body) is None:
        try:
            return _STORED.decode(body)
        except msgspec.ValidationError:
            pass
    return canonical_from_store(body)


def canonical_from_store(body: str | bytes) -> CanonicalEvent:
    """A stored event with the text of its times as sent, for the API."""
    return from_stored(orjson.loads(body))


def from_stored(obj: dict[str, Any]) -> CanonicalEvent:
    """An event the store wrote after `parse_raw` accepted it: rebuilt without validating again, since
    reconciliation reads every stored event of a contract on each pass."""
    amount, tax, due = obj.get("amount"), obj.get("tax_amount"), obj.get("due_at")
    raw_at = obj["occurred_at"]
    return CanonicalEvent(
        obj["event_id"], obj["source"], obj["type"], _instant(raw_at), obj.get("contract_id"), obj.get("refs") or {},
        None if amount is None else Decimal(amount), None if tax is None else Decimal(tax), obj.get("currency"),
        obj.get("entity"), None if due is None else _instant(due), obj.get("system"), obj.get("attributes") or {},
        raw_at, due)


def _check_billing(attributes: dict[str, Any]) -> None:
    billing = attributes.get("billing")
    if billing is None:
        return
    if not isinstance(billing, dict) or billing.get("interval") != "month":
        raise EventError("attributes.billing", 'must be {"interval": "month", "count": n}')
    count = billing.get("count")
    if type(count) is not int or not 1 <= count <= 1200:
        raise EventError("attributes.billing.count", "must be a whole number of intervals from 1 to 1200")
