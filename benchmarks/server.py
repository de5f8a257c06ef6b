"""`revtrace serve` as a subprocess on a free loopback port: started on a store, waited for until /readyz
answers, its RSS sampled all along, and always stopped. The crash harness also kills it with SIGKILL and starts it
again, on the same port, store and token, as often as it likes."""
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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psutil

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 120.0
READY_POLL = 0.05  # seconds; a restart under test should not wait long for its first answer


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


class ServerError(RuntimeError):
    """`revtrace serve` exited or did not become ready."""


class Server:
    """One `revtrace serve` on one store. `workdir` keeps its config and log after the stop (the crash harness
    shows them); without it they live in a temporary folder removed by the stop."""

    def __init__(self, database_url: str, *, evaluate_every: float | None = None, name: str = "server",
                 settings: dict[str, str] | None = None, workdir: Path | None = None,
                 command: Sequence[str] | None = None):
        """`command`: another module to run (`python -m ...`) in place of `revtrace serve`, on the same
        environment (benchmarks/floor.py)."""
        self.database_url, self.evaluate_every, self.name = database_url, evaluate_every, name
        self.command = command
        self.settings = settings or {}
        self.token = secrets.token_urlsafe(18)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="revtrace_bench_srv_")) if workdir is None else workdir
        self.log_path = self.workdir / f"{name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._samplers: list[RssSampler] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def peak_rss(self) -> int:
        return max((s.peak for s in self._samplers), default=0)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """The first start, or the next one after a kill."""
        self.starts += 1
        config = self.workdir / f"{self.name}.yaml"
        # 0 turns the scheduler off, so that only the benchmark's own passes run; None keeps the default.
        lines = [] if self.evaluate_every is None else [f"evaluate_every: {self.evaluate_every}"]
        config.write_text("".join(f"{line}\n" for line in lines + [f"{k}: {v}" for k, v in self.settings.items()]))
        env = {**os.environ, "REVTRACE_DATABASE_URL": self.database_url, "REVTRACE_LISTEN": f"127.0.0.1:{self.port}",
               "REVTRACE_ADMIN_TOKEN": self.token, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C at the terminal reaches only the caller, which then stops the server.
            argv = self.command or ("revtrace", "serve", "--config", str(config))
            self.proc = subprocess.Popen([sys.executable, "-m", *argv],
                                         cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        sampler = RssSampler(self.proc.pid)
        sampler.start()
        self._samplers.append(sampler)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"revtrace serve exited with {self.proc.returncode} during start {self.starts}:\n"
                                  f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(READY_POLL)
        raise ServerError(f"revtrace serve not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs, whatever was not committed is lost."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        for sampler in self._samplers:
            sampler.stop()
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
