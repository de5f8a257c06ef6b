"""Clean contracts: the quote-to-cash paths that must produce no mismatch at all.

The plain path is order → invoice → posting → payment. The noisy variants (a failed payment retried, a
cancelled order, a void and reissue, a downgrade with a partial credit, a recurring order) stay
consistent, so any mismatch revtrace reports for them is a false positive.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from probes.config import RECURRING_GAP_MIN_AGE, LandscapeConfig
from probes.documents import Draft, Invoice, Order, Payment, Posting
from probes.timeline import Infeasible, add_months

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
Variant = Callable[[Draft], None]


# ---------------------------------------------------------------- steps shared with the faults
def book(d: Draft, *, min_age: timedelta = timedelta(0), amount: int | None = None) -> Order:
    at = d.time.order_time(min_age)
    return d.order(at, d.amount() if amount is None else amount)


def issue(d: Draft, order: Order, *, amount: int | None = None, at: datetime | None = None,
          currency: str | None = None, overdue: bool = False) -> Invoice:
    at = at or d.time.after(order.at, d.config.lags.invoice)
    return d.invoice(at, order, order.amount if amount is None else amount, currency=currency,
                     overdue=overdue)


def posting_time(d: Draft, inv: Invoice) -> datetime:
    lags = d.config.lags
    # A lag spike is late but in place long before evaluation: visible as lag, never as a mismatch.
    span = lags.spike if d.rng.random() < lags.spike_rate else lags.posting
    return d.time.after(inv.at, span)


def post(d: Draft, inv: Invoice, *, amount: int | None = None, tax: int | None = None,
         entity: str | None = None) -> Posting:
    return d.posting(posting_time(d, inv), inv, amount=amount, tax=tax, entity=entity)


def payment_time(d: Draft, inv: Invoice, since: datetime | None = None, until: datetime | None = None) -> datetime:
    lo, hi = d.config.lags.payment
    start = since or inv.at
    # Customers pay on time: by the due date (or `until`), however the lags are tuned. The room is in
    # unscaled time, like the lags.
    room = ((until or inv.due_at) - start) / d.config.lags.scale
    return d.time.after(start, (lo, max(lo, min(hi, room))))


def settle(d: Draft, inv: Invoice, *, amount: int | None = None, since: datetime | None = None) -> Payment:
    return d.payment(payment_time(d, inv, since), inv, inv.total if amount is None else amount)


def full_chain(d: Draft, order: Order) -> Invoice:
    return full_chain_from(d, order, d.time.after(order.at, d.config.lags.invoice))


def full_chain_from(d: Draft, order: Order, at: datetime) -> Invoice:
    inv = issue(d, order, at=at)
    post(d, inv)
    settle(d, inv)
    return inv


# ---------------------------------------------------------------- the clean variants
def plain(d: Draft) -> None:
    full_chain(d, book(d))


def failed_retry(d: Draft) -> None:
    inv = issue(d, book(d))
    post(d, inv)
    # The first attempt fails early enough for the retry to be on time too.
    failed = d.payment(payment_time(d, inv, until=inv.at + (inv.due_at - inv.at) / 2), inv, inv.total, failed=True)
    settle(d, inv, since=failed.at)


def cancelled(d: Draft) -> None:
    order = book(d)
    d.cancel(d.time.after(order.at, (10 * MINUTE, 20 * HOUR)), order)


def void_reissue(d: Draft) -> None:
    order = book(d)
    first = issue(d, order)
    first_post = post(d, first)
    voided = d.time.after(first_post.at, (10 * MINUTE, 12 * HOUR))
    d.void(voided, first)
    d.reverse(d.time.after(voided, (MINUTE, 30 * MINUTE)), first_post, first)
    full_chain_from(d, order, d.time.after(voided, (5 * MINUTE, 6 * HOUR)))


def amend_credit(d: Draft) -> None:
    order = book(d)
    inv = issue(d, order)
    lower = order.amount - d.rng.randint(1, order.amount // 2)
    if d.rng.random() < 0.5:
        # Downgrade caught before the ERP posted: the posting already carries the credited amount.
        amended = d.time.after(inv.at, (2 * MINUTE, 10 * MINUTE))
        d.amend(amended, order, lower)
        credited = d.time.after(amended, (MINUTE, 5 * MINUTE))
        d.credit(credited, inv, order.amount - lower)
        d.posting(d.time.after(credited, (MINUTE, 10 * MINUTE)), inv, amount=lower)
        paid_from = credited
    else:
        # Downgrade after posting: the ERP reverses and re-posts at the credited amount, tax unchanged.
        first = post(d, inv)
        amended = d.time.after(first.at, (HOUR, 12 * HOUR))
        d.amend(amended, order, lower)
        credited = d.time.after(amended, (MINUTE, HOUR))
        d.credit(credited, inv, order.amount - lower)
        reversed_at = d.time.after(credited, (MINUTE, 30 * MINUTE))
        d.reverse(reversed_at, first, inv)
        paid_from = d.posting(d.time.after(reversed_at, (MINUTE, 30 * MINUTE)), inv, amount=lower).at
    d.payment(payment_time(d, inv, paid_from), inv, lower + inv.tax)


def recurring(d: Draft, *, gap: bool = False) -> tuple[Order, int]:
    """One invoice, posting and payment per started interval; with `gap`, one started interval other than
    the last goes uninvoiced. Answers the order and how many of its intervals started."""
    count = d.rng.choice(d.config.recurring_counts)
    at = d.time.order_time(RECURRING_GAP_MIN_AGE if gap else timedelta(0))
    if at.day > 28:
        # Month-end anchors make "k calendar months later" depend on the clamping rule; stay clear of it.
        raise Infeasible("recurring orders anchor on days 1-28")
    amount = d.amount()
    order = d.order(at, amount, intervals=count)
    starts = [add_months(at, k) for k in range(count)]
    started = [d.time.interval_started(s) for s in starts]
    n_started = sum(started)
    skip = None
    if gap:
        if n_started < 2:
            raise Infeasible("a gap needs two started intervals")
        skip = d.rng.randrange(n_started - 1)
    for k, start in enumerate(starts):
        if not started[k] and not d.time.keep_future:
            continue
        d.time.deadline(start + d.config.windows.invoice)
        if k == skip:
            continue
        full_chain_from(d, order, d.time.after(start, d.config.lags.invoice))
    return order, n_started


def recurring_clean(d: Draft) -> None:
    recurring(d)


def choose_clean(rng: random.Random, config: LandscapeConfig, *, live: bool) -> tuple[str, Variant]:
    mix = config.clean_mix
    r = rng.random()
    for name, share, variant in (("failed_retry", mix.failed_retry, failed_retry),
                                 ("cancelled", mix.cancelled, cancelled),
                                 ("void_reissue", mix.void_reissue, void_reissue),
                                 ("amend_credit", mix.amend_credit, amend_credit)):
        if r < share:
            return name, variant
        r -= share
    if not live and rng.random() < config.recurring_share:
        return "recurring", recurring_clean
    return "plain", plain
