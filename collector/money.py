"""Money is Decimal in Python and whole micro-units (10^-6) in the store, so that SQL sums stay exact on
SQLite as on PostgreSQL."""
from __future__ import annotations

from decimal import Decimal

SCALE = 10**6
_CENT = Decimal("0.01")


def to_micros(amount: Decimal) -> int:
    return int(amount * SCALE)


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / SCALE).quantize(Decimal("0.000001"))


def show(amount: Decimal) -> str:
    """A decimal string with at least two decimals ("12.00", "0.125"), never an exponent."""
    if amount == amount.quantize(_CENT):
        return f"{amount.quantize(_CENT):f}"
    return f"{amount.normalize():f}"


def show_micros(micros: int) -> str:
    return show(from_micros(micros))
