"""The `revtrace` command line."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from aiohttp import web

from collector import gc_policy
from collector.db import make_engine, upgrade
from revtrace.config import ConfigError, Settings, load


def _settings(config: str | None) -> Settings:
    path = config if config is not None else ("revtrace.yaml" if Path("revtrace.yaml").exists() else None)
    try:
        return load(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="revtrace")
def main() -> None:
    """revtrace: quote-to-cash observability and revenue assurance."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # A pass longer than evaluate_every makes the scheduler skip a run: expected under load, not news.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="revtrace.yaml (default: ./revtrace.yaml if present)")
def serve(config: str | None) -> None:
    """Run the collector, the scheduler, the API and the pages."""
    from revtrace.server import Server
    settings = _settings(config)
    if not settings.tokens:
        raise click.ClickException("no tokens: set REVTRACE_ADMIN_TOKEN or list tokens in revtrace.yaml")
    host, port = settings.host_port
    app = Server(settings).app()
    gc_policy.for_bulk_work()
    web.run_app(app, host=host, port=port, print=lambda msg: click.echo(msg), access_log=None)


@main.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="host:port of the dashboard and API")
@click.option("--db", "db_path", default="revtrace-demo.db", show_default=True, help="SQLite file of the demo")
@click.option("--rate", default=1.0, show_default=True, help="new simulated contracts per second")
@click.option("--seed", default=0, show_default=True, help="seed of the simulated landscape")
@click.option("--fault-rate", default=0.1, show_default=True, help="share of contracts with an injected fault")
@click.option("--backfill", default=500, show_default=True, help="contracts of history sent at start")
def demo(listen: str, db_path: str, rate: float, seed: int, fault_rate: float, backfill: int) -> None:
    """Everything in one process on SQLite: simulated landscape, collector, reconciliation, dashboard."""
    import asyncio

    from probes.feed import FeedConfig
    from revtrace.demo import demo_settings, run_demo, token_with
    if not 0 <= fault_rate <= 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--fault-rate")
    settings = demo_settings(f"sqlite:///{Path(db_path).resolve()}", listen, evaluate_every=2.0)
    try:
        settings.host_port  # noqa: B018 - a bad --listen is said before anything starts
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    host, port = settings.host_port
    feed = FeedConfig(base_url=f"http://{host}:{port}", token=token_with(settings, {"ingest"}), rate=rate,
                      seed=seed, fault_rate=fault_rate, backfill_contracts=backfill)
    asyncio.run(run_demo(settings, feed, click.echo))


@main.command()
@click.option("--contracts", default=1000, show_default=True, help="how many contracts")
@click.option("--seed", default=0, show_default=True)
@click.option("--fault-rate", default=0.1, show_default=True, help="share of contracts with an injected fault")
@click.option("--events", "events_path", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="NDJSON file of the events ('-' for standard output)")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False), required=True,
              help="JSON file of the ground truth: every mismatch revtrace must find, and the leakage")
def simulate(contracts: int, seed: int, fault_rate: float, events_path: str, truth_path: str) -> None:
    """Write a simulated landscape (history up to now) as NDJSON events plus its ground truth."""
    from datetime import UTC, datetime

    from probes.config import LandscapeConfig
    from probes.simulate import simulate as run
    if contracts < 1:
        raise click.BadParameter("must be at least 1", param_hint="--contracts")
    if not 0 <= fault_rate <= 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--fault-rate")
    config = LandscapeConfig(now=datetime.now(UTC), seed=seed, contracts=contracts, fault_rate=fault_rate)
    with click.open_file(events_path, "wb") as events_fp, open(truth_path, "wb") as truth_fp:
        summary = run(config, events_fp, truth_fp)
    click.echo(f"{summary.contracts} contracts, {summary.orphans} orphans, {summary.events} events, "
               f"{summary.mismatches} expected mismatches", err=True)


@main.group()
def db() -> None:
    """The store's schema."""


@db.command("upgrade")
@click.option("--config", type=click.Path(dir_okay=False))
def db_upgrade(config: str | None) -> None:
    """Bring the schema up to date (Alembic)."""
    settings = _settings(config)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    click.echo(f"schema up to date: {engine.url.render_as_string(hide_password=True)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
