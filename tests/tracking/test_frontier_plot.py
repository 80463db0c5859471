"""The frontier plot: a latency panel whenever the points have latencies, labelled with their source; no pyplot state."""

from __future__ import annotations

import random

import matplotlib
import pytest
from matplotlib.image import imread

from autoq.choice import Assignment
from autoq.engine.result import Point, pareto_front
from autoq.tracking.frontier_plot import frontier_figure, save_frontier_plot


def points(n: int = 30, source: str | None = None, seed: int = 0) -> list[Point]:
    rng = random.Random(seed)
    out = []
    for trial in range(n):
        bits = rng.uniform(2.5, 8.0)
        latency = None if source is None else 40.0 + 12.0 * bits + rng.uniform(0.0, 5.0)  # us
        out.append(Point(trial, Assignment(), 1.0 - 0.5 / bits + rng.uniform(-0.02, 0.02), bits, int(bits * 1000),
                         uniform=trial % 10 == 0, latency_us=latency, latency_source=source))
    return out


def scattered(ax) -> int:
    """Points drawn as scatter markers on ``ax``, all series together."""
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_without_latency_one_panel_of_quality_against_bits():
    pts = points()
    front = pareto_front(pts)
    fig = frontier_figure(pts, front, budget_bits=4.5)
    (ax,) = fig.axes
    assert "effective bits" in ax.get_xlabel()
    assert scattered(ax) == len(pts) + len(front) + sum(p.uniform for p in pts)
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [4.5]  # the budget


@pytest.mark.parametrize(("source", "label"), [("estimate:roofline:h100", "ESTIMATE"), ("table:NVIDIA H200", "measured kernel table")])
def test_with_latency_a_second_panel_names_the_source(source, label):
    pts = points(source=source)
    front = pareto_front(pts)
    fig = frontier_figure(pts, front, budget_bits=6.0, budget_latency_ms=0.1)
    bits_ax, lat_ax = fig.axes
    assert "latency" in lat_ax.get_xlabel() and "(us)" in lat_ax.get_xlabel()  # under 1 ms: microseconds
    assert source in lat_ax.get_title() and label in lat_ax.get_title()
    assert scattered(lat_ax) == len(pts) + len(front)
    drawn = sorted(lat_ax.collections[0].get_offsets()[:, 0])
    assert drawn == pytest.approx(sorted(p.latency_us for p in pts))
    assert [line.get_xdata()[0] for line in lat_ax.lines if line.get_linestyle() == "--"] == [pytest.approx(100.0)]  # 0.1 ms
    assert "effective bits" in bits_ax.get_xlabel()


@pytest.mark.parametrize("budget_ms, drawn", [(0.1, True), (3.0, False)])
def test_a_budget_far_beyond_every_point_is_named_not_drawn(budget_ms, drawn):
    """3 ms over points at 70-150 us would stretch the axis twenty-fold: the legend names the budget instead."""
    pts = points(source="table:Test GPU")
    lat_ax = frontier_figure(pts, pareto_front(pts), budget_bits=20.0, budget_latency_ms=budget_ms).axes[1]
    lines = [line for line in lat_ax.lines if line.get_linestyle() == "--"]
    legend = [t.get_text() for t in lat_ax.get_legend().get_texts()]
    highest = max(p.latency_us for p in pts)
    if drawn:
        assert [line.get_xdata()[0] for line in lines] == [pytest.approx(100.0)] and "latency budget" in legend
    else:
        assert all(len(line.get_xdata()) == 0 for line in lines)
        assert "latency budget 3000 us: every point meets it (off the axis)" in legend
        assert lat_ax.get_xlim()[1] < 1.2 * highest
    bits_ax = lat_ax.figure.axes[0]
    assert "budget 20 bits: every point meets it (off the axis)" in [t.get_text() for t in bits_ax.get_legend().get_texts()]


def test_saved_png_has_both_panels_and_leaves_the_callers_backend(tmp_path):
    """A notebook's backend survives a search: the plot never calls ``matplotlib.use``."""
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        one = save_frontier_plot(points(), [], tmp_path / "bits.png")
        two = save_frontier_plot(points(source="table:Test GPU"), [], tmp_path / "latency.png", 4.5, 0.2)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert imread(one).shape[:2] == (540, 840)  # 7 x 4.5 in at 120 dpi
    assert imread(two).shape[:2] == (540, 1440)  # 12 x 4.5 in: a second panel


def test_latencies_in_a_narrow_band_are_labelled_whole_not_as_an_offset():
    """digits-cnn's 16.0059-16.0087 us read '0.0064 ... 0.0088' with '+1.6e1' in a corner, beside a '(us)' label."""
    import dataclasses

    pts = [dataclasses.replace(p, latency_us=16.0059 + 0.0003 * (p.trial % 10)) for p in points(source="estimate:roofline:h100")]
    fig = frontier_figure(pts, pareto_front(pts), budget_bits=6.0)
    _, lat_ax = fig.axes
    fig.canvas.draw()
    ticks = [float(t.get_text().replace("\u2212", "-")) for t in lat_ax.get_xticklabels() if t.get_text()]
    assert ticks and all(16.0 < t < 16.02 for t in ticks) and lat_ax.xaxis.get_offset_text().get_text() == ""
