"""Plots of a search, from its events: progress, the Pareto front, loss curves.

Written as PNG files into runs/<run_id>/plots/ (and logged to MLflow by the
tracker). Everything is drawn from events.jsonl and the baseline cache, so a
plot never disagrees with the record.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from search.observers import Observer, Snapshot
from search.records import FAILED

DPI = 150
EVERY_SECONDS = 60.0  # plots are redrawn at checkpoints at most this often, and at the end
log = logging.getLogger("optsearch")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    """Write the figure as a PNG, all or nothing (a full disk leaves no half file), and free it."""
    try:
        figure.tight_layout()
        temporary = path.with_name(f".{path.name}.partial")
        try:
            figure.savefig(temporary, dpi=DPI, format="png")
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    finally:
        _pyplot().close(figure)  # pyplot keeps every open figure alive
    return path


def progress(events: list[dict], window: int, path: Path) -> Path:
    """Score of every evaluated candidate, best so far, median of the last `window`, held-out scores."""
    plt = _pyplot()
    scored = [e for e in events if e["type"] == "candidate" and e["status"] not in FAILED]
    xs = list(range(1, len(scored) + 1))
    scores = [e["score"] for e in scored]
    figure, ax = plt.subplots(figsize=(7, 4))
    if scored:
        best = [max(scores[: i + 1]) for i in range(len(scores))]
        median = [statistics.median(scores[max(0, i + 1 - window): i + 1]) for i in range(len(scores))]
        ax.scatter(xs, scores, s=6, alpha=0.35, label="candidate")
        ax.plot(xs, best, label="best so far")
        ax.plot(xs, median, label=f"median of last {window}")
        position = {e["id"]: i + 1 for i, e in enumerate(scored)}
        held = [(position[e["id"]], e["score"]) for e in events if e["type"] == "held_out" and e["id"] in position]
        if held:
            ax.scatter(*zip(*held), marker="x", color="black", label="held-out score (meta-validation)")
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("score vs tuned AdamW")
    if scored:
        ax.legend(fontsize=7)
    return _save(figure, path)


def pareto(events: list[dict], front_ids: set[int], path: Path) -> Path:
    plt = _pyplot()
    scored = [e for e in events if e["type"] == "candidate" and e["status"] not in FAILED]
    figure, ax = plt.subplots(figsize=(6, 4))
    if scored:
        ax.scatter([e["complexity"] for e in scored], [e["score"] for e in scored],
                   s=[8 + 8 * e["state_buffers"] for e in scored], alpha=0.3, label="candidates (size: state buffers)")
        front = sorted((e for e in scored if e["id"] in front_ids), key=lambda e: e["complexity"])
        if front:
            ax.plot([e["complexity"] for e in front], [e["score"] for e in front], "o-", color="crimson",
                    label="hall of fame")
            for e in front:
                ax.annotate(f"#{e['id']}", (e["complexity"], e["score"]), fontsize=7)
    ax.set_xlabel("complexity (sum of primitive costs)")
    ax.set_ylabel("score")
    if scored:
        ax.legend(fontsize=7)
    return _save(figure, path)


def curve_grid(panels: dict[str, dict[str, list[float]]], path: Path) -> Path | None:
    """One log-scale panel per title, one line per label (non-finite points are gaps)."""
    if not panels:
        return None
    plt = _pyplot()
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 2.9 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, curve in lines.items():
            values = [v if math.isfinite(v) and v > 0 else float("nan") for v in curve]
            ax.plot(range(len(values)), values, label=label)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step (window)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(figure, path)


def loss_curves(best: dict, baselines: dict[str, list[float]], path: Path) -> Path | None:
    """The best candidate's loss curve on each task against tuned AdamW's."""
    panels = {}
    for name, entry in best.get("tasks", {}).items():
        if entry.get("curve"):
            lines = {f"#{best['id']}": entry["curve"]}
            if baselines.get(name):
                lines["AdamW"] = baselines[name]
            panels[f"{name} ({entry['score']:+.2f})"] = lines
    return curve_grid(panels, path)


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
    paths = [progress(events, snapshot.config.evolution.population, folder / "progress.png"),
             pareto(events, {m.id for m in snapshot.hall_of_fame}, folder / "pareto.png")]
    scored = [e for e in events if e["type"] == "candidate" and e["status"] not in FAILED]
    if scored and baseline_curves is not None:
        best = max(scored, key=lambda e: e["score"])
        curves = loss_curves(best, baseline_curves(list(best["tasks"])), folder / "loss_curves.png")
        paths += [curves] if curves else []
    return paths
