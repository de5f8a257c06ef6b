"""`revtrace serve` as a subprocess on a free loopback port: started on a store, waited for until /readyz
answers, its RSS sampled all along, and always stopped."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RssSampler(threading.Thread):
    """Peak resident set size of a process, sampled every `every` seconds (psutil), children included."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True, name="rss-sampler")
        self.proc, self.every = psutil.Process(pid), every
        self.peak = 0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()


class Server:
    def __init__(self, database_url: str, *, evaluate_every: float | None = None, name: str = "server",
                 settings: dict[str, str] | None = None):
        self.database_url, self.evaluate_every, self.name = database_url, evaluate_every, name
        self.settings = settings or {}
        self.token = secrets.token_urlsafe(18)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="revtrace_bench_srv_"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: RssSampler | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def peak_rss(self) -> int:
        return self.rss.peak if self.rss is not None else 0

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        config = self.workdir / "revtrace.yaml"
        # 0 turns the scheduler off, so that only the benchmark's own passes run; None keeps the default.
        lines = [] if self.evaluate_every is None else [f"evaluate_every: {self.evaluate_every}"]
        config.write_text("".join(f"{line}\n" for line in lines + [f"{k}: {v}" for k, v in self.settings.items()]))
        env = {**os.environ, "REVTRACE_DATABASE_URL": self.database_url, "REVTRACE_LISTEN": f"127.0.0.1:{self.port}",
               "REVTRACE_ADMIN_TOKEN": self.token, "PYTHONPATH": str(ROOT)}
        log = (self.workdir / "server.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "revtrace", "serve", "--config", str(config)],
                                     cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.rss = RssSampler(self.proc.pid)
        self.rss.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"revtrace serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"revtrace serve not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
