"""Figures both packages draw: pyplot without a display, all-or-nothing PNG writes, loss-curve grids.

(search/plots.py draws a search's progress and Pareto front with these;
proxy_tasks/bench.py the curves of `optsearch bench`.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

DPI = 150


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> Path:
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
        pyplot().close(figure)  # pyplot keeps every open figure alive
    return path


def curve_grid_figure(panels: dict[str, dict[str, list[float]]], heading: str = ""):
    """One log-scale panel per title, one line per label (non-finite points are gaps)."""
    plt = pyplot()
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 2.9 * rows + (0.4 if heading else 0)),
                                squeeze=False)
    if heading:
        figure.suptitle(heading, fontsize=9)
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for label, curve in lines.items():
            values = [v if math.isfinite(v) and v > 0 else float("nan") for v in curve]
            ax.plot(range(len(values)), values, label=label)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step (window)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return figure


def curve_grid(panels: dict[str, dict[str, list[float]]], path: Path, heading: str = "") -> Path | None:
    if not panels:
        return None
    return save(curve_grid_figure(panels, heading), path)
