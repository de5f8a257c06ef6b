"""Events that joined no contract yet (a payment that came before its invoice). They wait with the refs
that may still lead to a contract, so that a pass finds the ones a new claim resolves by an index join,
and looks at the others only when their orphan grace has passed: the cost follows what changed."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, delete, select, update

from collector import conventions as c
from collector.model import CanonicalEvent
from collector.schema import ref_map, waiting, waiting_refs
from collector.sqlutil import among, insert_ignore
from collector.timeutil import to_us

ORPHANABLE = frozenset({c.POSTING_CREATED, c.PAYMENT_SUCCEEDED})


def orphan_at_us(ev: CanonicalEvent) -> int | None:
    """When a waiting event may become an orphan: postings and payments of an invoice; others never do."""
    return to_us(ev.occurred_at) if ev.type in ORPHANABLE and "invoice_id" in ev.refs else None


def register(conn: Connection, evs: Sequence[tuple[int, CanonicalEvent]]) -> None:
    if not evs:
        return
    insert_ignore(conn, waiting, [{"event_pk": pk, "orphan_at_us": orphan_at_us(ev), "reported": 0} for pk, ev in evs],
                  ["event_pk"])
    insert_ignore(conn, waiting_refs, [{"kind": k, "ref": ev.refs[k], "event_pk": pk}
                                       for pk, ev in evs for k in c.JOIN_REFS if k in ev.refs],
                  ["kind", "ref", "event_pk"])


def joinable(conn: Connection) -> dict[int, str]:
    """Waiting events whose refs now lead to a contract, each by its most telling ref."""
    rank = {k: i for i, k in enumerate(c.JOIN_REFS)}
    best: dict[int, tuple[int, str]] = {}
    # A lookup of ref_map's key per waiting ref, not a join: with the statistics of a large store PostgreSQL
    # would hash-join by scanning every claim (0.14 s a pass at 100k contracts, ten times that at 1M), where
    # the waiting refs are a few thousand at most.
    claimed = (select(ref_map.c.contract_key)
               .where(ref_map.c.kind == waiting_refs.c.kind, ref_map.c.ref == waiting_refs.c.ref)
               .scalar_subquery())
    found = select(waiting_refs.c.event_pk, waiting_refs.c.kind, claimed.label("key")).subquery()
    q = select(found.c.event_pk, found.c.kind, found.c.key).where(found.c.key.is_not(None))
    for pk, kind, key in conn.execute(q):
        r = rank.get(kind, len(rank))
        if pk not in best or r < best[pk][0]:
            best[pk] = (r, key)
    return {pk: key for pk, (_, key) in best.items()}


def forget(conn: Connection, pks: Sequence[int]) -> None:
    for i in range(0, len(pks), 500):
        part = list(pks[i:i + 500])
        conn.execute(delete(waiting_refs).where(among(conn, waiting_refs.c.event_pk, part)))
        conn.execute(delete(waiting).where(among(conn, waiting.c.event_pk, part)))


def past_grace(conn: Connection, before_us: int, again: bool) -> list[int]:
    """Waiting postings and payments older than the grace: those not looked at yet, or with `again` all."""
    q = select(waiting.c.event_pk).where(waiting.c.orphan_at_us <= before_us)
    if not again:
        q = q.where(waiting.c.reported == 0)
    return list(conn.execute(q.order_by(waiting.c.event_pk)).scalars())


def mark_reported(conn: Connection, pks: Sequence[int]) -> None:
    if pks:
        conn.execute(update(waiting).where(waiting.c.event_pk == bindparam("pk")).values(reported=1),
                     [{"pk": pk} for pk in pks])
