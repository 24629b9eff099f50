"""Plots of a search, from its events: progress, the Pareto front, loss curves.

Written as PNG files into runs/<run_id>/plots/ (and logged to MLflow by the
tracker). Everything is drawn from events.jsonl and the baseline cache, so a
plot never disagrees with the record.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

FAILED = ("error", "timeout", "crashed")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    """Write the figure as a PNG and free it (pyplot keeps every open figure alive)."""
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)
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
