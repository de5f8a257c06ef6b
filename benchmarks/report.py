"""The table: each figure with its target, the raw limit it is held to, their ratio and PASS/MISS; as text for
the terminal and as markdown for benchmarks/RESULTS.md."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Row:
    section: str
    db: str
    figure: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None  # None: reported, no target
    limit: float | None = None
    limit_name: str = ""
    runs: int = 1
    note: str = ""
    profile: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "FAILED"
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")

    @property
    def ratio(self) -> str:
        if self.value is None or not self.limit:
            return ""
        return f"{self.value / self.limit:.2f}×"


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit in ("/s", "ev/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "":
        return f"{value:,.0f}" if value == int(value) else f"{value:.2f}"
    return f"{value:,.2f} {unit}"


HEADER = ("section", "db", "figure", "value", "target", "limit", "ratio", "runs", "verdict", "note")


def cells(r: Row) -> tuple[str, ...]:
    limit = f"{show(r.limit, r.unit)} ({r.limit_name})" if r.limit else ""
    return (r.section, r.db, r.figure, show(r.value, r.unit), r.target, limit, r.ratio, str(r.runs), r.verdict,
            r.note)


def markdown(rows: Sequence[Row], facts: dict[str, str], command: str, notes: Sequence[str] = ()) -> str:
    out = ["# revtrace benchmark results", "", f"Command: `{command}`", "", "## Machine", ""]
    out += [f"- **{k}**: {v}" for k, v in facts.items()]
    out += ["", "## Results", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    profiled = [r for r in rows if r.profile and r.verdict in ("MISS", "FAILED")]
    if profiled:
        out += ["", "## Profiles of the misses (py-spy on the server)", ""]
        for r in profiled:
            out += [f"### {r.section} / {r.db} / {r.figure}", "", "```", *r.profile, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def text(rows: Sequence[Row]) -> str:
    table = [HEADER] + [cells(r) for r in rows]
    widths = [min(max(len(row[i]) for row in table), 60) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
