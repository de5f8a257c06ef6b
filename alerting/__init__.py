"""Alerting: alert lifecycle, grouping, silences and durable delivery (not built yet)."""
