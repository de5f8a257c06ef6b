"""The `revtrace` command line."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from aiohttp import web

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
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="revtrace.yaml (default: ./revtrace.yaml if present)")
def serve(config: str | None) -> None:
    """Run the collector, the scheduler, the API and the pages."""
    from revtrace.server import Server
    settings = _settings(config)
    if not settings.tokens:
        raise click.ClickException("no tokens: set REVTRACE_ADMIN_TOKEN or list tokens in revtrace.yaml")
    host, port = settings.host_port
    web.run_app(Server(settings).app(), host=host, port=port, print=lambda msg: click.echo(msg), access_log=None)


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
