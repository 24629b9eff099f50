"""What a running search shows: a live panel on a terminal, log lines otherwise."""

from __future__ import annotations

import math
import sys
import time

REFRESH_SECONDS = 1.0


def _score(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


class Display:
    def __init__(self, stream=None, live: bool | None = None, log_every: float = 30.0):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.log_every = log_every
        self._last = 0.0
        self._lines = 0

    def _write(self, lines: list[str]) -> None:
        if self.live:
            if self._lines:
                self.stream.write(f"\x1b[{self._lines}F\x1b[J")  # back to the panel's top, clear below
            self._lines = len(lines)
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def baselines(self, search, remaining: int) -> None:
        now = time.monotonic()
        if now - self._last >= (REFRESH_SECONDS if self.live else self.log_every):
            self._last = now
            self._write([f"computing AdamW baselines: {remaining} task(s) to go"])

    def panel(self, search) -> list[str]:
        c = search.counters
        elapsed = max(search._elapsed(), 1e-9)
        lines = [
            f"optsearch {search.run_id}  [{search.config.preset}]  {elapsed:,.0f}s",
            f"  evaluated {c.evaluated}/{search.config.stop.max_evals}  ({c.evaluated / elapsed:.2f}/s)"
            f"  trained {c.trained}  cheap-only {c.cheap_only}  failed {c.failed}",
            f"  generated {c.generated}  invalid {c.invalid}  cache hits {c.structural_hits} structural"
            f" + {c.fingerprint_hits} behavioural ({100 * c.cache_hit_rate:.0f}%)",
            f"  best score {_score(search.best_score)}  hall of fame {len(search.hall_of_fame.members)}"
            f"  restarts {c.restarts}",
        ]
        if len(search.population):
            best = search.population.best()
            lines.append(f"  best program (#{best.id}, {best.stage}):")
            lines += ["    " + line for line in best.program.text().splitlines()[1:]]
        return lines

    def update(self, search) -> None:
        now = time.monotonic()
        if now - self._last < (REFRESH_SECONDS if self.live else self.log_every):
            return
        self._last = now
        self._write(self.panel(search) if self.live else self.panel(search)[:4])

    def finish(self, search, stopped_by: str) -> None:
        self._lines = 0
        self._write(self.panel(search)[:4] + [f"stopped: {stopped_by}; run directory {search.store.path}"])
        self.stream.write(hall_of_fame_text(search.hall_of_fame.ranked()) + "\n")
        self.stream.flush()


def hall_of_fame_text(members) -> str:
    """The Pareto front, best score first, with each member's program."""
    if not members:
        return "hall of fame: empty (no candidate was scored on the full suite)"
    lines = ["hall of fame (Pareto front: score, complexity, state buffers):"]
    for m in members:
        held = f"  held-out {m.held_out:+.3f}" if m.held_out is not None else ""
        lines.append(f"  #{m.id}  score {m.score:+.3f}{held}  complexity {m.complexity:g}  "
                     f"state buffers {m.state_buffers}  ({m.mutation})")
        lines += ["      " + line for line in m.program.text().splitlines()[1:]]
    return "\n".join(lines)
