"""Reads for the API and the pages: a contract's trace, pages of contracts and mismatches, and the
assurance summary. Lists page by keyset (the cursor is the last key seen), so a page costs the same at
any depth."""
from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select

from collector import conventions as c
from collector.documents import assemble
from collector.evaluate import LAG_COLUMNS
from collector.model import canonical_from_store
from collector.money import show, show_micros
from collector.policy import Policy
from collector.schema import contract_totals, contracts, events, mismatches
from collector.timeutil import rfc3339, to_us
from collector.trace import summarize

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class BadQuery(ValueError):
    """A query parameter that cannot be honoured, as "parameter: reason"."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type) -> Any:
    """The last key of the previous page, which must be of this list's key type."""
    if not cursor:
        return None
    try:
        after = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadQuery("cursor: not a cursor this server gave out") from None
    if not isinstance(after, kind) or isinstance(after, bool):
        raise BadQuery("cursor: not a cursor of this list")
    return after


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadQuery(f"limit: must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def mismatch_json(r: Any) -> dict[str, Any]:
    return {"id": str(r.id), "kind": r.kind, "state": r.state, "contract_id": r.contract_id,
            "amount_at_risk": r.amount_at_risk, "currency": r.currency, "detected_at": rfc3339(r.detected_us),
            "closed_at": rfc3339(r.closed_us), "evidence": orjson.loads(r.evidence)}


class Reads:
    def __init__(self, engine: Engine, policy: Policy):
        self.engine, self.policy = engine, policy

    def trace(self, contract_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            bodies = conn.execute(select(events.c.body).where(events.c.contract_key == contract_id)
                                  .order_by(events.c.at_us, events.c.id)).scalars().all()
            found = conn.execute(select(mismatches).where(
                (mismatches.c.scope == contract_id) | (mismatches.c.contract_id == contract_id))
                .order_by(mismatches.c.id)).all()
        if not bodies and not found:
            return None
        evs = [canonical_from_store(b) for b in bodies]
        s = summarize(assemble(evs, self.policy.duplicate_window))
        stages = {name: None if st is None else {"at": rfc3339(to_us(st.at)), "amount": show(st.amount),
                                                  "currency": st.currency}
                  for name, st in s.stages.items()}
        return {"contract_id": contract_id, "stage": s.stage, "stages": stages, "lags": s.lags,
                "mismatches": [mismatch_json(r) for r in found], "events": [e.to_json() for e in evs]}

    def mismatches(self, kind: str | None, state: str | None, contract_id: str | None, limit: int,
                   cursor: str | None) -> Page:
        if kind is not None and kind not in c.MISMATCH_KINDS:
            raise BadQuery(f"kind: unknown mismatch kind; known: {', '.join(c.MISMATCH_KINDS)}")
        if state is not None and state not in ("open", "closed"):
            raise BadQuery("state: must be open or closed")
        after = decode_cursor(cursor, int)
        q = select(mismatches).order_by(mismatches.c.id).limit(limit + 1)
        if state is not None:
            q = q.where(mismatches.c.state == state)
        if kind is not None:
            q = q.where(mismatches.c.kind == kind)
        if contract_id is not None:
            q = q.where(mismatches.c.contract_id == contract_id)
        if after is not None:
            q = q.where(mismatches.c.id > after)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([mismatch_json(r) for r in rows], encode_cursor(rows[-1].id) if more else None)

    def contracts(self, stage: str | None, mismatch: str | None, limit: int, cursor: str | None) -> Page:
        if stage is not None and stage not in c.STAGES:
            raise BadQuery(f"stage: unknown stage; known: {', '.join(c.STAGES)}")
        if mismatch is not None and mismatch not in c.MISMATCH_KINDS:
            raise BadQuery(f"mismatch: unknown mismatch kind; known: {', '.join(c.MISMATCH_KINDS)}")
        after = decode_cursor(cursor, str)
        q = select(contracts).order_by(contracts.c.contract_key).limit(limit + 1)
        if stage is not None:
            q = q.where(contracts.c.stage == stage)
        if mismatch is not None:
            q = q.where(contracts.c.contract_key.in_(
                select(mismatches.c.scope).where(mismatches.c.state == "open", mismatches.c.kind == mismatch,
                                                 mismatches.c.contract_id.is_not(None))))
        if after is not None:
            q = q.where(contracts.c.contract_key > after)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            more = len(rows) > limit
            rows = rows[:limit]
            counts = self._open_counts(conn, [r.contract_key for r in rows])
        items = [_contract_json(r, counts.get(r.contract_key, {})) for r in rows]
        return Page(items, encode_cursor(rows[-1].contract_key) if more else None)

    def stage_counts(self) -> dict[str, int]:
        """Contracts by the furthest stage reached, every stage present (0 when none)."""
        q = select(contract_totals.c.stage, func.sum(contract_totals.c.contracts)).group_by(contract_totals.c.stage)
        with self.engine.connect() as conn:
            found = {stage: int(n) for stage, n in conn.execute(q)}
        return {stage: found.get(stage, 0) for stage in c.STAGES}

    def newest_open(self, limit: int) -> list[dict[str, Any]]:
        """Open mismatches, newest first: a short walk back along the ids."""
        q = select(mismatches).where(mismatches.c.state == "open").order_by(mismatches.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [mismatch_json(r) for r in conn.execute(q)]

    @staticmethod
    def _open_counts(conn: Connection, keys: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        if keys:
            for scope, kind, n in conn.execute(
                    select(mismatches.c.scope, mismatches.c.kind, func.count()).where(
                        mismatches.c.scope.in_(keys), mismatches.c.state == "open")
                    .group_by(mismatches.c.scope, mismatches.c.kind)):
                out[scope][kind] = n
        return out


def _contract_json(r: Any, open_counts: dict[str, int]) -> dict[str, Any]:
    return {"contract_id": r.contract_key, "stage": r.stage, "currency": r.currency, "entity": r.entity,
            "ordered_at": rfc3339(r.ordered_us),
            "amounts": {"booked": show_micros(r.booked_micros), "invoiced": show_micros(r.invoiced_micros),
                        "posted": show_micros(r.posted_micros), "collected": show_micros(r.collected_micros)},
            "lags": {hop: getattr(r, col) for hop, col in LAG_COLUMNS.items()},
            "open_mismatches": open_counts}
