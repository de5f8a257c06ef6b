"""Figures are built without plotly validating their template each time, yet their JSON is what plotly itself
gives for them: read back into a plotly figure (template and all, validated), it writes the same text."""
from __future__ import annotations

import json

import plotly.graph_objects as go

from dashboards import charts


def test_figure_json_is_plotlys_own() -> None:
    figures = [
        charts.stage_funnel({"ordered": 2, "invoiced": 1, "posted": 0, "paid": 4}),
        charts.risk_by_kind({"missing_invoice": {"count": 2, "amount_at_risk": {"EUR": "0.10", "USD": "5.00"}},
                             "tax_mismatch": {"count": 1, "amount_at_risk": {"USD": "1.25"}}}),
        charts.event_timeline([
            {"occurred_at": "2026-03-01T09:00:00Z", "source": "crm", "type": "order.booked", "event_id": "<b>",
             "amount": "1.00", "currency": "USD"},
            {"occurred_at": "2026-03-02T09:00:00+01:00", "source": "billing", "type": "invoice.issued",
             "event_id": "i"}]),
    ]
    for text in figures:
        assert text is not None
        assert json.loads(text)["layout"]["template"]["layout"]["plot_bgcolor"] == "white"  # plotly_white
        assert go.Figure(json.loads(text)).to_json() == text
