"""Rules: SLOs with burn-rate alerts and mismatch rules over the collector's store (not built yet)."""
