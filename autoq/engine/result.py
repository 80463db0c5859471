"""What a search returns: evaluated points, the Pareto frontier, the chosen point."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.evaluate import apply_assignment


@dataclass(frozen=True)
class Point:
    """One evaluated assignment."""

    trial: int
    assignment: Assignment
    quality: float
    effective_bits: float
    size_bytes: int
    uniform: bool = False
    run_id: str | None = None

    def row(self) -> dict:
        return {
            "trial": self.trial,
            "quality": self.quality,
            "effective_bits": self.effective_bits,
            "size_bytes": self.size_bytes,
            "uniform": self.uniform,
            "run_id": self.run_id or "",
            "choices": self.assignment.summary(),
        }


def pareto_front(points: list[Point]) -> list[Point]:
    """Points not dominated in (quality up, effective bits down), sorted by bits; ties keep the earliest."""
    ordered = sorted(points, key=lambda p: (p.effective_bits, -p.quality, p.trial))
    front: list[Point] = []
    for p in ordered:
        if not front or p.quality > front[-1].quality:
            front.append(p)
    return front


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`autoq.search`. Holds no model, so it pickles and compares cheaply."""

    budget: Budget
    metric: str
    reference_quality: float
    points: tuple[Point, ...]
    frontier: tuple[Point, ...]
    study_name: str
    storage: str | None
    tracking_uri: str | None
    parent_run_id: str | None
    eval_seconds: float  # one evaluation pass of the unquantized model
    wall_seconds: float
    n_infeasible: int = 0
    n_failed: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def best(self) -> Point:
        """The highest-quality point within the budget (every evaluated point is)."""
        return max(self.points, key=lambda p: (p.quality, -p.effective_bits))

    @property
    def uniform_points(self) -> list[Point]:
        return [p for p in self.points if p.uniform]

    @property
    def best_uniform(self) -> Point | None:
        uniform = self.uniform_points
        return max(uniform, key=lambda p: (p.quality, -p.effective_bits)) if uniform else None

    def apply(self, model: nn.Module, point: Point | Assignment | None = None) -> nn.Module:
        """Quantize ``model`` in place with ``point`` (the best one by default) and return it."""
        chosen = point if point is not None else self.best
        assignment = chosen.assignment if isinstance(chosen, Point) else chosen
        return apply_assignment(model, assignment)
