"""Per-layer latency from a measured kernel table (``autoq kernels bench``), interpolated.

Lookup for a layer ``(N, K)`` in format ``f`` at the search's batch size:

1. The same shape, format and batch was measured: its median.
2. Other shapes of that format and batch were measured around it (the smallest
   ``N*K`` at most the layer's, the largest at least): latency is linear in the
   work ``N*K`` (bytes and FLOPs of one format both scale with it) between the
   nearest measured shapes below and above; between shapes of equal work, linear in
   the log of the aspect ``N / K`` (384 x 1536 and 1536 x 384 differ 2.2x), the
   nearest measured aspect alone beyond them.
3. The format was not measured there (the kernels cover fewer formats than the
   search space, some only at some shapes): the nearest format (bits first, then
   granularity) measured around the shape, times the ratio of the two where the table
   measured both: at the format's own measured work nearest the shape (int5 measured
   at MiniLM's shapes 1.7-2.4x int4 stays so above them; the roofline ratio made it
   int4's time, less than at a smaller shape), on the measured shapes there weighted by
   the layer's aspect as in step 2, and above the format's range at least the roofline's ratio (a launch-bound
   0.96x int4 made int5 faster than int4 on memory-bound LLaMA layers). A format whose stand-in was not measured
   at its shapes is scaled by the ratio of the two formats' roofline estimates on the
   table's device, or by their bytes when the device has no preset. A format measured
   only at LLaMA shapes is not stretched down to 384 x 384, nor one measured only there
   up to 4096 x 4096. A format the table never measured is its nearest measured format
   (bits first), looked up by these steps, scaled by that estimate: int6-g32 follows
   int6-g128 (measured at MiniLM's shapes, 1.7-2x int4), never int4-g128 alone (it came
   out at half int6-g128's time above MiniLM's shapes, and faster than at smaller ones).
4. No format was measured around the shape: among the formats whose measured range
   ends nearest it (by the ratio of work), the format's own rows or the nearest
   format's, scaled as in 3: their smallest shape's latency below the range (a
   launch-bound floor, conservative), their largest scaled by ``N*K`` above it
   (work-bound). A format measured only at small shapes is not stretched far above
   them while another was measured much closer.

The batch size must be one the table measured; nothing is interpolated across batch.
A layer that quantizes its input to int8 as well (W8A8) takes the W8A8 kernel's rows,
which the table measured for int8 weights per channel, by the same steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

from autoq.errors import AutoqError
from autoq.latency.devices import preset_for
from autoq.latency.roofline import gemm_bytes, roofline_us
from autoq.quant import QuantSpec


@dataclass(frozen=True)
class Measurement:
    """One row of a latency table: shape ``(n, k)`` (= out, in), format name, batch, median microseconds."""

    n: int
    k: int
    format: str
    batch: int
    median_us: float
    activation: str = "fp16"  # "int8-token": the W8A8 kernel (int8 input rows), else the weight-only kernel


class TableLatency:
    """A `LatencyModel` backed by measurements of one device at one batch size."""

    def __init__(self, device: str, rows: Iterable[Measurement], batch: int, origin: str = "", timing: str = "flush") -> None:
        rows = list(rows)
        self.device, self.batch, self.origin, self.timing = device, batch, origin, timing
        self.note = ""
        batches = sorted({r.batch for r in rows})
        if batch not in batches:
            raise AutoqError(f"the latency table {origin or device!r} has no measurements at batch {batch}; measured batches: {batches or 'none'}")
        self._by_format: dict[str, list] = {}
        w8a8: list = []
        for r in rows:
            if r.batch == batch:
                if not r.median_us > 0:
                    raise AutoqError(f"latency table {origin or device!r}: median_us must be positive, got {r.median_us} for {r.format} {r.n}x{r.k}")
                into = self._by_format.setdefault(r.format, []) if r.activation == "fp16" else w8a8  # activations of kernels.table
                into.append((r.n * r.k, r.n, r.k, float(r.median_us)))
        for name, measured in self._by_format.items():
            self._by_format[name] = _grouped_by_work(sorted(measured))
        self._w8a8: Rows = _grouped_by_work(sorted(w8a8)) if w8a8 else []  # int8 weights x int8 rows: one series
        self._specs = {name: QuantSpec.from_name(name) for name in self._by_format}
        self._preset = preset_for(device)
        self._memo: dict[tuple[int, int, QuantSpec, bool], float] = {}

    @property
    def source(self) -> str:
        """``table:<device>``, naming the table's timing unless it is the default ``flush`` (``autoq.kernels.table.TIMINGS``):
        latencies by two methods must not be compared unawares, in MLflow tags or plots."""
        return f"table:{self.device}" + ("" if self.timing == "flush" else f" ({self.timing} timing)")

    @property
    def is_estimate(self) -> bool:
        return False

    @property
    def formats(self) -> list[str]:
        return sorted(self._by_format)

    def layer_us(self, out_features: int, in_features: int, spec: QuantSpec, int8_activations: bool = False) -> float:
        """The layer's kernel time: with ``int8_activations`` the W8A8 kernel's rows (steps 1, 2 and 4 of the module
        docstring on them) where the table measured it, else the weight-only kernel's, as without."""
        key = (out_features, in_features, spec, int8_activations)
        if key not in self._memo:
            if int8_activations and self._w8a8:
                self._memo[key] = _interpolate(self._w8a8, out_features, in_features)
            elif int8_activations:  # no W8A8 rows: the weight-only kernel's time was taken as is, half the W8A8 kernel's
                self._memo[key] = self._lookup(out_features, in_features, spec) * self._w8a8_ratio(out_features, in_features, spec)
            else:
                self._memo[key] = self._lookup(out_features, in_features, spec)
        return self._memo[key]

    def _w8a8_ratio(self, n: int, k: int, spec: QuantSpec) -> float:
        """The W8A8 kernels' latency over the weight-only kernel's for ``spec`` at ``(n, k)``, by the roofline of the table's
        device (two launches, the activations quantized first), or by their bytes without a preset."""
        if self._preset is not None:
            return roofline_us(n, k, spec, self.batch, self._preset, True) / roofline_us(n, k, spec, self.batch, self._preset)
        return gemm_bytes(n, k, spec, self.batch, True) / gemm_bytes(n, k, spec, self.batch)

    def coverage_note(self, shapes: Iterable[tuple[str, int, int]], far: float = 4.0) -> str:
        """A note on the layers ``(name, n, k)`` whose work ``N*K`` lies more than ``far`` times outside every shape this
        table measured: their latencies are stretched from its nearest shapes (a LLaMA-only table charged digits-cnn's
        layers 4x their time), so the user should measure the model's own shapes. ``""`` if none."""
        ends = [(rows[0][0], rows[-1][0]) for rows in self._by_format.values() if rows]
        if not ends:
            return ""
        lo, hi = min(e[0] for e in ends), max(e[1] for e in ends)
        shapes = list(shapes)
        outside = [name for name, n, k in shapes if n * k * far < lo or n * k > hi * far]
        if not outside:
            return ""
        shown = ", ".join(repr(name) for name in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        return (f"{len(outside)} of {len(shapes)} layers ({shown}) lie far outside the shapes the latency table "
                f"{self.origin or self.device!r} measured ({lo:,} to {hi:,} weights a layer), so their latencies are stretched "
                "from its nearest ones; 'autoq kernels bench --model ...' measures this model's own shapes")

    def format_note(self, specs: Iterable[QuantSpec], w8a8: bool = False) -> str:
        """A note on the weight formats among ``specs`` that this table never measured: their latencies are its nearest
        measured format's, scaled by an estimate's ratio of the two, an estimate inside a measured table's source; and,
        where the space runs the W8A8 kernel (``w8a8``) and the table never measured it, that its layers are estimated so
        too. ``""`` if it measured them all."""
        ratio = "the roofline estimate's ratio" if self._preset is not None else "the ratio of their bytes (no roofline preset for this device)"
        said = []
        # fp16 unmeasured is refused by the lookup (no format stands in for it): not said here as scaled from one
        missing = sorted({s.name for s in specs if s.name not in self._by_format and not s.is_half})
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            said.append(f"the latency table {self.origin or self.device!r} did not measure {len(missing)} weight format(s) of the "
                        f"space ({shown}): their latencies are its nearest measured format's, scaled by {ratio} between the two")
        if w8a8 and not self._w8a8:
            said.append(f"the latency table {self.origin or self.device!r} measured no W8A8 kernel (int8-token rows): layers with "
                        f"int8 activations take the weight-only kernel's time, scaled by {ratio} of the W8A8 kernels to it")
        return "; ".join(said) + "; 'autoq kernels bench' measures every format and kernel" if said else ""

    def _lookup(self, n: int, k: int, spec: QuantSpec) -> float:
        if spec.name not in self._by_format:  # never measured: its nearest measured format here, scaled by the estimate
            sibling = self._nearest_format(spec)
            return self._lookup(n, k, sibling) * self._estimated_ratio(n, k, spec, sibling)
        # formats of its kind measured nearest the shape: around it if any (distance 0), else those whose range ends
        # closest to it (fp16 never stands in for an integer format, nor the reverse)
        kind = [s for s in self._specs.values() if s.is_half == spec.is_half]
        distance = {s.name: _distance(self._by_format[s.name], n * k) for s in kind}
        nearest = [s for s in kind if distance[s.name] == min(distance.values())] if kind else None
        if spec.name in distance and distance[spec.name] == min(distance.values()):  # steps 1-2, or 4 on its own rows
            return _interpolate(self._by_format[spec.name], n, k)
        ref = self._nearest_format(spec, nearest)
        ref_us = _interpolate(self._by_format[ref.name], n, k)
        measured = self._measured_ratio(spec, ref, n, k)
        return ref_us * (measured if measured is not None else self._estimated_ratio(n, k, spec, ref))

    def _estimated_ratio(self, n: int, k: int, spec: QuantSpec, ref: QuantSpec) -> float:
        """``spec``'s latency over ``ref``'s by the roofline of the table's device, or by their bytes without a preset."""
        if self._preset is not None:
            return roofline_us(n, k, spec, self.batch, self._preset) / roofline_us(n, k, ref, self.batch, self._preset)
        return gemm_bytes(n, k, spec, self.batch) / gemm_bytes(n, k, ref, self.batch)

    def _measured_ratio(self, spec: QuantSpec, ref: QuantSpec, n: int, k: int) -> float | None:
        """``spec``'s latency over ``ref``'s where the table measured both: at ``spec``'s measured work nearest the layer's
        (its range's end on that side), on the shapes there weighted by the layer's aspect, as `_at` reads them (the mean
        of 1536 x 384 and 384 x 1536, 2.2x apart, moved a layer 26% when it left int5's range by one column); where ``ref``'s
        range covers it, else ``None`` (or where ``spec`` has no rows). Above that range, at least the roofline's
        ratio: a launch-bound shape measured int5 at 0.96x int4, and a memory-bound LLaMA layer, where int5 moves 18-29%
        more bytes, came out faster in int5."""
        own = self._by_format.get(spec.name)  # never ``ref``'s: a format measured around the shape was looked up on its own
        if not own:
            return None
        above = n * k > own[-1][0]
        edge = own[-1] if above else own[0]
        ref_rows = self._by_format[ref.name]
        if _distance(ref_rows, edge[0]) > 0:
            return None
        shapes = _aspect_weights(edge, n, k)  # what `_at` reads at the edge, for both formats
        ratio = sum(w * us for (_, _, us), w in shapes) / sum(w * _interpolate(ref_rows, en, ek) for (en, ek, _), w in shapes)
        return max(ratio, self._estimated_ratio(n, k, spec, ref)) if above else ratio

    def _nearest_format(self, spec: QuantSpec, among: list[QuantSpec] | None = None) -> QuantSpec:
        if not self._specs:
            raise AutoqError(f"the latency table {self.origin or self.device!r} has no rows at batch {self.batch}")
        # fp16 is a different kernel: never stand in for an integer format, nor the reverse
        same_kind = [s for s in (among if among is not None else self._specs.values()) if s.is_half == spec.is_half]
        if not same_kind:
            kind = "the fp16 matmul" if spec.is_half else "any integer format"
            raise AutoqError(f"the latency table {self.origin or self.device!r} has no rows for {kind} at batch {self.batch}; re-run 'autoq kernels bench'")
        return min(
            same_kind,
            key=lambda s: (abs(s.bits - spec.bits), s.granularity != spec.granularity, abs((s.group_size or 0) - (spec.group_size or 0)), s.symmetric != spec.symmetric, s.name),
        )


Rows = list[tuple[int, tuple[tuple[int, int, float], ...]]]  # (n*k, the measured (n, k, us) of that work)


def _grouped_by_work(measured: list[tuple[int, int, int, float]]) -> Rows:
    """Sorted ``(n*k, n, k, us)`` rows grouped by work: 4096 x 11008 and 11008 x 4096 give one point between their
    neighbours, holding both shapes; a layer reads them weighted by its own aspect there (:func:`_at`), so 4096 x 11009
    takes 4096 x 11008's time, not 11008 x 4096's."""
    rows: Rows = []
    for work, n, k, us in measured:
        if rows and rows[-1][0] == work:
            rows[-1] = (work, (*rows[-1][1], (n, k, us)))
        else:
            rows.append((work, ((n, k, us),)))
    return rows


def _distance(rows: Rows, work: int) -> float:
    """How far ``work`` lies outside the work these rows measured, as a ratio (0 inside): an int5 measured only at
    384 x 1536 must not be stretched 70-fold up to a 5120 x 13824 layer when int4 was measured at 11008 x 4096."""
    lo, hi = rows[0][0], rows[-1][0]
    return 0.0 if lo <= work <= hi else math.log(lo / work) if work < lo else math.log(work / hi)


def _aspect_weights(row: tuple, n: int, k: int) -> list[tuple[tuple[int, int, float], float]]:
    """A work point's measured ``(n, k, us)`` shapes, weighted for a layer ``(n, k)``: linear in ``log(n / k)`` between
    the two measured aspects either side of the layer's, the nearest one alone beyond them (weights sum to 1)."""
    aspect = math.log(n / k)
    shapes = sorted(row[1], key=lambda s: math.log(s[0] / s[1]))
    aspects = [math.log(mn / mk) for mn, mk, _ in shapes]
    if aspect <= aspects[0]:
        return [(shapes[0], 1.0)]
    if aspect >= aspects[-1]:
        return [(shapes[-1], 1.0)]
    j = bisect.bisect_left(aspects, aspect)  # aspects[j - 1] < aspect <= aspects[j]
    t = (aspect - aspects[j - 1]) / (aspects[j] - aspects[j - 1])
    return [(shapes[j - 1], 1.0 - t), (shapes[j], t)]


def _at(row: tuple, n: int, k: int) -> float:
    """A work point's latency for a layer ``(n, k)``, its measured shapes weighted by aspect (:func:`_aspect_weights`).
    The mean of all took 384 x 1536's 6.5 us and 1536 x 384's 2.9 us as 4.7 for every layer around them, so one column
    more or less than a measured shape moved its latency by 28-62%; the nearest aspect alone moved a square layer,
    halfway between them, by 38% at one row more or one column more (768 x 768: 4.7 us, 769 x 768: 2.9, 768 x 769: 6.5)."""
    return sum(weight * us for (_, _, us), weight in _aspect_weights(row, n, k))


def _interpolate(rows: Rows, n: int, k: int) -> float:
    """Latency at ``(n, k)`` from one format's rows at one batch (see the module docstring, steps 1, 2 and 4)."""
    work = n * k
    i = bisect.bisect_left([r[0] for r in rows], work)
    if i < len(rows) and rows[i][0] == work:
        return _at(rows[i], n, k)
    if i == 0:
        return _at(rows[0], n, k)
    if i == len(rows):
        return _at(rows[-1], n, k) * work / rows[-1][0]
    w_lo, w_hi = rows[i - 1][0], rows[i][0]
    us_lo, us_hi = _at(rows[i - 1], n, k), _at(rows[i], n, k)
    return us_lo + (us_hi - us_lo) * (work - w_lo) / (w_hi - w_lo)
