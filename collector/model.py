"""The canonical event: parsing and validation of DESIGN.md's event schema.

A bad event gets one precise error, "field: reason"; a good one becomes a `CanonicalEvent` whose money is
Decimal and whose times are timezone-aware. Unknown fields are kept in `attributes`."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from collector import conventions as c

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_DECIMAL = re.compile(r"-?\d{1,15}(\.\d{1,6})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_KNOWN = frozenset({"event_id", "source", "type", "occurred_at", "contract_id", "refs", "amount", "tax_amount",
                    "currency", "entity", "due_at", "system", "attributes"})
_SOURCES = frozenset(c.SOURCES)
_TYPES = frozenset(c.EVENT_TYPES)
_REF_KEYS = frozenset(c.REF_KEYS)
_JOIN_REFS = ("invoice_id", "order_id", "posting_id", "payment_id")
MAX_ID = 200


class EventError(ValueError):
    """Why one event was refused, as "field: reason"."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    event_id: str
    source: str
    type: str
    occurred_at: datetime
    contract_id: str | None = None
    refs: dict[str, str] = field(default_factory=dict)
    amount: Decimal | None = None
    tax_amount: Decimal | None = None
    currency: str | None = None
    entity: str | None = None
    due_at: datetime | None = None
    system: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    raw_occurred_at: str = ""
    raw_due_at: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.event_id)

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
        raise EventError(name, f"{_clip(value)!r} is not a valid date and time") from None


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("z", "Z"))


def _decimal(value: Any, name: str) -> Decimal:
    if not isinstance(value, str):
        raise EventError(name, 'must be a decimal string such as "1200.00" (money is never a number)')
    if not _DECIMAL.fullmatch(value):
        raise EventError(name, f"{_clip(value)!r} is not a decimal with at most 15 digits and 6 decimals")
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise EventError(name, f"{_clip(value)!r} is not a decimal") from None


def _text(value: Any, name: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise EventError(name, "required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise EventError(name, "must be a non-empty string")
    if len(value) > MAX_ID:
        raise EventError(name, f"longer than {MAX_ID} characters")
    return value


def _clip(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def parse_event(obj: Any) -> CanonicalEvent:
    """One canonical event from its JSON object, or EventError naming the first bad field."""
    if not isinstance(obj, dict):
        raise EventError("event", "must be a JSON object")
    event_id = _text(obj.get("event_id"), "event_id", required=True)
    source = obj.get("source")
    if source is None:
        raise EventError("source", "required")
    if source not in _SOURCES:
        raise EventError("source", f"must be one of {', '.join(c.SOURCES)}")
    type_ = obj.get("type")
    if type_ is None:
        raise EventError("type", "required")
    if type_ not in _TYPES:
        raise EventError("type", f"{_clip(str(type_))!r} is not a known event type")
    if obj.get("occurred_at") is None:
        raise EventError("occurred_at", "required")
    occurred_at, raw_at = parse_time(obj["occurred_at"], "occurred_at")
    contract_id = _text(obj.get("contract_id"), "contract_id")
    refs = _refs(obj.get("refs"))
    if contract_id is None and not any(k in refs for k in _JOIN_REFS):
        raise EventError("contract_id", "required when refs name no order, invoice, posting or payment")
    amount = _decimal(obj["amount"], "amount") if obj.get("amount") is not None else None
    tax = _decimal(obj["tax_amount"], "tax_amount") if obj.get("tax_amount") is not None else None
    currency = obj.get("currency")
    if currency is not None and (not isinstance(currency, str) or not _CURRENCY.fullmatch(currency)):
        raise EventError("currency", "must be an ISO 4217 code such as USD")
    if currency is None and (amount is not None or tax is not None):
        raise EventError("currency", "required with an amount")
    due_at, raw_due = parse_time(obj["due_at"], "due_at") if obj.get("due_at") is not None else (None, None)
    attributes = obj.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise EventError("attributes", "must be an object")
    unknown = {k: v for k, v in obj.items() if k not in _KNOWN}
    if unknown:
        attributes = {**unknown, **attributes}
    _check_billing(attributes)
    return CanonicalEvent(
        event_id=event_id or "", source=source, type=type_, occurred_at=occurred_at, contract_id=contract_id,
        refs=refs, amount=amount, tax_amount=tax, currency=currency,
        entity=_text(obj.get("entity"), "entity"), due_at=due_at, system=_text(obj.get("system"), "system"),
        attributes=attributes, raw_occurred_at=raw_at, raw_due_at=raw_due)


def from_stored(obj: dict[str, Any]) -> CanonicalEvent:
    """An event the store wrote with `to_json` after `parse_event` accepted it: rebuilt without validating
    again, since reconciliation reads every stored event of a contract on each pass."""
    amount, tax, due = obj.get("amount"), obj.get("tax_amount"), obj.get("due_at")
    raw_at = obj["occurred_at"]
    return CanonicalEvent(
        event_id=obj["event_id"], source=obj["source"], type=obj["type"],
        occurred_at=_instant(raw_at), contract_id=obj.get("contract_id"), refs=obj.get("refs") or {},
        amount=None if amount is None else Decimal(amount), tax_amount=None if tax is None else Decimal(tax),
        currency=obj.get("currency"), entity=obj.get("entity"),
        due_at=None if due is None else _instant(due), system=obj.get("system"),
        attributes=obj.get("attributes") or {}, raw_occurred_at=raw_at, raw_due_at=due)


def _refs(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError("refs", "must be an object of external ids")
    out: dict[str, str] = {}
    for k, v in value.items():
        if v is None:
            continue
        if k not in _REF_KEYS:
            raise EventError(f"refs.{k}", f"unknown ref; known: {', '.join(c.REF_KEYS)}")
        out[k] = _text(v, f"refs.{k}") or ""
    return out


def _check_billing(attributes: dict[str, Any]) -> None:
    billing = attributes.get("billing")
    if billing is None:
        return
    if not isinstance(billing, dict) or billing.get("interval") != "month":
        raise EventError("attributes.billing", 'must be {"interval": "month", "count": n}')
    count = billing.get("count")
    if type(count) is not int or not 1 <= count <= 1200:
        raise EventError("attributes.billing.count", "must be a whole number of intervals from 1 to 1200")
