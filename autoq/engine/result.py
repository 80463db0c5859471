"""What a search returns: evaluated points, the Pareto frontier, the chosen point."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.errors import AutoqError
from autoq.evaluate import apply_assignment
from autoq.fingerprints import model_hash

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Searched:
    """How the search that scored a point quantized: what `autoq.export` of the point must do the same way (the
    calibration batches it checks, ``sequential``), as it reads them from a run for a point given as a run id."""

    sequential: bool = False
    calibration_digest: str = ""
    n_calibration: int = 0
    model_hash: str = ""  # of the searched model's weights ("" when not recorded): an export onto others is refused
    plugin_code: tuple[tuple[str, str], ...] = ()  # (plug-in PTQ method, code digest) it scored with: an edited one is refused


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
    latency_us: float | None = None  # with a device: summed layer latency from the cost model
    latency_source: str | None = None  # "table:<device>" or "estimate:roofline:<device>"
    searched: Searched | None = field(default=None, compare=False, repr=False)  # set by the SearchResult that holds it

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency_us is None else self.latency_us / 1e3

    def row(self) -> dict:
        row = {
            "trial": self.trial,
            "quality": self.quality,
            "effective_bits": self.effective_bits,
            "size_bytes": self.size_bytes,
        }
        if self.latency_us is not None:
            row.update(latency_ms=self.latency_ms, latency_source=self.latency_source or "")
        row.update(uniform=self.uniform, run_id=self.run_id or "", choices=self.assignment.summary())
        return row


def distinct_assignments(points: Iterable[Point]) -> int:
    """How many different assignments ``points`` hold (a sampler's repeat of one is a point of its own)."""
    return len({p.assignment for p in points})


def best_point(points: Sequence[Point]) -> Point:
    """The highest quality; of equal qualities the fewest bits, then the lowest latency, then the earliest trial, as the
    frontier keeps ties (what ``result.best`` and the logged ``best_*`` metrics both report; points of Ray workers come
    in the order they finish, and the later of two equal trials was best while the frontier held the earlier)."""
    return max(points, key=lambda p: best_rank(p.quality, p.effective_bits, p.latency_us, p.trial))


def best_rank(quality: float, effective_bits: float, latency: float | None, trial: int) -> tuple[float, float, float, int]:
    """The order :func:`best_point` picks by, the largest first; also for frontier rows read back from MLflow (an
    export of a search run takes its best point by it). ``latency`` in any one unit, ``None`` without a device."""
    return quality, -effective_bits, -(latency or 0.0), -trial


def _dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` in quality, bits and latency (ties count as dominating)."""
    return a.quality >= b.quality and a.effective_bits <= b.effective_bits and a.latency_us <= b.latency_us  # type: ignore[operator]


def pareto_front(points: list[Point]) -> list[Point]:
    """Points not dominated in (quality up, effective bits down[, latency down]), sorted by bits.

    Latency joins the objectives when every point has one (a search with a device).
    Ties keep the earliest trial.
    """
    ordered = sorted(points, key=lambda p: (p.effective_bits, -p.quality, p.latency_us or 0.0, p.trial))
    front: list[Point] = []
    if points and all(p.latency_us is not None for p in points):
        # sorted this way, a point can only be dominated (or tied) by one before it,
        # and whatever dominates it is itself on the front or dominated by a front member
        for p in ordered:
            if not any(_dominates(f, p) for f in front):
                front.append(p)
        return front
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
    eval_seconds: float = field(compare=False)  # one evaluation pass of the unquantized model; timings are not part of equality
    wall_seconds: float = field(compare=False)
    n_infeasible: int = 0
    n_failed: int = 0
    extra: dict = field(default_factory=dict, compare=False)
    sequential: bool = False  # the search captured data-driven methods' statistics sequentially: apply does too
    calibration_digest: str = field(default="", compare=False)  # of the batches data-driven methods calibrated on ("" if none could)
    n_calibration: int = field(default=0, compare=False)  # how many batches that was
    n_uniform: int | None = None  # uniform assignments within the budget the search counted as baselines (None: not recorded)
    model_hash: str = field(default="", compare=False)  # of the searched model's weights and buffers ("" if not recorded)
    plugin_code: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the plug-in methods' code digests (autoq.ptq.plugin_code)
    module: bool = field(default=False, compare=False)  # searched an nn.Module passed from Python: its export is a Python call

    def __post_init__(self) -> None:
        """Each point carries how it was searched, so that ``autoq.export(model, result.best, ...)`` checks the
        calibration batches and reads ``sequential`` as ``result.apply`` does."""
        searched = Searched(self.sequential, self.calibration_digest, self.n_calibration, self.model_hash, self.plugin_code)
        for name in ("points", "frontier"):
            object.__setattr__(self, name, tuple(dataclasses.replace(p, searched=searched) for p in getattr(self, name)))

    def __repr__(self) -> str:
        """Short, for a notebook or a log: the budget, the counts, the best point and where the search is stored (the
        dataclass's repr printed every point and the frontier again)."""
        best = best_point(self.points) if self.points else None
        said = (f"trial {best.trial}, quality {best.quality:.4g} at {best.effective_bits:.3f} bits" if best else "none")
        return (f"SearchResult(budget={self.budget.text!r}, points={len(self.points)}, frontier={len(self.frontier)}, "
                f"best=<{said}>, study_name={self.study_name!r}, parent_run_id={self.parent_run_id!r})")

    @property
    def best(self) -> Point:
        """The highest-quality point within the budget (every evaluated point is); of equals, the cheapest."""
        if not self.points:
            raise AutoqError(f"the search {self.study_name!r} has no evaluated point (every trial failed, or none ran)")
        return best_point(self.points)

    @property
    def uniform_points(self) -> list[Point]:
        return [p for p in self.points if p.uniform]

    @property
    def uniform_coverage(self) -> tuple[int, int | None]:
        """(distinct uniform assignments evaluated, those within the budget): where fewer were evaluated (a strategy that
        proposes its own, fewer trials than baselines), `best_uniform` is the best of those, not of all."""
        return distinct_assignments(self.uniform_points), self.n_uniform

    @property
    def best_uniform(self) -> Point | None:
        uniform = self.uniform_points
        return max(uniform, key=lambda p: (p.quality, -p.effective_bits)) if uniform else None

    def covers(self, other: SearchResult) -> bool:
        """Every frontier point of ``other`` is matched or beaten (quality up, bits down, and latency down where both
        points have one: a search with a device) by a point of this frontier."""
        def beats(p: Point, q: Point) -> bool:
            faster = p.latency_us is None or q.latency_us is None or p.latency_us <= q.latency_us
            return p.quality >= q.quality and p.effective_bits <= q.effective_bits and faster

        return all(any(beats(p, q) for p in self.frontier) for q in other.frontier)

    @classmethod
    def from_mlflow(cls, run_id: str, tracking_uri: str) -> SearchResult:
        """Rebuild the result of a search from its MLflow parent run id (``result.parent_run_id``)."""
        from autoq.tracking.runs import load_result

        return load_result(run_id, tracking_uri)

    def study(self) -> optuna.Study:
        """The search's Optuna study, loaded from its storage: ``result.study().trials_dataframe()``, ``optuna.visualization``.

        Its trials hold every proposal, the over-budget ones pruned, with the layers' choices as params."""
        if self.storage is None:
            raise AutoqError(f"the study {self.study_name!r} was kept in memory (storage=None) and is gone; search with a storage to keep it")
        from autoq.engine.resume import load_study

        return load_study(self.storage, self.study_name)  # a clear error, and no empty database made, where it is not

    def apply(self, model: nn.Module, point: Point | Assignment | None = None, calibration: Iterable[Any] | None = None) -> nn.Module:
        """Quantize ``model`` in place with ``point`` (the best one by default) and return it (fake quantization, fp32).

        ``calibration``: the batches the search calibrated on, for data-driven methods (GPTQ, AWQ, AdaRound, bias
        correction), which are run again on them, sequentially if the search was (a search without ``evaluate`` held
        out the last quarter of the batches it was given and calibrated on the rest). The layers come out as the
        search evaluated them and as `autoq.export` writes them. A point with activation formats needs hooks:
        `autoq.export` it. A `Point` goes onto the weights the search scored only (other weights are refused, as
        `autoq.export` refuses them); its ``point.assignment`` quantizes any weights by the same choices, unscored."""
        from autoq.evaluate.fidelity import user_batches
        from autoq.export.quantize import check_calibration, needs_calibration, quantize_point
        from autoq.model import check_has_values, check_untied, find_layers, get_module, to_native, uncompiled

        if not isinstance(model, nn.Module):
            raise AutoqError(f"apply quantizes an nn.Module in place; got {type(model).__name__} (load a built-in by name with "
                             "autoq.builtin.load_workload(name).model)")
        chosen = point if point is not None else self.best
        if not isinstance(chosen, (Point, Assignment)):
            raise AutoqError(f"point must be a Point of this result (result.best, result.frontier[i]) or an Assignment, got "
                             f"{type(chosen).__name__}; an MLflow run id goes to autoq.export")
        assignment = chosen.assignment if isinstance(chosen, Point) else chosen
        inner = uncompiled(model)  # a torch.compile'd model is quantized in the module it holds, by the search's layer names
        check_has_values(inner)
        if isinstance(chosen, Point) and self.model_hash:  # as autoq.export checks: a point's quality is of the weights searched

            now = model_hash(inner)
            if now != self.model_hash:
                raise AutoqError(f"the model's weights are not the ones the search scored (hash {now}, the search's {self.model_hash}): "
                                 "changed since, or another model; apply it to the searched weights (or quantize these by the same "
                                 "choices, unscored: result.apply(model, point.assignment))")
        with_acts = [f"{name} ({c.name})" for name, c in assignment.items() if c.activation is not None]
        if with_acts:  # before any layer changes, not midway
            raise AutoqError(f"the point quantizes activations ({', '.join(with_acts[:3])}), which needs forward hooks: "
                             "autoq.export it and autoq.load the result")
        data_driven = needs_calibration(assignment)
        batches = user_batches(calibration) if calibration is not None else []  # once: an iterator (a generator) is read twice below
        if data_driven and calibration is None:
            methods = sorted({c.method for c in assignment.values() if c.name in data_driven})
            raise AutoqError(f"the point uses data-driven methods {methods}: pass the search's "
                             "calibration batches, result.apply(model, calibration=batches)")
        if data_driven:
            check_calibration(batches, self.calibration_digest, self.n_calibration)
        # as autoq.export refuses it: the shared tensor (a tied lm_head's, the input embedding) was quantized for both uses
        check_untied(inner, [name for name, c in assignment.items() if not c.weight.is_half], "apply")
        layers = [layer for layer in find_layers(inner, include_tied=True) if layer.name in assignment]
        parts = quantize_point(inner, assignment, layers, batches, sequential=self.sequential)
        apply_assignment(inner, {name: c for name, c in assignment.items() if c.weight.is_half})
        with torch.no_grad():
            for name, part in parts.items():
                module = get_module(inner, name)
                module.weight.data = to_native(module, part.tensor.dequantize())
                if part.bias is not None:
                    module.bias.data = part.bias
        return model
