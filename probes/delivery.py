"""How events reach revtrace: some postings and payments name only their invoice, some contracts arrive
shuffled, some events arrive twice (same `event_id` and `source`). None of this may change the outcome.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from collector import conventions as c
from probes.config import LandscapeConfig

Event = dict[str, Any]
# Systems that often only know the invoice they act on, not the CRM's contract.
_REFS_ONLY_TYPES = frozenset({c.POSTING_CREATED, c.PAYMENT_SUCCEEDED, c.PAYMENT_FAILED})


class Delivery(NamedTuple):
    """An event and when it may be sent: its own time in history mode, its send time in live mode."""

    at: datetime
    event: Event


def _refs_only(rng: random.Random, timed: list[tuple[datetime, Event]], rate: float) -> list[Delivery]:
    out = []
    for at, ev in timed:
        if ev["type"] in _REFS_ONLY_TYPES and "contract_id" in ev and rng.random() < rate:
            ev = {k: v for k, v in ev.items() if k != "contract_id"}
        out.append(Delivery(at, ev))
    return out


def _replay(ev: Event) -> Event:
    copy = dict(ev)
    copy["refs"] = dict(ev["refs"])
    return copy


def deliver(rng: random.Random, timed: list[tuple[datetime, Event]], config: LandscapeConfig) -> list[Delivery]:
    """History mode: one contract's events in the order a batch would carry them."""
    out = _refs_only(rng, timed, config.refs_only_rate)
    if len(out) > 1 and rng.random() < config.out_of_order_rate:
        rng.shuffle(out)
    if config.duplicate_rate:
        for item in [d for d in out if rng.random() < config.duplicate_rate]:
            first = next(i for i, d in enumerate(out) if d is item)
            out.insert(rng.randint(first + 1, len(out)), Delivery(item.at, _replay(item.event)))
    return out


def schedule_live(rng: random.Random, timed: list[tuple[datetime, Event]], config: LandscapeConfig) -> list[Delivery]:
    """Live mode: each event is sent at its own time; shuffled contracts trail some events behind later
    ones, and a replay follows its original a little later."""
    trail = max(1, int(config.lags.redelivery.total_seconds() * config.lags.scale))
    shuffled = rng.random() < config.out_of_order_rate
    out = []
    for d in _refs_only(rng, timed, config.refs_only_rate):
        at = d.at + timedelta(seconds=rng.randint(0, trail)) if shuffled else d.at
        out.append(Delivery(at, d.event))
        if rng.random() < config.duplicate_rate:
            out.append(Delivery(at + timedelta(seconds=rng.randint(1, trail)), _replay(d.event)))
    out.sort(key=lambda d: d.at)
    return out
