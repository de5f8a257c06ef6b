"""The crash harness's verdict: the figures of both runs as text, and the problems that fail the check."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from benchmarks.crash_api import MAX_SETTLE_PASSES, changed
from benchmarks.crash_run import RunResult


@dataclass
class Report:
    db: str
    events: int
    batches: int
    contracts: int
    crash: RunResult
    reference: RunResult
    differences: list[str]
    fault: str = "kill"

    def open_by_kind(self) -> dict[str, int]:
        tally: Counter[str] = Counter()
        for key, n in self.reference.outcome.open_mismatches.items():
            tally[key[0]] += n
        return dict(sorted(tally.items()))

    def problems(self) -> list[str]:
        out: list[str] = []
        c, r = self.crash, self.reference
        if c.faults.done < c.faults.planned:
            out.append(f"only {c.faults.done} of {c.faults.planned} {self.fault}s struck during the ingest")
        for name, run in (("crash run", c), ("reference run", r)):
            s, led = run.store, run.ledger
            if s.lost or s.doubled or s.unexpected:
                out.append(f"{name}: {s.lost} lost, {s.doubled} doubled, {s.unexpected} stored but never sent")
            # The stream holds each event once, so a duplicate can only be the answer to a retry whose first
            # attempt was committed: every event is answered as new exactly once, or is such a duplicate.
            if led.accepted + led.retry_duplicates != self.events or led.duplicates != led.retry_duplicates:
                out.append(f"{name}: {led.accepted} events answered as new and {led.retry_duplicates} as duplicates "
                           f"of an unanswered attempt (of {led.duplicates} duplicates); "
                           f"{self.events} distinct events sent")
            # An outage may be answered 503 (the store is unavailable: send again); nothing else may be a 5xx.
            allowed = {503} if self.fault == "outage" and run is c else set()
            if any(s >= 500 and s not in allowed for s in led.errors) or set(run.faults.pass_errors) - allowed:
                out.append(f"{name}: server errors: ingest {dict(led.errors)}, passes {dict(run.faults.pass_errors)}")
            if led.partial or led.rejected:
                out.append(f"{name}: {led.partial} answers split between new and duplicate, {led.rejected} rejected")
            if run.replay_duplicates != run.replay_events:
                out.append(f"{name}: replay of {run.replay_events} events answered {run.replay_duplicates} duplicates")
            if run.settle_passes is None:
                out.append(f"{name}: incremental passes still changing after {MAX_SETTLE_PASSES}")
            if changed(run.full_pass):
                out.append(f"{name}: the full pass disagrees with the incremental ones: {run.full_pass}")
            if changed(run.after_replay):
                out.append(f"{name}: the pass after the replay changed something: {run.after_replay}")
        if r.ledger.duplicates:
            out.append(f"reference run: {r.ledger.duplicates} duplicates answered in a run without retries")
        out.extend(f"outcome: {d}" for d in self.differences)
        return out

    def text(self) -> str:
        c, r = self.crash, self.reference
        led = c.ledger
        lines = [
            f"db {self.db}: {self.events} events in {self.batches} batches, {self.contracts} contracts",
            f"{self.fault}s {c.faults.done} of {c.faults.planned} planned ({c.faults.mid_request} with a request in "
            f"flight), server restarts {c.restarts}; passes during the ingest {c.faults.passes} answered, "
            f"{c.faults.passes_cut} cut short, {dict(c.faults.pass_errors)} refused",
            f"batches sent {led.attempts} (retries {led.attempts - led.acked}), batches acknowledged {led.acked}, "
            f"answers other than 200 {dict(led.errors)}",
            f"events acknowledged {led.events_acked}, acknowledged as new {led.accepted}, "
            f"duplicates answered {led.duplicates}, of them to retries {led.retry_duplicates} (batches committed "
            f"but unanswered, then retried: {led.committed_unanswered}), partial answers {led.partial}",
            f"store: {c.store.stored} stored, lost {c.store.lost}, doubled {c.store.doubled}, "
            f"unexpected {c.store.unexpected}",
            f"replay: {c.replay_duplicates} of {c.replay_events} answered as duplicates",
            f"passes to settle {c.settle_passes}, full pass {_brief(c.full_pass)}, "
            f"after replay {_brief(c.after_replay)}",
            f"reference: {r.ledger.accepted} new, {r.ledger.duplicates} duplicates, lost {r.store.lost}, "
            f"doubled {r.store.doubled}, passes to settle {r.settle_passes}, full pass {_brief(r.full_pass)}",
            f"open mismatches {sum(r.outcome.open_mismatches.values())}: {self.open_by_kind()}; closed (not "
            f"compared) {c.outcome.closed} after the crashes, {r.outcome.closed} without",
            "outcome equal to the run without crashes" if not self.differences else
            "outcome DIFFERS: " + "; ".join(self.differences),
            f"time: crash ingest {c.ingest_seconds:.1f} s, crash run {c.seconds:.1f} s, "
            f"reference run {r.seconds:.1f} s",
        ]
        problems = self.problems()
        lines.append("PROBLEMS:\n  " + "\n  ".join(problems) if problems else "no problems")
        return "\n".join(lines)


def _brief(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {result.get(k)}" for k in ("evaluated", "opened", "closed", "updated", "resolved"))

