"""Probes: where canonical events come from.

The demo landscape simulator: `probes.config.LandscapeConfig` describes a landscape,
`probes.landscape.iter_contracts` / `run_landscape` build it with its ground truth (`probes.truth`),
`probes.simulate.simulate` writes it for `revtrace simulate`, and `probes.feed.run_feed` keeps one running
against a revtrace server for `revtrace demo`.
"""
