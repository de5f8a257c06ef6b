"""The cross-check: the count of each mismatch kind computed from the same events by DuckDB, one relational
join per rule of DESIGN.md's reconciliation semantics (as docs/reconciliation.md reads them), for comparison
with revtrace's open mismatches and the simulator's ground truth, and as the limit a full pass is held to.

The SQL follows collector/reconcile.py's readings, not its code: documents are tables keyed by contract and
document id, "live", "duplicate" and "foreign" are columns, and each kind is one query."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb

COLUMNS = ("{event_id: 'VARCHAR', source: 'VARCHAR', type: 'VARCHAR', occurred_at: 'VARCHAR', "
           "contract_id: 'VARCHAR', refs: 'STRUCT(order_id VARCHAR, invoice_id VARCHAR, posting_id VARCHAR, "
           "payment_id VARCHAR)', amount: 'VARCHAR', tax_amount: 'VARCHAR', currency: 'VARCHAR', entity: 'VARCHAR', "
           "due_at: 'VARCHAR', attributes: 'JSON'}")
MONEY = "DECIMAL(24,6)"

# Events once per (source, event_id), with typed columns; `seq` is the (occurred_at, source, event_id) order
# revtrace assembles documents in.
LOAD = f"""
CREATE OR REPLACE TABLE ev AS
SELECT *, row_number() OVER (ORDER BY ts, source, event_id) AS seq FROM (
  SELECT any_value(event_id) AS event_id, source, any_value(type) AS type,
         any_value(occurred_at)::TIMESTAMPTZ AS ts, any_value(contract_id) AS contract_id,
         any_value(refs.order_id) AS order_id, any_value(refs.invoice_id) AS invoice_id,
         any_value(refs.posting_id) AS posting_id, any_value(refs.payment_id) AS payment_id,
         any_value(amount)::{MONEY} AS amount, any_value(tax_amount)::{MONEY} AS tax,
         any_value(currency) AS currency, any_value(entity) AS entity, any_value(due_at)::TIMESTAMPTZ AS due_at,
         any_value(json_exists(attributes, '$.billing')) AS has_billing,
         any_value(CASE WHEN json_type(attributes, '$.billing') = 'OBJECT'
                        THEN json_extract(attributes, '$.billing.count')::INTEGER END) AS billing_count
  FROM read_json({{files}}, format='newline_delimited', columns={COLUMNS})
  GROUP BY source, event_id)
"""

# Contract of every event: its contract_id, or the contract its refs name (invoice, order, posting, payment,
# in that order). An event keeps the contract it has; rounds go on while the events resolved in a round
# claim a ref the map lacks or name a lower contract for it (which would resolve more), and not longer.
RESOLVE_FIRST = "CREATE OR REPLACE TABLE ck AS SELECT seq, contract_id AS ck FROM ev"
_CLAIMS = """SELECT kind, ref, ck FROM (
  UNPIVOT (SELECT k.ck, e.order_id AS "order", e.invoice_id AS invoice, e.posting_id AS posting,
                  e.payment_id AS payment
           FROM ev e JOIN {table} k USING (seq) WHERE k.ck IS NOT NULL)
  ON "order", invoice, posting, payment INTO NAME kind VALUE ref)"""
RESOLVE_ROUND = [
    f"CREATE OR REPLACE TABLE refmap AS SELECT kind, ref, min(ck) AS ck FROM ({_CLAIMS.format(table='ck')}) "
    "GROUP BY kind, ref",
    """CREATE OR REPLACE TABLE ck_next AS
       SELECT k.seq, coalesce(k.ck, i.ck, o.ck, p.ck, y.ck) AS ck FROM ck k JOIN ev e USING (seq)
       LEFT JOIN refmap i ON i.kind = 'invoice' AND i.ref = e.invoice_id
       LEFT JOIN refmap o ON o.kind = 'order' AND o.ref = e.order_id
       LEFT JOIN refmap p ON p.kind = 'posting' AND p.ref = e.posting_id
       LEFT JOIN refmap y ON y.kind = 'payment' AND y.ref = e.payment_id""",
    """CREATE OR REPLACE TABLE resolved AS
       SELECT n.seq, n.ck FROM ck_next n JOIN ck k USING (seq) WHERE k.ck IS NULL AND n.ck IS NOT NULL""",
    "DROP TABLE ck",
    "ALTER TABLE ck_next RENAME TO ck",
]
RESOLVE_GROWS = f"""SELECT count(*) FROM ({_CLAIMS.format(table='resolved')}) c
  LEFT JOIN refmap m USING (kind, ref) WHERE m.ck IS NULL OR c.ck < m.ck"""
MAX_ROUNDS = 32

DOCUMENTS = [
    "CREATE OR REPLACE TABLE e AS SELECT ev.*, ck.ck FROM ev JOIN ck USING (seq) WHERE ck.ck IS NOT NULL",
    # The order: the first booking (else the first amendment), each field overridden by later amendments.
    """CREATE OR REPLACE TABLE orders AS
       WITH b AS (SELECT ck, arg_min(seq, (type <> 'order.booked', seq)) AS base FROM e
                  WHERE type IN ('order.booked', 'order.amended') GROUP BY ck),
            am AS (SELECT ck, arg_max(amount, seq) FILTER (WHERE amount IS NOT NULL) AS amount,
                          arg_max(currency, seq) FILTER (WHERE currency IS NOT NULL AND currency <> '') AS currency,
                          arg_max(entity, seq) FILTER (WHERE entity IS NOT NULL AND entity <> '') AS entity,
                          arg_max(billing_count, seq) FILTER (WHERE has_billing) AS billing_count,
                          bool_or(has_billing) AS has_billing
                   FROM e WHERE type = 'order.amended' GROUP BY ck),
            cx AS (SELECT DISTINCT ck FROM e WHERE type = 'order.cancelled')
       SELECT b.ck, o.ts, coalesce(am.amount, o.amount, 0) AS amount,
              coalesce(am.currency, o.currency) AS currency, coalesce(am.entity, o.entity) AS entity,
              CASE WHEN am.has_billing THEN am.billing_count ELSE o.billing_count END AS billing_count,
              cx.ck IS NOT NULL AS cancelled
       FROM b JOIN e o ON o.seq = b.base LEFT JOIN am ON am.ck = b.ck LEFT JOIN cx ON cx.ck = b.ck""",
    # Invoices, their voids and credits (a credit without an amount credits the rest).
    """CREATE OR REPLACE TABLE inv0 AS
       SELECT ck, iid, arg_min(seq, seq) AS seq FROM (
         SELECT ck, coalesce(invoice_id, event_id) AS iid, seq FROM e WHERE type = 'invoice.issued')
       GROUP BY ck, iid""",
    """CREATE OR REPLACE TABLE inv AS
       WITH base AS (SELECT i.ck, i.iid, e.ts, coalesce(e.amount, 0) AS issued, coalesce(e.tax, 0) AS tax,
                            e.currency, e.entity, e.due_at, e.event_id
                     FROM inv0 i JOIN e USING (seq)),
            voids AS (SELECT ck, invoice_id AS iid, min(ts) AS voided_at FROM e
                      WHERE type = 'invoice.voided' GROUP BY ALL),
            cr AS (SELECT b.ck, b.iid, c.ts, b.issued,
                          sum(coalesce(c.amount, b.issued)) OVER (PARTITION BY b.ck, b.iid ORDER BY c.ts, c.event_id
                              ROWS UNBOUNDED PRECEDING) AS total
                   FROM e c JOIN base b ON b.ck = c.ck AND b.iid = c.invoice_id WHERE c.type = 'invoice.credited'),
            credits AS (SELECT ck, iid, least(max(total), any_value(issued)) AS credited,
                               min(ts) FILTER (WHERE total >= issued) AS closed_at FROM cr GROUP BY ck, iid)
       SELECT b.*, coalesce(c.credited, 0) AS credited, b.issued - coalesce(c.credited, 0) AS net,
              least(v.voided_at, c.closed_at) AS ended_at,
              v.voided_at IS NULL AND c.closed_at IS NULL AS live
       FROM base b LEFT JOIN voids v USING (ck, iid) LEFT JOIN credits c USING (ck, iid)""",
    # Duplicates: a later live invoice matching an earlier kept one within 24 h; "kept" is taken two levels
    # deep, which is exact for up to three matching invoices in a day.
    """CREATE OR REPLACE TABLE dup1 AS
       SELECT DISTINCT a.ck, a.iid FROM inv a JOIN inv k ON a.ck = k.ck AND k.live AND a.live
         AND k.issued = a.issued AND k.currency IS NOT DISTINCT FROM a.currency AND (k.ts, k.iid) < (a.ts, a.iid)
         AND a.ts - k.ts <= INTERVAL 24 HOUR""",
    """CREATE OR REPLACE TABLE invd AS
       SELECT i.*, i.live AND EXISTS (
           SELECT 1 FROM inv k WHERE k.ck = i.ck AND k.live AND k.issued = i.issued
             AND k.currency IS NOT DISTINCT FROM i.currency AND (k.ts, k.iid) < (i.ts, i.iid)
             AND i.ts - k.ts <= INTERVAL 24 HOUR
             AND NOT EXISTS (SELECT 1 FROM dup1 d WHERE d.ck = k.ck AND d.iid = k.iid)) AS dup
       FROM inv i""",
    # The contract's currency: its order's, else its earliest invoice's.
    """CREATE OR REPLACE TABLE cur AS
       SELECT c.ck, coalesce(o.currency, f.currency) AS currency, o.entity AS order_entity FROM
         (SELECT DISTINCT ck FROM e) c LEFT JOIN orders o USING (ck)
         LEFT JOIN (SELECT ck, arg_min(currency, (ts, iid)) AS currency FROM inv GROUP BY ck) f USING (ck)""",
    """CREATE OR REPLACE TABLE invx AS
       SELECT i.*, (c.currency IS NOT NULL AND i.currency IS NOT NULL AND i.currency <> c.currency) AS foreign_,
              i.live AND NOT i.dup AS kept, coalesce(i.entity, c.order_entity) AS expected_entity
       FROM invd i JOIN cur c USING (ck)""",
    # Postings (first issue of each id) with their reversal, and payments; a posting or payment naming no
    # invoice belongs to the contract's one kept invoice when there is exactly one.
    """CREATE OR REPLACE TABLE only_inv AS SELECT ck, any_value(iid) AS iid FROM invx WHERE kept
       GROUP BY ck HAVING count(*) = 1""",
    """CREATE OR REPLACE TABLE post AS
       WITH p0 AS (SELECT ck, pid, arg_min(seq, seq) AS seq FROM (
                     SELECT ck, coalesce(posting_id, event_id) AS pid, seq FROM e WHERE type = 'posting.created')
                   GROUP BY ck, pid),
            rev AS (SELECT DISTINCT ck, posting_id AS pid FROM e WHERE type = 'posting.reversed')
       SELECT p0.ck, p0.pid, e.ts, coalesce(e.amount, 0) AS amount, coalesce(e.tax, 0) AS tax, e.currency, e.entity,
              e.event_id, coalesce(e.invoice_id, oi.iid) AS iref, rev.pid IS NOT NULL AS reversed,
              (c.currency IS NOT NULL AND e.currency IS NOT NULL AND e.currency <> c.currency) AS foreign_
       FROM p0 JOIN e USING (seq) JOIN cur c ON c.ck = p0.ck LEFT JOIN rev ON rev.ck = p0.ck AND rev.pid = p0.pid
       LEFT JOIN only_inv oi ON oi.ck = p0.ck""",
    """CREATE OR REPLACE TABLE postr AS
       SELECT *, row_number() OVER (PARTITION BY ck, iref ORDER BY ts, pid) AS rank FROM post WHERE NOT reversed""",
    """CREATE OR REPLACE TABLE pay AS
       WITH pi AS (SELECT ck, payment_id, arg_min(invoice_id, seq) AS iid FROM e
                   WHERE type = 'payment.succeeded' AND payment_id IS NOT NULL AND invoice_id IS NOT NULL
                   GROUP BY ck, payment_id)
       SELECT e.ck, e.seq, e.ts, e.type, coalesce(e.amount, 0) AS amount, e.currency, e.event_id,
              coalesce(e.invoice_id, CASE WHEN e.type = 'payment.refunded' THEN pi.iid END, oi.iid) AS iref,
              (c.currency IS NOT NULL AND e.currency IS NOT NULL AND e.currency <> c.currency) AS foreign_
       FROM e JOIN cur c USING (ck) LEFT JOIN pi ON pi.ck = e.ck AND pi.payment_id = e.payment_id
       LEFT JOIN only_inv oi ON oi.ck = e.ck
       WHERE e.type IN ('payment.succeeded', 'payment.refunded', 'payment.failed')""",
]

# One query per kind; $now is the evaluation time.
KINDS = {
    "duplicate_invoice": "SELECT count(*) FROM invx WHERE dup",
    "currency_mismatch": """SELECT
        (SELECT count(*) FROM invx WHERE kept AND foreign_)
      + (SELECT count(*) FROM postr p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
         WHERE i.kept AND p.foreign_ AND p.rank = 1)
      + (SELECT count(*) FROM pay p LEFT JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
         WHERE p.type <> 'payment.failed' AND p.foreign_ AND (p.iref IS NULL OR i.kept))""",
    "missing_invoice": """SELECT coalesce(sum(greatest(0, o.past - coalesce(n.kept, 0))), 0) FROM intervals o
      LEFT JOIN (SELECT ck, count(*) AS kept FROM invx WHERE kept GROUP BY ck) n USING (ck) WHERE NOT o.cancelled""",
    "amount_mismatch": """SELECT
        (SELECT count(*) FROM intervals o JOIN billed b USING (ck)
         WHERE b.billed > o.amount * o.started
            OR b.billed < o.amount * least(b.domestic, o.past))
      + (SELECT count(*) FROM postr p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
         WHERE i.kept AND NOT i.foreign_ AND p.rank = 1 AND NOT p.foreign_ AND p.amount <> i.net)
      + (SELECT count(*) FROM paid WHERE paid > total)""",
    "missing_posting": """SELECT count(*) FROM invx i WHERE i.kept AND NOT i.foreign_
      AND $now > i.ts + INTERVAL 1 HOUR
      AND NOT EXISTS (SELECT 1 FROM postr p WHERE p.ck = i.ck AND p.iref = i.iid)""",
    "duplicate_posting": """SELECT count(*) FROM postr p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
      WHERE i.kept AND NOT i.foreign_ AND p.rank > 1""",
    "tax_mismatch": """SELECT count(*) FROM postr p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
      WHERE i.kept AND NOT i.foreign_ AND p.rank = 1 AND NOT p.foreign_ AND p.tax <> i.tax""",
    "entity_mismatch": """SELECT count(*) FROM postr p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
      WHERE i.kept AND NOT i.foreign_ AND p.rank = 1 AND NOT p.foreign_ AND p.entity IS NOT NULL
        AND i.expected_entity IS NOT NULL AND p.entity <> i.expected_entity""",
    "unpaid_overdue": """SELECT count(*) FROM paid
      WHERE paid < total AND $now > coalesce(due_at, ts + INTERVAL 30 DAY) + INTERVAL 1 DAY""",
    "unreversed_posting": """SELECT count(*) FROM post p JOIN invx i ON i.ck = p.ck AND i.iid = p.iref
      WHERE NOT p.reversed AND NOT i.dup AND i.ended_at IS NOT NULL AND $now > i.ended_at + INTERVAL 1 HOUR""",
    "orphan_posting": """SELECT
        (SELECT count(*) FROM post p WHERE NOT p.reversed AND p.iref IS NOT NULL AND $now > p.ts + INTERVAL 1 HOUR
           AND NOT EXISTS (SELECT 1 FROM inv i WHERE i.ck = p.ck AND i.iid = p.iref))
      + (SELECT count(*) FROM ev JOIN ck USING (seq) WHERE ck.ck IS NULL AND type = 'posting.created'
           AND invoice_id IS NOT NULL AND $now > ts + INTERVAL 1 HOUR)""",
    "orphan_payment": """SELECT
        (SELECT count(*) FROM pay p WHERE p.type = 'payment.succeeded' AND p.iref IS NOT NULL
           AND $now > p.ts + INTERVAL 1 HOUR AND NOT EXISTS (SELECT 1 FROM inv i WHERE i.ck = p.ck AND i.iid = p.iref))
      + (SELECT count(*) FROM ev JOIN ck USING (seq) WHERE ck.ck IS NULL AND type = 'payment.succeeded'
           AND invoice_id IS NOT NULL AND $now > ts + INTERVAL 1 HOUR)""",
}

# Per order: intervals started by now, and those past their 24 h invoice window (calendar months apart).
PER_NOW = [
    """CREATE OR REPLACE TABLE intervals AS
       SELECT ck, amount, cancelled,
              CASE WHEN cancelled THEN 0 ELSE count(*) FILTER (WHERE $now >= start) END AS started,
              CASE WHEN cancelled THEN 0
                   ELSE count(*) FILTER (WHERE $now >= start AND $now > start + INTERVAL 24 HOUR) END AS past
       FROM (SELECT o.*, o.ts + to_months(k::INTEGER) AS start
             FROM orders o, range(coalesce(o.billing_count, 1)) r(k))
       GROUP BY ck, amount, cancelled""",
    """CREATE OR REPLACE TABLE billed AS
       SELECT ck, sum(net) AS billed, count(*) AS domestic FROM invx WHERE kept AND NOT foreign_ GROUP BY ck""",
    """CREATE OR REPLACE TABLE paid AS
       SELECT i.ck, i.iid, i.ts, i.due_at, i.net + i.tax AS total,
              coalesce(sum(CASE p.type WHEN 'payment.succeeded' THEN p.amount ELSE -p.amount END), 0) AS paid
       FROM invx i LEFT JOIN pay p ON p.ck = i.ck AND p.iref = i.iid AND NOT p.foreign_ AND p.type <> 'payment.failed'
       WHERE i.kept AND NOT i.foreign_ GROUP BY ALL""",
]


class CrossCheck:
    """Events loaded once into DuckDB; `counts` runs the join (the figure a full pass is compared with)."""

    def __init__(self, shards: Sequence[Path], memory_limit: str = "6GB"):
        self.db = duckdb.connect(config={"memory_limit": memory_limit})
        self.db.execute("SET TimeZone = 'UTC'")
        self.rounds = 0
        started = time.perf_counter()
        files = "[" + ", ".join(f"'{p}'" for p in shards) + "]"
        self.db.execute(LOAD.replace("{files}", files))
        self.load_seconds = time.perf_counter() - started
        row = self.db.execute("SELECT count(*) FROM ev").fetchone()
        self.events = int(row[0]) if row else 0

    def counts(self, now: datetime) -> tuple[dict[str, int], float]:
        """Open mismatches per kind at `now`, and the seconds the join took."""
        started = time.perf_counter()
        self.rounds = self._resolve()
        for stmt in DOCUMENTS:
            self.db.execute(stmt)
        # A literal rather than a parameter: DuckDB binds none inside CREATE TABLE ... AS.
        stamp = f"TIMESTAMPTZ '{now.isoformat()}'"
        for stmt in PER_NOW:
            self.db.execute(stmt.replace("$now", stamp))
        out = {}
        for kind, q in KINDS.items():
            row = self.db.execute(q.replace("$now", stamp)).fetchone()
            out[kind] = int(row[0]) if row and row[0] is not None else 0
        return dict(sorted(out.items())), time.perf_counter() - started

    def _resolve(self) -> int:
        """Give every event its contract; the number of rounds it took."""
        self.db.execute(RESOLVE_FIRST)
        for rounds in range(1, MAX_ROUNDS + 1):
            for stmt in RESOLVE_ROUND:
                self.db.execute(stmt)
            row = self.db.execute(RESOLVE_GROWS).fetchone()
            if not row or not row[0]:
                return rounds
        raise RuntimeError(f"the contracts of the events did not settle in {MAX_ROUNDS} rounds")

    def close(self) -> None:
        self.db.close()
