"""running totals for the reads: open mismatches by kind and currency, hop lags by bucket

The assurance summary, the overview page and /metrics summed every open mismatch and walked the lag
indexes from end to end at each request. These two tables hold those sums, kept by triggers in the same
transaction as the rows they sum, whoever writes them: a read then costs the same at any store size.

lag_buckets counts each hop's lags in log-linear buckets (2^SUB per power of two of the magnitude): a
percentile reads the counts to learn which bucket holds its rank, then walks the lag's index inside that
bucket only. A bucket is named by its lower bound, floor(lag / width) * width, so every lag >= a bound
lies in that bucket or a higher one, and bounds are exact binary fractions (equality is exact).

Revision ID: 0006
Revises: 0004
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

LAGS = {"order_to_invoice": "lag_order_to_invoice", "invoice_to_posting": "lag_invoice_to_posting",
        "invoice_to_payment": "lag_invoice_to_payment"}
# Magnitudes below 2^LOW seconds (under a microsecond: lags are whole microseconds) share one bucket;
# from 2^HIGH seconds (35,000 years) on, the width stops growing.
LOW, HIGH, SUB = -20, 40, 5
TRIGGER_OPS = ("insert", "update", "delete")


def _width(v: str) -> str:
    """SQL for the width of the bucket of v: a balanced tree of comparisons, a few per value, not one per
    power of two."""
    bins = ([(2.0 ** LOW, 2.0 ** LOW)] + [(2.0 ** (e + 1), 2.0 ** (e - SUB)) for e in range(LOW, HIGH)]
            + [(None, 2.0 ** (HIGH - SUB))])

    def tree(part: list[tuple[float | None, float]]) -> str:
        if len(part) == 1:
            return repr(part[0][1])
        mid = len(part) // 2
        return f"CASE WHEN ABS({v}) < {part[mid - 1][0]!r} THEN {tree(part[:mid])} ELSE {tree(part[mid:])} END"
    return tree(bins)


def bucket_of(sqlite: bool, v: str) -> str:
    """SQL for the bucket (lower bound) of the lag v, floor(v / width) * width; v must be a plain column
    reference. SQLite has no FLOOR() unless built with its math functions, and CAST truncates toward zero."""
    w = _width(v)
    if not sqlite:
        return f"(FLOOR({v} / ({w})) * ({w}))"
    q, neg = f"CAST({v} / ({w}) AS INTEGER)", f"CAST(-{v} / ({w}) AS INTEGER)"
    return f"((CASE WHEN {v} >= 0 THEN {q} ELSE -{neg} - ({neg} < -{v} / ({w})) END) * ({w}))"


def _lag_rows(sqlite: bool, source: str, alias: str, sign: int) -> str:
    """One (hop, bucket, change) row per non-null lag of each row of source."""
    return " UNION ALL ".join(
        f"SELECT '{hop}' AS hop, {bucket_of(sqlite, f'{alias}.{col}')} AS bucket, {sign} AS n "
        f"FROM {source} WHERE {alias}.{col} IS NOT NULL" for hop, col in LAGS.items())


def _open_rows(source: str, alias: str, sign: int) -> str:
    """One (kind, currency, change) row per open mismatch of source."""
    return (f"SELECT {alias}.kind AS kind, {alias}.currency AS currency, {sign} AS n, "
            f"{sign} * {alias}.amount_micros AS a, {sign} * COALESCE({alias}.leakage_micros, 0) AS l "
            f"FROM {source} WHERE {alias}.state = 'open'")


ON_LAGS = "ON CONFLICT (hop, bucket) DO UPDATE SET contracts = lag_buckets.contracts + excluded.contracts"
ON_OPEN = ("ON CONFLICT (kind, currency) DO UPDATE SET "
           "mismatches = open_mismatch_totals.mismatches + excluded.mismatches, "
           "amount_micros = open_mismatch_totals.amount_micros + excluded.amount_micros, "
           "leakage_micros = open_mismatch_totals.leakage_micros + excluded.leakage_micros")
ADD_LAGS = ("INSERT INTO lag_buckets (hop, bucket, contracts) SELECT hop, bucket, SUM(n) FROM ({rows}) AS d "
            f"GROUP BY hop, bucket HAVING SUM(n) <> 0 ORDER BY hop, bucket {ON_LAGS}")
ADD_OPEN = ("INSERT INTO open_mismatch_totals (kind, currency, mismatches, amount_micros, leakage_micros) "
            "SELECT kind, currency, SUM(n), SUM(a), SUM(l) FROM ({rows}) AS d GROUP BY kind, currency "
            f"HAVING SUM(n) <> 0 OR SUM(a) <> 0 OR SUM(l) <> 0 ORDER BY kind, currency {ON_OPEN}")
# What each table's totals read from its rows: a change of none of these leaves the totals as they are.
SUMMED = {"contracts": list(LAGS.values()),
          "mismatches": ["kind", "currency", "state", "amount_micros", "leakage_micros"]}
TRANSITION = {"insert": "NEW TABLE AS new_rows", "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
              "delete": "OLD TABLE AS old_rows"}


def _sides(op_: str) -> list[tuple[str, int]]:
    """The rows a change takes away from the totals (OLD) and adds to them (NEW)."""
    return {"insert": [("NEW", 1)], "update": [("OLD", -1), ("NEW", 1)], "delete": [("OLD", -1)]}[op_]


def _statement_change(table: str, op_: str) -> str:
    """PostgreSQL, once per statement: the whole change over the statement's transition tables."""
    if table == "contracts":
        rows = [_lag_rows(False, f"{side.lower()}_rows", f"{side.lower()}_rows", sign) for side, sign in _sides(op_)]
        return ADD_LAGS.format(rows=" UNION ALL ".join(rows))
    rows = [_open_rows(f"{side.lower()}_rows", f"{side.lower()}_rows", sign) for side, sign in _sides(op_)]
    return ADD_OPEN.format(rows=" UNION ALL ".join(rows))


def _row_change(table: str, op_: str) -> list[str]:
    """SQLite, once per row: one small upsert per lag that changed (or per side of a mismatch), with
    nothing to group, since a trigger runs for every row the pass writes."""
    out = []
    for side, sign in _sides(op_):
        if table == "mismatches":
            out.append(f"INSERT INTO open_mismatch_totals (kind, currency, mismatches, amount_micros, leakage_micros) "
                       f"SELECT {side}.kind, {side}.currency, {sign}, {sign} * {side}.amount_micros, "
                       f"{sign} * COALESCE({side}.leakage_micros, 0) WHERE {side}.state = 'open' {ON_OPEN}")
            continue
        for hop, col in LAGS.items():
            moved = f" AND OLD.{col} IS NOT NEW.{col}" if op_ == "update" else ""
            out.append(f"INSERT INTO lag_buckets (hop, bucket, contracts) SELECT '{hop}', "
                       f"{bucket_of(True, f'{side}.{col}')}, {sign} WHERE {side}.{col} IS NOT NULL{moved} {ON_LAGS}")
    return out


def create_triggers(sqlite: bool, tables: Sequence[str] = tuple(SUMMED)) -> None:
    """The triggers on these tables (0007 drops those on contracts, and makes them again on downgrade)."""
    for table in tables:
        summed = SUMMED[table]
        for op_ in TRIGGER_OPS:
            name = f"{table}_read_totals_{op_}"
            if sqlite:
                # Most updates (a contract's amounts, a mismatch's evidence) touch nothing summed here.
                when = (" WHEN " + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in summed)
                        if op_ == "update" else "")
                body = "".join(f"{s}; " for s in _row_change(table, op_))
                op.execute(f"CREATE TRIGGER {name} AFTER {op_.upper()} ON {table} FOR EACH ROW{when} "
                           f"BEGIN {body}END")
                continue
            op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       f"{_statement_change(table, op_)}; RETURN NULL; END $$")
            op.execute(f"CREATE TRIGGER {name} AFTER {op_.upper()} ON {table} REFERENCING {TRANSITION[op_]} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "open_mismatch_totals",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("mismatches", sa.BigInteger(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("leakage_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "currency"),
    )
    op.create_table(
        "lag_buckets",
        sa.Column("hop", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.Float(), nullable=False),
        sa.Column("contracts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hop", "bucket"),
    )
    with op.batch_alter_table("mismatches") as batch:
        batch.create_index("ix_mismatches_state_id", ["state", "id"], unique=False)
    # The store may already hold rows: the totals start from them.
    op.execute(ADD_OPEN.format(rows=_open_rows("mismatches", "mismatches", 1)))
    op.execute(ADD_LAGS.format(rows=_lag_rows(sqlite, "contracts", "contracts", 1)))
    create_triggers(sqlite)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in SUMMED:
        for op_ in TRIGGER_OPS:
            name = f"{table}_read_totals_{op_}"
            op.execute(f"DROP TRIGGER IF EXISTS {name}" if sqlite else f"DROP TRIGGER IF EXISTS {name} ON {table}")
            if not sqlite:
                op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    with op.batch_alter_table("mismatches") as batch:
        batch.drop_index("ix_mismatches_state_id")
    op.drop_table("lag_buckets")
    op.drop_table("open_mismatch_totals")
