"""Plots of a search, from its events: progress, the Pareto front, loss curves.

Written as PNG files (150 dpi) into runs/<run_id>/plots/ (and logged to MLflow
by the tracker). Everything is drawn from events.jsonl and the baseline cache,
so a plot never disagrees with the record. Each plot is titled with the run id
and preset, draws AdamW parity (score 0) and marks scores at the clip (|3|);
the Pareto front's labels are placed where they overlap no other label.

    progress_figure / pareto_figure / curve_grid_figure   the figures (for tests and notebooks)
    progress / pareto / loss_curves                        the same, saved as PNG
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from proxy_tasks.figures import DPI, curve_grid, curve_grid_figure, pyplot, save  # noqa: F401 -- re-used here
from proxy_tasks.scoring import SCORE_CLIP
from search.observers import Observer, Snapshot
from search.records import FAILED

EVERY_SECONDS = 60.0  # plots are redrawn at checkpoints at most this often, and at the end
log = logging.getLogger("optsearch")


CLIP = SCORE_CLIP  # scores are clipped to [-CLIP, CLIP] per task (one source: proxy_tasks/scoring.py)
# Where a Pareto label may go, in points from its point: nearest first, then further out (with a leader line).
LABEL_OFFSETS = [(dx * r, dy * r) for r in (6, 14, 24, 36)
                 for dx, dy in ((1, 1), (1, -1.6), (-1, 1), (-1, -1.6), (0, 1.4), (0, -2), (1.2, 0), (-1.2, 0))]


def title(what: str, run_id: str = "", preset: str = "") -> str:
    """'<what>: run <id> (preset <name>)', as much of it as is known."""
    where = f"run {run_id}" if run_id else ""
    if preset:
        where += f" (preset {preset})" if where else f"preset {preset}"
    return f"{what}: {where}" if where else what


def _scored(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "candidate" and e["status"] not in FAILED]


def is_clipped(score: float) -> bool:
    """A score at the clip: every task it was scored on at +3 (or -3), a mean of clipped scores."""
    return math.isclose(abs(score), CLIP, abs_tol=1e-9)


def _parity_and_clips(ax, xs: list[float], scores: list[float]) -> None:
    """AdamW parity (score 0) as a line; scores at the clip (|score| = 3) marked as such."""
    ax.axhline(0.0, color="0.35", linestyle="--", linewidth=0.9, label="AdamW parity (score 0)", zorder=1)
    clipped = [(x, y) for x, y in zip(xs, scores) if is_clipped(y)]
    if clipped:
        ax.scatter(*zip(*clipped), marker="x", s=28, color="darkorange", linewidths=1.2, zorder=4,
                   label=f"clipped score (|score| = {CLIP:g})")


def progress_figure(events: list[dict], window: int, heading: str = "progress"):
    """Score of every evaluated candidate, best so far, median of the last `window`, held-out scores."""
    plt = pyplot()
    scored = _scored(events)
    xs = list(range(1, len(scored) + 1))
    scores = [e["score"] for e in scored]
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.set_title(heading, fontsize=9)
    if scored:
        best = [max(scores[: i + 1]) for i in range(len(scores))]
        median = [statistics.median(scores[max(0, i + 1 - window): i + 1]) for i in range(len(scores))]
        ax.scatter(xs, scores, s=6, alpha=0.35, label="candidate")
        ax.plot(xs, best, label="best so far")
        ax.plot(xs, median, label=f"median of last {window}")
        position = {e["id"]: i + 1 for i, e in enumerate(scored)}
        held = [(position[e["id"]], e["score"]) for e in events if e["type"] == "held_out" and e["id"] in position]
        if held:
            ax.scatter(*zip(*held), marker="D", s=14, color="black", label="held-out score (meta-validation)")
        _parity_and_clips(ax, xs, scores)
        ax.legend(fontsize=7)
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("score vs tuned AdamW")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def progress(events: list[dict], window: int, path: Path, heading: str = "progress") -> Path:
    return save(progress_figure(events, window, heading), path)


def pareto_figure(events: list[dict], front_ids: set[int], heading: str = "Pareto front"):
    """Every candidate by complexity and score (size: state buffers), the hall of fame joined and labelled."""
    plt = pyplot()
    scored = _scored(events)
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.set_title(heading, fontsize=9)
    ax.set_xlabel("complexity (sum of primitive costs)")
    ax.set_ylabel("score vs tuned AdamW")
    if not scored:
        return figure
    ax.scatter([e["complexity"] for e in scored], [e["score"] for e in scored],
               s=[8 + 8 * e["state_buffers"] for e in scored], alpha=0.3, label="candidates (size: state buffers)")
    _parity_and_clips(ax, [e["complexity"] for e in scored], [e["score"] for e in scored])
    front = sorted((e for e in scored if e["id"] in front_ids), key=lambda e: (e["complexity"], -e["score"]))
    if front:
        ax.plot([e["complexity"] for e in front], [e["score"] for e in front], "o-", color="crimson",
                label="hall of fame")
    ax.legend(fontsize=7)
    ax.margins(0.12)
    figure.tight_layout()  # labels are placed in the final layout, and leave it as it is
    place_labels(ax, [(e["complexity"], e["score"]) for e in front], [f"#{e['id']}" for e in front])
    return figure


def place_labels(ax, points: list[tuple[float, float]], texts: list[str]) -> list:
    """Annotate each point at the nearest offset where its label overlaps no label placed before it."""
    renderer = ax.figure.canvas.get_renderer()
    placed, annotations = [], []
    for point, text in zip(points, texts):
        for dx, dy in LABEL_OFFSETS:
            far = abs(dx) > 8 or abs(dy) > 12
            annotation = ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", fontsize=7,
                                     ha="left" if dx > 0 else "right" if dx < 0 else "center", va="center",
                                     arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5} if far else None)
            annotation.set_in_layout(False)
            box = _text_box(annotation, renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            annotation.remove()
        else:  # nowhere free: the furthest place, overlapping (very crowded fronts only)
            annotation = ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", fontsize=7)
            annotation.set_in_layout(False)
            box = _text_box(annotation, renderer)
        placed.append(box)
        annotations.append(annotation)
    return annotations


def _text_box(annotation, renderer):
    """Where a label's text is on the canvas (an annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    return Text.get_window_extent(annotation, renderer)


def pareto(events: list[dict], front_ids: set[int], path: Path, heading: str = "Pareto front") -> Path:
    return save(pareto_figure(events, front_ids, heading), path)


def loss_curve_panels(best: dict, baselines: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """The best candidate's loss curve on each task against tuned AdamW's, one panel per task."""
    panels = {}
    for name, entry in best.get("tasks", {}).items():
        if entry.get("curve"):
            lines = {f"#{best['id']}": entry["curve"]}
            if baselines.get(name):
                lines["AdamW"] = baselines[name]
            clipped = ", clipped" if is_clipped(entry["score"]) else ""
            panels[f"{name} ({entry['score']:+.2f}{clipped})"] = lines
    return panels


def loss_curves(best: dict, baselines: dict[str, list[float]], path: Path, heading: str = "") -> Path | None:
    """The best candidate's loss curve on each task against tuned AdamW's."""
    return curve_grid(loss_curve_panels(best, baselines), path, heading)


class PlotWriter(Observer):
    """Draws progress.png, pareto.png and loss_curves.png into the run's plots/ at checkpoints.

    Everything is drawn from events.jsonl (and the baselines' curves), so a
    plot never disagrees with the record. A plot that cannot be written (a
    full disk, a read-only folder) is a warning: plots never stop a search.
    """

    def __init__(self, baseline_curves: Callable[[list[str]], dict[str, list[float]]] | None = None,
                 every_seconds: float = EVERY_SECONDS):
        self.baseline_curves = baseline_curves
        self.every_seconds = every_seconds
        self._last = -math.inf
        self._warned = False

    def on_checkpoint(self, snapshot: Snapshot, final: bool) -> None:
        if not final and time.monotonic() - self._last < self.every_seconds:
            return
        self._last = time.monotonic()
        try:
            write_plots(snapshot, self.baseline_curves)
        except OSError as exc:
            if not self._warned:
                log.warning("could not write plots into %s (%s); the search goes on", snapshot.run_dir / "plots", exc)
                self._warned = True


def write_plots(snapshot: Snapshot, baseline_curves=None) -> list[Path]:
    """Progress, Pareto front and the best candidate's loss curves, as PNGs in the run's plots/."""
    import json

    folder = snapshot.run_dir / "plots"
    folder.mkdir(exist_ok=True)
    events = []
    with open(snapshot.run_dir / "events.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                events.append(json.loads(line))
    run_id, preset = snapshot.run_id, snapshot.config.preset
    paths = [progress(events, snapshot.config.evolution.population, folder / "progress.png",
                      title("score of each candidate", run_id, preset)),
             pareto(events, {m.id for m in snapshot.hall_of_fame}, folder / "pareto.png",
                    title("hall of fame (Pareto front)", run_id, preset))]
    scored = _scored(events)
    if scored and baseline_curves is not None:
        best = max(scored, key=lambda e: e["score"])
        curves = loss_curves(best, baseline_curves(list(best["tasks"])), folder / "loss_curves.png",
                             title(f"loss of #{best['id']} against tuned AdamW", run_id, preset))
        paths += [curves] if curves else []
    return paths
