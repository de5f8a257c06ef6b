"""Reconciliation windows, tolerance and expected hops: DESIGN.md's defaults, each configurable."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

HOP_INVOICE, HOP_POSTING, HOP_PAYMENT = "invoice", "posting", "payment"
ALL_HOPS = frozenset({HOP_INVOICE, HOP_POSTING, HOP_PAYMENT})


@dataclass(frozen=True)
class Policy:
    invoice_window: timedelta = timedelta(hours=24)
    posting_window: timedelta = timedelta(hours=1)
    orphan_grace: timedelta = timedelta(hours=1)
    overdue_after: timedelta = timedelta(days=1)
    default_due: timedelta = timedelta(days=30)
    duplicate_window: timedelta = timedelta(hours=24)
    tolerance: Decimal = Decimal("0")
    expected: frozenset[str] = ALL_HOPS
    expected_by_entity: dict[str, frozenset[str]] = field(default_factory=dict)

    def expects(self, entity: str | None, hop: str) -> bool:
        hops = self.expected_by_entity.get(entity, self.expected) if entity is not None else self.expected
        return hop in hops

    @classmethod
    def from_config(cls, raw: dict[str, Any] | None) -> Policy:
        """The `reconciliation:` section of revtrace.yaml; windows in seconds or "24h"/"30m"/"1d" strings."""
        raw = dict(raw or {})
        kwargs: dict[str, Any] = {}
        for name in ("invoice_window", "posting_window", "orphan_grace", "overdue_after", "default_due",
                     "duplicate_window"):
            if name in raw:
                kwargs[name] = parse_duration(raw.pop(name), f"reconciliation.{name}")
        if "tolerance" in raw:
            kwargs["tolerance"] = Decimal(str(raw.pop("tolerance")))
        if "expected_hops" in raw:
            kwargs["expected"] = _hops(raw.pop("expected_hops"), "reconciliation.expected_hops")
        if "expected_hops_by_entity" in raw:
            by = raw.pop("expected_hops_by_entity") or {}
            kwargs["expected_by_entity"] = {str(k): _hops(v, f"reconciliation.expected_hops_by_entity.{k}")
                                            for k, v in by.items()}
        if raw:
            raise ValueError(f"reconciliation: unknown keys {', '.join(sorted(raw))}")
        return cls(**kwargs)


def _hops(value: Any, where: str) -> frozenset[str]:
    hops = frozenset(value or ())
    if not hops <= ALL_HOPS:
        raise ValueError(f"{where}: unknown hops {sorted(hops - ALL_HOPS)}; known: {sorted(ALL_HOPS)}")
    return hops


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any, where: str) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str) and value[-1:] in _UNITS:
        try:
            return timedelta(seconds=float(value[:-1]) * _UNITS[value[-1]])
        except ValueError:
            pass
    raise ValueError(f"{where}: {value!r} is not a duration (seconds, or a number with s, m, h or d)")
