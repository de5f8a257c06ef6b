"""The ground truth: exactly which mismatches revtrace must report for a simulated landscape."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")


def money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2).quantize(CENT)


@dataclass(frozen=True, slots=True)
class ExpectedMismatch:
    kind: str
    contract_id: str | None
    amount_at_risk: Decimal
    currency: str
    # The document the mismatch is about, or "{contract_id}#{k}" for a recurring interval.
    subject: str
    note: str
    # Whether the amount counts towards leakage (missing invoice, under-billed part).
    leakage: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "contract_id": self.contract_id,
            "amount_at_risk": format(self.amount_at_risk, "f"),
            "currency": self.currency,
            "subject": self.subject,
            "note": self.note,
            "leakage": self.leakage,
        }


def leakage_of(truth: Iterable[ExpectedMismatch]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for m in truth:
        if m.leakage:
            total[m.currency] = total.get(m.currency, Decimal("0.00")) + m.amount_at_risk
    return dict(sorted(total.items()))


def truth_document(truth: list[ExpectedMismatch], *, contracts: int, orphans: int, events: int,
                   fault_counts: dict[str, int]) -> dict[str, Any]:
    return {
        "contracts": contracts,
        "orphans": orphans,
        "events": events,
        "fault_counts": dict(sorted(fault_counts.items())),
        "leakage": {cur: format(v, "f") for cur, v in leakage_of(truth).items()},
        "mismatches": [m.as_json() for m in truth],
    }
