"""The simulated CRM, billing, ERP and payment landscape, contract by contract.

Each contract draws from its own random stream, seeded by (seed, index), so a contract is the same
whether it is built alone, in a stream of a million, or by the live feed; and nothing accumulates while
streaming.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from probes.config import LandscapeConfig
from probes.delivery import Delivery, deliver, schedule_live
from probes.documents import Draft
from probes.faults import FAULTS
from probes.lifecycle import Variant, choose_clean
from probes.timeline import Infeasible, Timeline
from probes.truth import ExpectedMismatch, leakage_of

# A draw is redone when it cannot fit the history; some fault paths are rejected often, none always.
_MAX_DRAWS = 200


@dataclass(frozen=True, slots=True)
class ContractRun:
    """One contract (or one orphan document, `contract_id` None) as delivered, with its ground truth."""

    contract_id: str | None
    fault: str | None
    variant: str
    deliveries: list[Delivery]
    expected: list[ExpectedMismatch]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [d.event for d in self.deliveries]


@dataclass
class Landscape:
    """A whole run, collected: only for runs that fit in memory (tests, small CLI runs)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    truth: list[ExpectedMismatch] = field(default_factory=list)
    fault_counts: Counter[str] = field(default_factory=Counter)
    contracts: int = 0
    orphans: int = 0
    runs: list[ContractRun] = field(default_factory=list)

    @property
    def leakage(self) -> dict[str, Decimal]:
        return leakage_of(self.truth)


def build_contract(config: LandscapeConfig, index: int, *, live_at: datetime | None = None,
                   keep_future: bool = False) -> ContractRun:
    """Contract `index`. With `live_at` it is booked then and runs forward in (scaled) time; otherwise it
    is booked in the history before `config.now`, and with `keep_future` its recurring intervals after
    `now` are kept too (for the live feed to send when their time comes)."""
    rng = random.Random(f"{config.seed}/{index}")
    live = live_at is not None
    kinds = config.contract_faults
    fault: str | None = None
    if kinds and rng.random() < config.fault_rate:
        fault = rng.choice(kinds)
        clean_name, clean = "", None
    else:
        clean_name, clean = choose_clean(rng, config, live=live)
    return _draw(config, index, rng, fault, clean_name, clean, live_at=live_at, keep_future=keep_future)


def build_orphan(config: LandscapeConfig, index: int, *, live_at: datetime | None = None) -> ContractRun | None:
    """The orphan document that follows contract `index`, if one does."""
    rng = random.Random(f"{config.seed}/{index}/orphan")
    kinds = config.orphan_faults
    if not kinds or rng.random() >= config.orphan_rate:
        return None
    return _draw(config, index, rng, rng.choice(kinds), "", None, live_at=live_at, keep_future=False,
                 orphan=True)


def _draw(config: LandscapeConfig, index: int, rng: random.Random, fault: str | None, clean_name: str,
          clean: Variant | None, *, live_at: datetime | None, keep_future: bool, orphan: bool = False) -> ContractRun:
    for _ in range(_MAX_DRAWS):
        time = Timeline(rng, config, live_at=live_at, keep_future=keep_future)
        draft = Draft(config, index, rng, time, orphan=orphan)
        try:
            if fault is not None:
                variant = FAULTS[fault](draft)
            else:
                assert clean is not None
                clean(draft)
                variant = clean_name
        except Infeasible:
            continue
        delivery_rng = random.Random(f"{config.seed}/{index}/{'orphan-' if orphan else ''}delivery")
        timed = draft.timed_events()
        deliveries = (schedule_live if live_at is not None else deliver)(delivery_rng, timed, config)
        return ContractRun(draft.contract_id, fault, variant, deliveries, draft.expected)
    raise RuntimeError(f"contract {index} ({fault or clean_name}) does not fit the configured history")


def iter_contracts(config: LandscapeConfig, *, keep_future: bool = False) -> Iterator[ContractRun]:
    """Every contract of the config, each followed by its orphan if it has one, lazily."""
    for index in range(config.first_index, config.first_index + config.contracts):
        yield build_contract(config, index, keep_future=keep_future)
        orphan = build_orphan(config, index)
        if orphan is not None:
            yield orphan


def run_landscape(config: LandscapeConfig) -> Landscape:
    result = Landscape()
    for run in iter_contracts(config):
        result.runs.append(run)
        result.events.extend(run.events)
        result.truth.extend(run.expected)
        if run.contract_id is None:
            result.orphans += 1
        else:
            result.contracts += 1
        if run.fault is not None:
            result.fault_counts[run.fault] += 1
    return result
