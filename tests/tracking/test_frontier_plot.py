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


def line_of(latencies: list[float | None], source: str | None = "table:Test GPU") -> list[Point]:
    """One point per latency (us, or None), at 3.0, 3.5, ... bits, quality rising with them."""
    return [Point(i, Assignment(), 0.5 + 0.05 * i, 3.0 + 0.5 * i, 1000 + i, latency_us=lat, latency_source=source if lat is not None else None)
            for i, lat in enumerate(latencies)]


def dashed_at(ax) -> list[float]:
    """Where the dashed (budget) lines of ``ax`` are drawn."""
    return [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


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


def test_points_only_some_with_a_latency_get_one_panel():
    """The latency panel needs every point's latency: a run of mixed points plots quality against bits alone."""
    pts = line_of([100.0, None, 120.0])
    fig = frontier_figure(pts, pareto_front(pts))
    assert len(fig.axes) == 1 and "effective bits" in fig.axes[0].get_xlabel()


def test_the_frontier_staircase_is_drawn_only_without_latency():
    """Bits against quality: the Pareto frontier is a post-step staircase; with latency (three objectives) it is not drawn."""
    pts = line_of([None] * 5)
    front = pareto_front(pts)
    (ax,) = frontier_figure(pts, front).axes
    [stair] = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert stair.get_drawstyle() == "steps-post"
    assert list(stair.get_xdata()) == [p.effective_bits for p in front]
    with_latency = line_of([100.0, 110.0, 120.0, 130.0, 140.0])
    bits_ax, _ = frontier_figure(with_latency, pareto_front(with_latency)).axes
    assert [line for line in bits_ax.lines if line.get_linestyle() == "-"] == []


def test_a_latency_without_a_source_is_titled_unknown_source():
    """Points whose latency names no source: the panel's title says 'unknown source' and calls it measured."""
    pts = line_of([100.0, 120.0], source=None)
    _, lat_ax = frontier_figure(pts, pareto_front(pts)).axes
    assert lat_ax.get_title() == "latency source: unknown source\n(measured kernel table)"


def test_only_an_estimate_colon_source_is_called_an_estimate():
    """'estimate:' marks a roofline estimate; another source that merely begins with 'estimate' is not one."""
    pts = line_of([100.0, 120.0], source="estimated-by-hand")
    _, lat_ax = frontier_figure(pts, pareto_front(pts)).axes
    assert "(measured kernel table)" in lat_ax.get_title() and "ESTIMATE" not in lat_ax.get_title()


def test_latencies_reaching_a_millisecond_are_shown_in_ms():
    """The unit follows the slowest point: points from 500 us to 2 ms are plotted in ms, not us."""
    pts = line_of([500.0, 2000.0])
    _, lat_ax = frontier_figure(pts, pareto_front(pts)).axes
    assert "(ms)" in lat_ax.get_xlabel()
    assert sorted(lat_ax.collections[0].get_offsets()[:, 0]) == pytest.approx([0.5, 2.0])


def test_a_budget_up_to_one_span_beyond_the_points_is_drawn():
    """Points at 3.0-4.0 bits (span 1): a budget at 4.5 or exactly 5.0 bits is a dashed line; beyond it, a legend entry."""
    pts = line_of([None, None, None])
    for budget, drawn in ((4.5, True), (5.0, True), (5.01, False)):
        (ax,) = frontier_figure(pts, pareto_front(pts), budget_bits=budget).axes
        assert dashed_at(ax) == ([budget] if drawn else []), budget
        assert ("budget" in legend(ax)) is drawn


def test_a_latency_budget_at_points_that_all_share_one_latency_is_drawn():
    """All points at 4.1 us and a 0.0041 ms budget (4.1000000000000005 us once scaled): the line is drawn at the points,
    not named as a budget 'every point meets' off the axis."""
    pts = line_of([4.1, 4.1, 4.1])
    _, lat_ax = frontier_figure(pts, pareto_front(pts), budget_latency_ms=0.0041).axes
    assert dashed_at(lat_ax) == [pytest.approx(4.1)] and "latency budget" in legend(lat_ax)
