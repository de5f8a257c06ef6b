"""What a simulated landscape looks like: legal entities, systems, timing, fault mix and delivery noise.

Everything the simulator draws comes from a `LandscapeConfig`; `now` is part of it so that generation
never reads the clock and one config always yields the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from collector import conventions as c
from collector.policy import Policy

ORPHAN_FAULTS = (c.ORPHAN_PAYMENT, c.ORPHAN_POSTING)
CONTRACT_FAULTS = tuple(k for k in c.MISMATCH_KINDS if k not in ORPHAN_FAULTS)

# How old an order must be for its fault to be complete, with every deadline behind it, by `now`.
UNPAID_MIN_AGE = timedelta(days=18)
UNREVERSED_MIN_AGE = timedelta(days=6)
RECURRING_GAP_MIN_AGE = timedelta(days=36)
# Recurring intervals starting this close before `now` are kept out: their invoice, posting and payment
# would not all be in place, with their deadlines behind them, a day before `now`.
RECURRING_SETTLE = timedelta(days=3)


@dataclass(frozen=True)
class Entity:
    code: str
    currency: str
    tax_rates: tuple[Decimal, ...]
    # ERP systems report in the entity's local time, so consumers must honour offsets.
    utc_offset_minutes: int = 0


DEFAULT_ENTITIES = (
    Entity("US01", "USD", tuple(Decimal(r) for r in ("0", "0.04", "0.0625", "0.0725", "0.08875")), -300),
    Entity("DE01", "EUR", (Decimal("0.19"),), 60),
    Entity("FR01", "EUR", (Decimal("0.20"),), 60),
    Entity("GB01", "GBP", (Decimal("0.20"),), 0),
)


@dataclass(frozen=True)
class Systems:
    crm: tuple[str, ...] = ("salesforce", "servicenow")
    billing: tuple[str, ...] = ("stripe", "zuora", "aria")
    erp: tuple[str, ...] = ("netsuite", "sap", "dynamics")
    payment: tuple[str, ...] = ("stripe", "adyen")


_POLICY = Policy()


@dataclass(frozen=True)
class Windows:
    """The reconciliation windows the ground truth assumes: the collector's defaults, taken from its Policy."""

    invoice: timedelta = _POLICY.invoice_window
    posting: timedelta = _POLICY.posting_window
    orphan_grace: timedelta = _POLICY.orphan_grace
    overdue: timedelta = _POLICY.overdue_after
    duplicate: timedelta = _POLICY.duplicate_window


@dataclass(frozen=True)
class LagProfile:
    """How long each hop takes. `scale` shrinks every span (not calendar months) for a live demo."""

    invoice: tuple[timedelta, timedelta] = (timedelta(minutes=2), timedelta(hours=20))
    posting: tuple[timedelta, timedelta] = (timedelta(minutes=1), timedelta(minutes=40))
    spike_rate: float = 0.03
    spike: tuple[timedelta, timedelta] = (timedelta(hours=2), timedelta(hours=6))
    payment: tuple[timedelta, timedelta] = (timedelta(hours=2), timedelta(days=25))
    due_terms: tuple[timedelta, ...] = (timedelta(days=14), timedelta(days=30))
    # Live delivery only: how far an out-of-order or replayed event may trail its own time.
    redelivery: timedelta = timedelta(minutes=10)
    scale: float = 1.0


@dataclass(frozen=True)
class CleanMix:
    """Shares of clean contracts that take a noisier, still consistent, path."""

    failed_retry: float = 0.05
    cancelled: float = 0.03
    void_reissue: float = 0.03
    amend_credit: float = 0.03


@dataclass(frozen=True, kw_only=True)
class LandscapeConfig:
    now: datetime
    seed: int = 0
    contracts: int = 1000
    # Orders are booked between now - history[0] and now - history[1].
    history: tuple[timedelta, timedelta] = (timedelta(days=60), timedelta(days=4))
    entities: tuple[Entity, ...] = DEFAULT_ENTITIES
    systems: Systems = field(default_factory=Systems)
    order_amounts: tuple[Decimal, Decimal] = (Decimal("50.00"), Decimal("50000.00"))
    accounts: int = 5000
    recurring_share: float = 0.25
    recurring_counts: tuple[int, ...] = (3, 6, 12)
    fault_rate: float = 0.1
    fault_kinds: tuple[str, ...] = c.MISMATCH_KINDS
    orphan_rate: float = 0.005
    duplicate_rate: float = 0.02
    out_of_order_rate: float = 0.05
    refs_only_rate: float = 0.3
    clean_mix: CleanMix = field(default_factory=CleanMix)
    lags: LagProfile = field(default_factory=LagProfile)
    windows: Windows = field(default_factory=Windows)
    # No deadline falls within this of `now`, and nothing happens in the last `margin` before it.
    margin: timedelta = timedelta(days=1)
    id_prefix: str = ""
    first_index: int = 0

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        for name in ("recurring_share", "fault_rate", "orphan_rate", "duplicate_rate", "out_of_order_rate",
                     "refs_only_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        unknown = set(self.fault_kinds) - set(c.MISMATCH_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if not self.entities or self.contracts < 0:
            raise ValueError("a landscape needs entities and a non-negative number of contracts")
        if not self.recurring_counts or min(self.recurring_counts) < 1:
            raise ValueError("recurring_counts must be positive")
        oldest, newest = self.history
        if not self.margin * 3 <= newest < oldest:
            raise ValueError("history must end at least 3 margins before now and start before it ends")
        if c.CURRENCY_MISMATCH in self.fault_kinds and len(self.currencies) < 2:
            raise ValueError("currency_mismatch needs entities in at least two currencies")
        if c.ENTITY_MISMATCH in self.fault_kinds and len(self.entities) < 2:
            raise ValueError("entity_mismatch needs at least two entities")
        for kind, age in ((c.UNPAID_OVERDUE, UNPAID_MIN_AGE), (c.UNREVERSED_POSTING, UNREVERSED_MIN_AGE)):
            if kind in self.fault_kinds and oldest <= age:
                raise ValueError(f"{kind} needs a history reaching further back than {age}")

    @property
    def prefix(self) -> str:
        return self.id_prefix or f"s{self.seed}"

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(sorted({e.currency for e in self.entities}))

    @property
    def contract_faults(self) -> tuple[str, ...]:
        return tuple(k for k in CONTRACT_FAULTS if k in self.fault_kinds)

    @property
    def orphan_faults(self) -> tuple[str, ...]:
        return tuple(k for k in ORPHAN_FAULTS if k in self.fault_kinds)
