"""revtrace.yaml and the environment variables that override it (DESIGN.md, "Running")."""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector import conventions as c
from collector.db import SYNC_MODES
from collector.policy import Policy, parse_duration

DEFAULT_DATABASE = "sqlite:///revtrace.db"
DEFAULT_LISTEN = "127.0.0.1:8080"


class ConfigError(ValueError):
    """A setting that cannot be used, said with where it came from."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE
    listen: str = DEFAULT_LISTEN
    tokens: dict[str, frozenset[str]] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    evaluate_every: float = 2.0
    max_pending_events: int = 200_000
    metrics_public: bool = False
    max_body_bytes: int = 64 * 1024 * 1024
    sqlite_synchronous: str = "full"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"listen: {self.listen!r} is not host:port")
        return host.strip("[]"), int(port)


def load(path: str | Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from a YAML file (optional) with REVTRACE_* variables on top."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: want a mapping of settings")
    return from_mapping(raw, env)


def from_mapping(raw: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    raw = dict(raw)
    known = {"database_url", "listen", "tokens", "reconciliation", "evaluate_every", "max_pending_events",
             "metrics_public", "max_body_bytes", "sqlite_synchronous"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    tokens = _tokens(raw.get("tokens") or [])
    admin = env.get("REVTRACE_ADMIN_TOKEN")
    if admin:
        tokens[admin] = frozenset(c.SCOPES)
    try:
        policy = Policy.from_config(raw.get("reconciliation"))
        every = parse_duration(raw.get("evaluate_every", 2.0), "evaluate_every").total_seconds()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(
        database_url=env.get("REVTRACE_DATABASE_URL") or raw.get("database_url") or DEFAULT_DATABASE,
        listen=env.get("REVTRACE_LISTEN") or raw.get("listen") or DEFAULT_LISTEN,
        tokens=tokens, policy=policy, evaluate_every=every,
        max_pending_events=int(raw.get("max_pending_events", 200_000)),
        metrics_public=bool(raw.get("metrics_public", False)),
        max_body_bytes=int(raw.get("max_body_bytes", 64 * 1024 * 1024)),
        sqlite_synchronous=str(raw.get("sqlite_synchronous", "full")),
    )
    settings.host_port  # noqa: B018 - validates listen now rather than at bind time
    if settings.sqlite_synchronous not in SYNC_MODES:
        raise ConfigError(f"sqlite_synchronous: must be one of {', '.join(SYNC_MODES)}")
    return settings


def _tokens(raw: Any) -> dict[str, frozenset[str]]:
    """tokens: [{token: "...", scopes: [ingest, read]}]"""
    if not isinstance(raw, list):
        raise ConfigError("tokens: want a list of {token, scopes}")
    out: dict[str, frozenset[str]] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str) or not item["token"]:
            raise ConfigError(f"tokens[{i}]: want {{token: str, scopes: [...]}}")
        scopes = frozenset(item.get("scopes") or ())
        if not scopes or not scopes <= set(c.SCOPES):
            raise ConfigError(f"tokens[{i}].scopes: want some of {', '.join(c.SCOPES)}")
        out[item["token"]] = scopes
    return out


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"
