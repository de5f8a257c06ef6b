"""Figure builders: plain data in, plotly figure JSON out (None when there is nothing to draw). Amounts
are drawn as floats, which is fine for bar heights; the exact decimal strings ride along as text."""
from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
import plotly.io as pio

from collector import conventions as c
from collector.model import parse_time

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
# One colour per source, kept the same on every page.
SOURCE_COLOURS = {"crm": "#2563eb", "billing": "#16a34a", "erp": "#9333ea", "payment": "#ea580c"}
CURRENCY_COLOURS = ("#dc2626", "#f97316", "#ca8a04", "#7c3aed", "#0891b2", "#4b5563")


TEMPLATE = "plotly_white"


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    """A figure's layout but for its template, which _to_json adds."""
    return {"height": height, "font": {"family": FONT, "size": 13},
            "margin": {"l": 10, "r": 10, "t": 10, "b": 10}, **extra}


def risk_by_kind(open_mismatches: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Money at risk by mismatch kind, one bar series per currency (currencies are never added up)."""
    currencies = sorted({cur for row in open_mismatches.values() for cur in row["amount_at_risk"]})
    if not currencies:
        return None
    kinds = list(open_mismatches)
    fig = go.Figure(layout=_layout(
        90 + len(kinds) * (16 + 14 * len(currencies)), barmode="group",
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "title": {"text": "Currency"}},
        xaxis={"title": {"text": "amount at risk"}, "automargin": True},
        # kinds top to bottom, in the order of the table beneath the chart
        yaxis={"automargin": True, "autorange": "reversed"}))
    for i, cur in enumerate(currencies):
        amounts = [open_mismatches[k]["amount_at_risk"].get(cur) for k in kinds]
        fig.add_bar(
            name=cur, orientation="h", y=[k.replace("_", " ") for k in kinds],
            x=[float(Decimal(a)) if a is not None else None for a in amounts],
            text=[f"{a} {cur}" if a is not None else "" for a in amounts], textposition="none",
            customdata=["/mismatches?" + urlencode({"kind": k, "state": "open"}) for k in kinds],
            hovertemplate="%{y}: %{text}<extra></extra>", marker_color=CURRENCY_COLOURS[i % len(CURRENCY_COLOURS)])
    return _to_json(fig)


def stage_funnel(by_stage: Mapping[str, int]) -> str | None:
    """How many contracts got at least as far as each stage, from the count of each furthest stage."""
    if not any(by_stage.values()):
        return None
    reached, running = [], 0
    for stage in reversed(c.STAGES):
        running += by_stage.get(stage, 0)
        reached.append(running)
    reached.reverse()
    fig = go.Figure(go.Funnel(
        y=list(c.STAGES), x=reached, textinfo="value+percent initial",
        customdata=[by_stage.get(s, 0) for s in c.STAGES],
        hovertemplate="%{y}: %{x} reached, %{customdata} stopped here<extra></extra>",
        marker={"color": ["#93c5fd", "#60a5fa", "#3b82f6", "#1d4ed8"]},
        connector={"fillcolor": "#eef2f7", "line": {"width": 0}}),
        layout=_layout(300, yaxis={"automargin": True}))
    return _to_json(fig)


def event_timeline(events: Sequence[Mapping[str, Any]]) -> str | None:
    """A contract's events in time (UTC), one row per source system."""
    if not events:
        return None
    at = [_utc(e["occurred_at"]) for e in events]
    # Padding of at least an hour, so one event (or a burst) is not drawn on an axis of milliseconds.
    pad = max((max(at) - min(at)) * 0.06, timedelta(hours=1))
    fig = go.Figure(layout=_layout(
        80 + 45 * len(c.SOURCES),
        xaxis={"title": {"text": "occurred at (UTC)"}, "automargin": True, "type": "date",
               "range": [_plain(min(at) - pad), _plain(max(at) + pad)]},
        yaxis={"categoryorder": "array", "categoryarray": list(reversed(c.SOURCES)), "automargin": True,
               "range": [-0.5, len(c.SOURCES) - 0.5]},
        showlegend=False))
    for source in c.SOURCES:
        mine = [(t, e) for t, e in zip(at, events, strict=True) if e.get("source") == source]
        if not mine:
            continue
        fig.add_scatter(
            x=[_plain(t) for t, _ in mine], y=[source] * len(mine), mode="markers+text",
            text=[e["type"] for _, e in mine], textposition="top center", cliponaxis=False,
            hovertext=[_hover(e) for _, e in mine], hoverinfo="text",
            marker={"size": 13, "color": SOURCE_COLOURS.get(source, "#4b5563"),
                    "line": {"width": 1, "color": "white"}})
    return _to_json(fig)


@functools.cache
def _template() -> dict[str, Any]:
    return go.Figure(layout={"template": TEMPLATE}).to_dict()["layout"]["template"]


def _to_json(fig: go.Figure) -> str:
    """The figure's JSON with the template. plotly validates a figure's template anew each time it is set (a
    deep copy of thousands of properties, most of the figure's cost); the template is the same for every
    figure, so it is validated once and put into each figure's JSON where plotly would (its layout's
    properties go in name order)."""
    out = fig.to_dict()
    out["layout"] = dict(sorted({**out["layout"], "template": _template()}.items()))
    return str(pio.to_json(out, validate=False))


def _utc(raw: str) -> datetime:
    return parse_time(raw, "occurred_at")[0].astimezone(UTC)


def _plain(t: datetime) -> str:
    """plotly.js ignores offsets, so times go to it in UTC, written without one."""
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def _hover(e: Mapping[str, Any]) -> str:
    lines = [f"{e['type']} · {e['event_id']}"]
    if e.get("amount") is not None:
        lines.append(f"{e['amount']} {e.get('currency', '')}")
    # plotly draws hover text as markup, so the source's own strings are escaped first
    return "<br>".join(html.escape(line, quote=False) for line in lines)
