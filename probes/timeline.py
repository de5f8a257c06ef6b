"""When things happen in one simulated contract, kept clear of `now`.

In history mode every event of the past lands at least `margin` before `now` and no deadline falls within
`margin` of it, so the ground truth holds whenever revtrace evaluates near `now`. A draw that cannot fit
raises `Infeasible` and the contract is drawn again. In live mode times run forward from the booking with
no such limits.
"""
from __future__ import annotations

import calendar
import random
from datetime import UTC, datetime, timedelta

from probes.config import RECURRING_SETTLE, LandscapeConfig


class Infeasible(Exception):
    """This draw does not fit the history window; draw the contract again."""


def add_months(t: datetime, months: int) -> datetime:
    """Calendar months, the day clamped to the month's length (Jan 31 + 1 month = Feb 28)."""
    month0 = t.month - 1 + months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def rfc3339(t: datetime) -> str:
    text = t.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class Timeline:
    def __init__(self, rng: random.Random, config: LandscapeConfig, *, live_at: datetime | None = None,
                 keep_future: bool = False) -> None:
        self._rng = rng
        self._config = config
        self._scale = config.lags.scale
        self.live = live_at is not None
        self.keep_future = keep_future
        self._live_at = None if live_at is None else live_at.astimezone(UTC).replace(microsecond=0)
        self._now = config.now.astimezone(UTC)
        # Nothing derived from a past event may happen after this.
        self._latest = None if self.live else self._now - config.margin

    def order_time(self, min_age: timedelta = timedelta(0)) -> datetime:
        if self._live_at is not None:
            return self._live_at
        oldest, newest = self._config.history
        lo = int(oldest.total_seconds())
        hi = int(max(newest, min_age).total_seconds())
        if hi >= lo:
            raise Infeasible(f"history is shorter than {min_age}")
        return self._now - timedelta(seconds=self._rng.randint(hi, lo))

    def after(self, t: datetime, span: tuple[timedelta, timedelta]) -> datetime:
        """A moment `span` (scaled) after `t`, never at `t` itself so that cause precedes effect."""
        lo = max(1, int(span[0].total_seconds() * self._scale))
        hi = max(lo, int(span[1].total_seconds() * self._scale))
        if self._latest is not None and t <= self._latest:
            room = int((self._latest - t).total_seconds())
            if room < lo:
                raise Infeasible("no room before the margin")
            hi = min(hi, room)
        return t + timedelta(seconds=self._rng.randint(lo, hi))

    def scaled(self, d: timedelta) -> timedelta:
        return timedelta(seconds=max(1, int(d.total_seconds() * self._scale)))

    def deadline(self, t: datetime) -> None:
        if not self.live and abs(t - self._now) <= self._config.margin:
            raise Infeasible("deadline too close to now")

    def due_at(self, issued: datetime, *, overdue: bool = False) -> datetime:
        """A due date whose overdue deadline is clear of `now`, and already past it when `overdue`."""
        grace = self._config.windows.overdue
        terms = [self.scaled(term) for term in self._config.lags.due_terms]
        if not self.live:
            def fits(term: timedelta) -> bool:
                deadline = issued + term + grace
                if overdue:
                    return deadline < self._now - self._config.margin
                return abs(deadline - self._now) > self._config.margin
            terms = [term for term in terms if fits(term)]
        if not terms:
            raise Infeasible("no payment term fits")
        return issued + self._rng.choice(terms)

    def interval_started(self, start: datetime) -> bool:
        """Whether a recurring interval has started; the ones near `now` are drawn again."""
        if self.live:
            return True
        if self._now - RECURRING_SETTLE <= start <= self._now + self._config.margin:
            raise Infeasible("recurring interval starts too close to now")
        return start < self._now
