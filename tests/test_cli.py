"""The command line as a user runs it: the demo starts, shows mismatches and stops cleanly on Ctrl-C;
configuration errors are said plainly; `db upgrade` and `simulate` do their job."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from revtrace.config import ConfigError, from_mapping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def revtrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "revtrace", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_the_demo_serves_the_landscape_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "revtrace", "demo", "--listen", f"127.0.0.1:{port}",
                             "--db", str(tmp_path / "demo.db"), "--backfill", "200", "--rate", "5"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not any(line.startswith("Press Ctrl-C") for line in lines):
            line = proc.stdout.readline()
            assert line, f"the demo ended before it was ready: {''.join(lines)}"
            lines.append(line)
        banner = "".join(lines)
        login = re.search(r"dashboard\s+(http://\S+/login\?token=\S+)", banner)
        read = re.search(r"read token\s+(\S+)", banner)
        assert login and read, banner
        deadline = time.monotonic() + 60
        summary: dict[str, object] = {}
        while time.monotonic() < deadline and not summary.get("open_mismatches"):
            time.sleep(1)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/assurance",
                                         headers={"Authorization": f"Bearer {read.group(1)}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                summary = json.load(r)
        assert summary.get("open_mismatches"), "the demo showed no mismatch within a minute"
        with urllib.request.urlopen(login.group(1), timeout=10) as r:  # the printed URL signs in to the pages
            assert r.status == 200 and "revtrace" in r.read().decode()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopped:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    (tmp_path / "revtrace.yaml").write_text(f"database_url: sqlite:///{tmp_path}/x.db\n")
    res = revtrace("db", "upgrade", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "schema up to date" in res.stdout
    assert (tmp_path / "x.db").exists()


def test_simulate_writes_events_and_their_truth(tmp_path: Path) -> None:
    res = revtrace("simulate", "--contracts", "50", "--events", "ev.ndjson", "--truth", "truth.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    events = (tmp_path / "ev.ndjson").read_text().splitlines()
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(events) == truth["events"] >= 200
    assert truth["contracts"] == 50


def test_a_bad_config_is_said_plainly(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("listen: nowhere\n")
    res = revtrace("serve", "--config", "bad.yaml", cwd=tmp_path)
    assert res.returncode != 0 and "listen: 'nowhere' is not host:port" in res.stderr


@pytest.mark.parametrize(("raw", "message"), [
    ({"colour": "blue"}, "unknown settings: colour"),
    ({"tokens": [{"token": "x", "scopes": ["write"]}]}, "tokens[0].scopes"),
    ({"reconciliation": {"invoice_window": "soon"}}, "reconciliation.invoice_window"),
    ({"reconciliation": {"expected_hops": ["shipping"]}}, "unknown hops"),
    ({"sqlite_synchronous": "off"}, "sqlite_synchronous"),
])
def test_config_errors_name_the_setting(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_mapping(raw, {})


def test_the_environment_overrides_the_file() -> None:
    s = from_mapping({"database_url": "sqlite:///a.db", "listen": "127.0.0.1:1"},
                     {"REVTRACE_DATABASE_URL": "postgresql://db/x", "REVTRACE_LISTEN": "0.0.0.0:9",
                      "REVTRACE_ADMIN_TOKEN": "adm"})
    assert (s.database_url, s.host_port) == ("postgresql://db/x", ("0.0.0.0", 9))
    assert s.tokens["adm"] == {"ingest", "read", "admin"}
