"""py-spy on the server's pid while a slow section runs; the top of the profile goes into the report."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType


class Profile:
    """`with Profile(pid) as p: ...` samples the process; afterwards `p.top()` lists the hottest frames."""

    def __init__(self, pid: int, rate: int = 50):
        self.pid, self.rate = pid, rate
        self.path = Path(tempfile.mkdtemp(prefix="revtrace_bench_prof_")) / "stacks.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def __enter__(self) -> Profile:
        # The venv running the benchmark holds py-spy even when its bin is not on PATH.
        exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if exe is None:
            self.error = "py-spy not found"
            return self
        # --subprocesses: a pass runs in the server's worker process and its examiners, not in the server.
        self.proc = subprocess.Popen([exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format",
                                      "raw", "--output", str(self.path), "--nonblocking", "--subprocesses"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.path.exists():
            self.error = err.decode(errors="replace").strip()[-300:] or "py-spy wrote nothing"

    def top(self, n: int = 12) -> list[str]:
        """The frames with the most samples on CPU, self and inclusive, as text lines."""
        if not self.path.exists():
            return [f"(no profile: {self.error})"]
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        samples = 0
        for line in self.path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            if not frames or _idle(frames[-1]):
                continue
            k = int(count)
            samples += k
            own[frames[-1]] += k
            for f in set(frames):
                total[f] += k
        if not samples:
            return ["(no busy samples)"]
        out = [f"{samples} busy samples; self%  total%  frame"]
        for frame, k in own.most_common(n):
            out.append(f"{100 * k / samples:5.1f}  {100 * total[frame] / samples:5.1f}  {frame}")
        out.append("inclusive:")
        shown = [(f, k) for f, k in total.most_common() if not _plumbing(f)][:n]
        for frame, k in shown:
            out.append(f"       {100 * k / samples:5.1f}  {frame}")
        shutil.rmtree(self.path.parent, ignore_errors=True)
        return out


def _plumbing(frame: str) -> bool:
    """Frames every stack goes through (threads, the event loop, the CLI): no news in an inclusive list."""
    return any(f"({m}" in frame for m in ("threading.py", "concurrent/", "click/", "asyncio/", "<frozen runpy>",
                                           "aiohttp/web.py", "revtrace/cli.py"))


def _idle(frame: str) -> bool:
    """Threads waiting for work are not the bottleneck."""
    return any(w in frame for w in ("wait (threading", "_worker (concurrent", "select (selectors",
                                    "_wait_for_tstate_lock", "run_forever", "_run_once (asyncio"))
