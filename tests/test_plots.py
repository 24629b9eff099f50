"""Plots a reader can cite: titled with the run and preset, AdamW parity drawn, clipped scores marked,
Pareto labels that do not overlap, valid 150-dpi PNGs, from a small recorded run."""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import pytest
from matplotlib.text import Text

from search import config as config_module
from search import plots
from search.engine import run
from search.run_store import RunStore


def png_info(path: Path) -> dict:
    """Width, height and dots per inch of a PNG, every chunk's CRC checked (a truncated file fails)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    info, position = {}, 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: damaged {kind!r} chunk"
        if kind == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        elif kind == b"pHYs":
            per_metre, _, unit = struct.unpack(">IIB", body)
            info["dpi"] = round(per_metre * 0.0254) if unit == 1 else None
        position += 12 + length
        if kind == b"IEND":
            break
    assert position == len(data), f"{path}: bytes after IEND"
    return info


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A behaviour search (serial), with the titles of the figures its plot writer saved."""
    folder = tmp_path_factory.mktemp("plots")
    saved = {}
    original = plots.save

    def capture(figure, path):
        saved[Path(path).name] = {"titles": [ax.get_title() for ax in figure.axes],
                                  "labels": [line.get_label() for ax in figure.axes for line in ax.get_lines()]}
        return original(figure, path)

    config = config_module.load("smoke", overrides=["evaluation.kind=behaviour", "workers.serial=true",
                                                    "stop.max_evals=16", "tracking.enabled=false"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save", capture)
        run(config, run_dir=folder / "plotted", observers=[])
    return folder / "plotted", saved


def test_the_plot_writer_draws_valid_titled_pngs_of_a_recorded_run(recorded):
    run_dir, saved = recorded
    for name in ("progress.png", "pareto.png"):
        path = run_dir / "plots" / name
        info = png_info(path)
        assert info["dpi"] == plots.DPI == 150
        assert info["width"] >= 600 and info["height"] >= 400
        assert path.stat().st_size > 10_000
        assert "run plotted" in saved[name]["titles"][0] and "preset smoke" in saved[name]["titles"][0]
        assert any(label.startswith("AdamW parity") for label in saved[name]["labels"])
    assert not list((run_dir / "plots").glob(".*partial"))


def _events(scores: list[float], complexities: list[float] | None = None) -> list[dict]:
    complexities = complexities or [float(i % 5) for i in range(len(scores))]
    return [{"type": "candidate", "id": i, "status": "ok", "score": s, "complexity": c, "state_buffers": i % 3}
            for i, (s, c) in enumerate(zip(scores, complexities))]


def _legend(figure) -> list[str]:
    return [text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().get_texts()]


def test_progress_has_a_parity_line_at_zero_and_marks_clipped_scores():
    events = _events([-3.0, -1.0, 0.5, 3.0, 0.2]) + [{"type": "held_out", "id": 2, "score": 0.1}]
    figure = plots.progress_figure(events, 3, plots.title("score of each candidate", "r1", "smoke"))
    ax = figure.axes[0]
    assert ax.get_title() == "score of each candidate: run r1 (preset smoke)"
    parity = [line for line in ax.get_lines() if line.get_label().startswith("AdamW parity")]
    assert parity and set(parity[0].get_ydata()) == {0.0}
    assert any("clipped" in text for text in _legend(figure))
    clipped = next(c for c in ax.collections if "clipped" in c.get_label())
    assert sorted(y for _, y in clipped.get_offsets()) == [-3.0, 3.0]
    unclipped = plots.progress_figure(_events([0.1, 0.2, -3.4]), 3)  # behaviour scores go past 3 unclipped
    assert not any("clipped" in text for text in _legend(unclipped))


def test_pareto_labels_do_not_overlap_even_for_a_crowded_front():
    scores = [0.50, 0.51, 0.52, 0.53, 0.49, 0.48, 0.47, 0.54, 3.0, -3.0]
    complexities = [4.0, 4.02, 4.04, 4.06, 3.98, 3.96, 3.94, 4.08, 6.0, 2.0]
    events = _events(scores, complexities)
    figure = plots.pareto_figure(events, set(range(len(events))), plots.title("hall of fame", "r2", "quickstart"))
    ax = figure.axes[0]
    assert ax.get_title() == "hall of fame: run r2 (preset quickstart)"
    assert any(line.get_label().startswith("AdamW parity") for line in ax.get_lines())
    assert any("clipped" in text for text in _legend(figure))
    renderer = figure.canvas.get_renderer()
    labels = [text for text in ax.texts if text.get_text().startswith("#")]
    assert sorted(text.get_text() for text in labels) == sorted(f"#{i}" for i in range(len(events)))
    boxes = [Text.get_window_extent(text, renderer) for text in labels]  # the text, not its leader line
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)


def test_loss_curves_are_titled_and_saved(tmp_path):
    best = {"id": 7, "tasks": {"quadratic": {"score": 3.0, "curve": [1.0, 0.5, 0.1]},
                               "mlp": {"score": -0.2, "curve": [2.0, float("inf"), 1.0]}}}
    path = plots.loss_curves(best, {"quadratic": [1.0, 0.8, 0.6]}, tmp_path / "loss_curves.png",
                             plots.title("loss of #7 against tuned AdamW", "r3", "smoke"))
    assert path == tmp_path / "loss_curves.png" and png_info(path)["dpi"] == 150
    figure = plots.curve_grid_figure(plots.loss_curve_panels(best, {}), "heading")
    assert figure._suptitle.get_text() == "heading"
    assert [ax.get_title() for ax in figure.axes[:2]] == ["quadratic (+3.00, clipped)", "mlp (-0.20)"]
    assert plots.loss_curves({"id": 1, "tasks": {}}, {}, tmp_path / "none.png") is None


def test_a_recorded_runs_events_redraw_the_same_plots(recorded, tmp_path):
    run_dir, _ = recorded
    events = RunStore(run_dir).read_events()
    path = plots.progress(events, 6, tmp_path / "progress.png", plots.title("again", "plotted", "smoke"))
    assert png_info(path)["width"] == png_info(run_dir / "plots" / "progress.png")["width"]
