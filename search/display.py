"""What a running search shows: a live panel on a terminal, one line per N evaluations otherwise.

Both say what the search is doing (its phase: baselines, starting workers,
searching, final scoring), how far it is (evaluated of max_evals, the rate,
an ETA from the budget and the wall-time limit), and the best so far.
"""

from __future__ import annotations

import math
import sys
import time

from search.events import CacheHit, CandidateEvaluated, Event
from search.observers import Observer, Snapshot

REFRESH_SECONDS = 1.0


def _score(value: float | None) -> str:
    return f"{value:+.3f}" if value is not None and math.isfinite(value) else "n/a"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def eta(snapshot: Snapshot) -> float | None:
    """Seconds left: the budget at the current rate, or the wall-time limit, whichever comes first."""
    stop = snapshot.config.stop
    left = []
    if snapshot.rate > 0:
        left.append((stop.max_evals - snapshot.counters.evaluated) / snapshot.rate)
    if stop.wall_time:
        left.append(stop.wall_time - snapshot.elapsed)
    return max(0.0, min(left)) if left else None


def progress_line(snapshot: Snapshot) -> str:
    c, stop = snapshot.counters, snapshot.config.stop
    remaining = eta(snapshot)
    return (f"[{snapshot.phase}] evaluated {c.evaluated}/{stop.max_evals} ({snapshot.rate:.2f}/s, "
            f"{_duration(snapshot.elapsed)} elapsed, ETA {_duration(remaining) if remaining is not None else '?'})"
            f"  best {_score(snapshot.best_score)}")


class Display(Observer):
    def __init__(self, stream=None, live: bool | None = None, log_every: int = 10):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.log_every = log_every  # evaluations between log lines when not live
        self._last = 0.0
        self._logged_at = -1
        self._lines = 0

    def _write(self, lines: list[str]) -> None:
        if self.live:
            if self._lines:
                self.stream.write(f"\x1b[{self._lines}F\x1b[J")  # back to the panel's top, clear below
            self._lines = len(lines)
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def panel(self, snapshot: Snapshot) -> list[str]:
        c = snapshot.counters
        lines = [
            f"optsearch {snapshot.run_id}  [{snapshot.config.preset}]",
            "  " + progress_line(snapshot),
            f"  trained {c.trained}  cheap-only {c.cheap_only}  failed {c.failed}  in progress {snapshot.in_progress}"
            f"  generated {c.generated}  cache hits {c.structural_hits} structural + {c.fingerprint_hits}"
            f" behavioural ({100 * c.cache_hit_rate:.0f}%)",
            f"  hall of fame {len(snapshot.hall_of_fame)}  held-out scored {c.held_out}  transferred {c.transferred}"
            f"  restarts {c.restarts}",
        ]
        if snapshot.best is not None:
            best = snapshot.best
            lines.append(f"  best program (#{best.id}, {best.stage}, score {_score(best.score)}):")
            lines += ["    " + line for line in best.program.text().splitlines()[1:]]
        return lines

    def on_phase(self, phase: str, snapshot: Snapshot) -> None:
        if phase == "baselines" and snapshot.baselines_left:
            text = f"[baselines] tuning AdamW: {snapshot.baselines_left} task(s) to go"
        else:
            text = f"[{phase}]"
        if self.live:
            self._write([f"optsearch {snapshot.run_id}  [{snapshot.config.preset}]", "  " + text])
        elif time.monotonic() - self._last >= REFRESH_SECONDS or phase != "baselines":
            self._last = time.monotonic()
            self._write([text])

    def on_event(self, event: Event, snapshot: Snapshot) -> None:
        if not isinstance(event, (CandidateEvaluated, CacheHit)):
            return
        if self.live:
            if time.monotonic() - self._last >= REFRESH_SECONDS:
                self._last = time.monotonic()
                self._write(self.panel(snapshot))
        elif snapshot.counters.evaluated != self._logged_at and snapshot.counters.evaluated % self.log_every == 0:
            self._logged_at = snapshot.counters.evaluated
            self._write([progress_line(snapshot)])

    def on_end(self, snapshot: Snapshot, stopped_by: str) -> None:
        self._lines = 0
        self._write(self.panel(snapshot)[:4] + [f"stopped: {stopped_by}; run directory {snapshot.run_dir}"])
        self.stream.write(hall_of_fame_text(snapshot.hall_of_fame) + "\n")
        self.stream.flush()


def hall_of_fame_text(members) -> str:
    """The Pareto front, best first, with each member's program."""
    if not members:
        return "hall of fame: empty (no candidate was scored on the full suite)"
    from search.hall_of_fame import header

    lines = [header(members)]
    for m in members:
        extra = "".join(f"  {label} {_score(value)}" for label, value in (("held-out", m.held_out),
                                                                         ("transfer", m.transfer))
                        if value is not None)
        lines.append(f"  #{m.id}  score {m.score:+.3f}{extra}  complexity {m.complexity:g}  "
                     f"state bytes {m.state_bytes:.3g}  ({m.state_buffers} buffers)  ({m.mutation})")
        lines += ["      " + line for line in m.program.text().splitlines()[1:]]
    return "\n".join(lines)
