"""The frontier plot a search logs as ``frontier.png``: quality against effective bits, and against latency.

Built on a bare ``matplotlib.figure.Figure``, not ``pyplot``: pyplot keeps every open figure in
process-wide state, which parallel searches (Ray workers, threads) would share, and choosing its
backend (``matplotlib.use("Agg")``) would switch the caller's too, a notebook's inline plots included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autoq.engine.result import Point

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRIALS, UNIFORM, FRONTIER = "#9aa5b1", "#d9480f", "#1864ab"


def frontier_figure(points: Sequence[Point], frontier: Sequence[Point], budget_bits: float | None = None,
                    budget_latency_ms: float | None = None) -> Figure:
    """Quality against effective bits; when every point has a latency, a second panel of quality against latency."""
    from matplotlib.figure import Figure

    with_latency = bool(points) and all(p.latency_us is not None for p in points)
    fig = Figure(figsize=(12, 4.5) if with_latency else (7, 4.5), dpi=120)
    if with_latency:
        ax, lat_ax = fig.subplots(1, 2)
        _latency_panel(lat_ax, points, frontier, budget_latency_ms)
    else:
        ax = fig.subplots()
    ax.scatter([p.effective_bits for p in points], [p.quality for p in points], s=12, c=TRIALS, label="trials")
    uni = [p for p in points if p.uniform]
    if uni:
        ax.scatter([p.effective_bits for p in uni], [p.quality for p in uni], s=40, marker="s", facecolors="none", edgecolors=UNIFORM,
                   label="uniform")
    if not with_latency:  # a three-objective front is not a staircase in (bits, quality)
        ax.step([p.effective_bits for p in frontier], [p.quality for p in frontier], where="post", c=FRONTIER, lw=1.5)
    ax.scatter([p.effective_bits for p in frontier], [p.quality for p in frontier], s=24, c=FRONTIER, label="Pareto frontier")
    if budget_bits is not None:
        _budget_line(ax, budget_bits, [p.effective_bits for p in points], "budget", "bits")
    ax.set_xlabel("effective bits per weight (scales and zero points counted)")
    ax.set_ylabel("quality (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def save_frontier_plot(points: Sequence[Point], frontier: Sequence[Point], path: Path, budget_bits: float | None = None,
                       budget_latency_ms: float | None = None) -> Path:
    """Write :func:`frontier_figure` as an image (PNG for ``.png``)."""
    frontier_figure(points, frontier, budget_bits, budget_latency_ms).savefig(path)
    return path


def _latency_panel(ax: Axes, points: Sequence[Point], frontier: Sequence[Point], budget_ms: float | None) -> None:
    """Quality against latency, in us for small models; the title names the latency's source and whether it was measured."""
    from matplotlib.ticker import MaxNLocator

    source = points[0].latency_source or "unknown source"
    in_us = max(p.latency_us for p in points) < 1e3  # small models: microseconds read better
    scale, unit = (1e3, "us") if in_us else (1.0, "ms")
    ax.scatter([p.latency_ms * scale for p in points], [p.quality for p in points], s=12, c=TRIALS, label="trials")
    front = sorted(frontier, key=lambda p: p.latency_us)
    ax.scatter([p.latency_ms * scale for p in front], [p.quality for p in front], s=24, c=FRONTIER,
               label="Pareto frontier (quality, bits, latency)")
    if budget_ms is not None:
        _budget_line(ax, budget_ms * scale, [p.latency_ms * scale for p in points], "latency budget", unit)
    estimate = "ESTIMATE from published peaks, not measured" if source.startswith("estimate:") else "measured kernel table"
    ax.set_title(f"latency source: {source}\n({estimate})", fontsize=9)
    ax.set_xlabel(f"latency of the searched layers' GEMMs ({unit})")
    ax.set_ylabel("quality (higher is better)")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.ticklabel_format(axis="x", useOffset=False)  # 16.0064 us, not 0.0064 and '+1.6e1' in a corner beside a '(us)' label
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _budget_line(ax: Axes, budget: float, xs: Sequence[float], label: str, unit: str) -> None:
    """A dashed line at the budget; or, for a budget more than the points' span beyond them all, a legend entry only.

    A 3 ms budget over a small model whose points lie at 113-148 us would stretch the axis twenty-fold
    and squeeze every point into one column; the legend then says where the budget is instead."""
    hi, lo = max(xs, default=budget), min(xs, default=budget)
    if budget <= hi + max(hi - lo, 1e-9 * abs(hi)):
        ax.axvline(budget, ls="--", c="#495057", lw=1, label=label)
    else:
        ax.plot([], [], ls="--", c="#495057", lw=1, label=f"{label} {budget:g} {unit}: every point meets it (off the axis)")
