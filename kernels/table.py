"""Latency tables: measured kernel latencies per (layer shape, weight format, batch) on one device.

Written by ``autoq kernels bench`` and read by the cost model. JSON layout (version 1)::

    {"version": 1, "device": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "triton": "3.9.0",
     "cuda": "12.8", "created": "2026-11-25T14:00:00Z", "peak_bandwidth_gbs": 3350.0, "timing": "flush",
     "rows": [{"n": 4096, "k": 4096, "format": "int4-g128-asym", "kernel": "wq", "batch": 1,
               "median_us": 12.3, "p20_us": 12.1, "p80_us": 12.6, "gbps": 1450.2,
               "activation": "fp16"}, ...]}

``n``/``k`` are ``out_features``/``in_features`` of the layer (``y = x @ W.T``, ``W`` is
``(n, k)``); ``format`` is the weight format's ``QuantSpec.name`` (``fp16`` for the torch
baseline); ``kernel`` is the registry name of the kernel measured (``torch-fp16`` for
the baseline); ``batch`` is the number of rows of ``x`` (tokens); ``gbps`` is the
achieved bandwidth: bytes of packed weights, scales, activations and outputs over the
median time; ``activation`` is ``fp16`` for weight-only kernels and the baseline (the
activations stay fp16) and ``int8-token`` for W8A8 (activations quantized per token,
which the search does not simulate). ``select`` and ``lookup`` consider ``fp16``-activation
rows unless asked otherwise. ``peak_bandwidth_gbs`` is optional (``null`` when unknown).
``timing`` says how every row was timed (``TIMINGS``; tables written before it existed were
``flush``): one table holds one method, so its speedups compare like with like.
Rows timed with autotuning may also carry ``tiles`` (the tile each Triton kernel ran with) and
``tile_timings_us`` (every candidate tile's median as the autotuner timed it); readers need neither.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoq.errors import AutoqError
from autoq.files import parse_json, write_text_atomic
from autoq.kernels.formats import supports_w8a8
from autoq.quant import QuantSpec

TABLE_VERSION = 1
_ROW_FIELDS = ("n", "k", "format", "kernel", "batch", "median_us", "p20_us", "p80_us", "gbps")
WEIGHT_ONLY = "fp16"  # activation of weight-only kernels and of the fp16 baseline
INT8_TOKENS = "int8-token"  # activation of W8A8 kernels
# what an exported model runs (autoq.export's modules: ops.wq_linear dispatching by batch, ops.w8a8_linear) and the fp16
# baseline's matmul (bench.BASELINE_KERNEL), so the kernels a latency table prices layers by
DEPLOYED_KERNELS = ("wq", "w8a8", "torch-fp16")
TIMINGS = {  # how a table's rows were timed (autoq.kernels.timing), by the name the table and --timing use
    "flush": "CUDA graph replay, L2 flushed before each call",
    "rotate": "CUDA graph replay, calls back to back, each on its own copy of the weights",
}


@dataclass(frozen=True)
class LatencyRow:
    """One measurement: kernel ``kernel`` on weight format ``format`` at shape ``(n, k)`` and ``batch`` rows."""

    n: int
    k: int
    format: str
    kernel: str
    batch: int
    median_us: float
    p20_us: float
    p80_us: float
    gbps: float
    activation: str = WEIGHT_ONLY
    tiles: tuple[str, ...] = ()  # the tile each autotuned Triton kernel ran with ("wq_gemv_kernel 16x1024 w4 s2")
    tile_timings_us: tuple[tuple[str, float], ...] = ()  # every candidate tile's median as its autotuner timed it

    @property
    def key(self) -> tuple[int, int, str, int]:
        return (self.n, self.k, self.format, self.batch)

    def to_dict(self) -> dict:
        """The row as JSON: the tile fields only when known, the candidates as ``{tile: us}``."""
        out = {f: getattr(self, f) for f in (*_ROW_FIELDS, "activation")}
        if self.tiles:
            out["tiles"] = list(self.tiles)
        if self.tile_timings_us:
            out["tile_timings_us"] = dict(self.tile_timings_us)
        return out


@dataclass(frozen=True)
class LatencyTable:
    """A device's measured latencies with the versions they were measured under."""

    device: str
    rows: tuple[LatencyRow, ...]
    torch: str = ""
    triton: str = ""
    cuda: str = ""
    created: str = ""
    peak_bandwidth_gbs: float | None = None
    timing: str = "flush"  # one of TIMINGS
    _best: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise AutoqError(f"latency table timing {self.timing!r} is unknown; it is one of {', '.join(TIMINGS)}")
        best: dict[tuple, LatencyRow] = {}
        for row in self.rows:
            key = (*row.key, row.activation)
            if key not in best or row.median_us < best[key].median_us:
                best[key] = row
        object.__setattr__(self, "_best", best)

    def lookup(self, n: int, k: int, fmt: str, batch: int, kernel: str | None = None,
               activation: str = WEIGHT_ONLY) -> LatencyRow | None:
        """The exact measurement for this shape, format and batch: the fastest kernel unless ``kernel`` is named."""
        if kernel is None:
            return self._best.get((n, k, fmt, batch, activation))
        for row in self.rows:
            if row.key == (n, k, fmt, batch) and row.kernel == kernel:
                return row
        return None

    def deployed(self, activation: str = WEIGHT_ONLY) -> tuple[LatencyRow, ...]:
        """One row per (shape, format, batch) with ``activation``: the kernel an exported model runs there (``wq``, ``w8a8``,
        the fp16 baseline's matmul: :data:`DEPLOYED_KERNELS`) where the table measured it, else the fastest measured. A
        ``wq-gemv`` row at half ``wq``'s priced the layer at a kernel ``autoq.load``'s modules never call."""
        chosen: dict[tuple, LatencyRow] = {}
        for row in self.rows:
            if row.activation != activation:
                continue
            held = chosen.get(row.key)
            if held is None or (row.kernel not in DEPLOYED_KERNELS, row.median_us) < (held.kernel not in DEPLOYED_KERNELS, held.median_us):
                chosen[row.key] = row
        return tuple(chosen.values())

    def select(self, fmt: str | None = None, batch: int | None = None, activation: str = WEIGHT_ONLY) -> tuple[LatencyRow, ...]:
        """The fastest row per (shape, format, batch) with ``activation``, filtered by format and/or batch (whatever kernel:
        the cost model reads :meth:`deployed` instead)."""
        return tuple(r for r in self._best.values()
                     if (fmt is None or r.format == fmt) and (batch is None or r.batch == batch) and r.activation == activation)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(sorted({r.format for r in self.rows}))

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple(sorted({(r.n, r.k) for r in self.rows}))

    @property
    def batches(self) -> tuple[int, ...]:
        return tuple(sorted({r.batch for r in self.rows}))

    def merged(self, rows: Iterable[LatencyRow]) -> LatencyTable:
        """This table plus ``rows`` (a new row replaces an old one with the same key and kernel)."""
        new = list(rows)
        keys = {(r.key, r.kernel) for r in new}
        kept = [r for r in self.rows if (r.key, r.kernel) not in keys]
        return replace(self, rows=tuple(kept + new))

    def updating(self, old: LatencyTable, source: str = "the existing table") -> LatencyTable:
        """This table (a new measurement) with ``old``'s rows that it did not re-measure kept: what ``--merge`` writes.

        Refused when ``old`` was measured on another device or by another timing, whose rows would not compare."""
        check_mergeable(old, self.device, self.timing, source, self.versions)
        return replace(self, rows=old.merged(self.rows).rows)

    @property
    def versions(self) -> dict[str, str]:
        """The software it was measured with: ``torch``, ``triton`` and ``cuda`` versions."""
        return {"torch": self.torch, "triton": self.triton, "cuda": self.cuda}

    def to_dict(self) -> dict:
        return {
            "version": TABLE_VERSION,
            "device": self.device,
            "torch": self.torch,
            "triton": self.triton,
            "cuda": self.cuda,
            "created": self.created,
            "peak_bandwidth_gbs": self.peak_bandwidth_gbs,
            "timing": self.timing,
            "rows": [r.to_dict() for r in self.rows],
        }

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict, source: str = "latency table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("version") != TABLE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            if version is None and isinstance(data, dict) and isinstance(data.get("table"), dict) and "speedups" in data:
                raise AutoqError(f"{source} is a benchmarks/kernels_llama.py results file, not a latency table: it holds one under its "
                                 "'table' key; write that to a file of its own and pass it (a table measured for the default model "
                                 "ships as --device h200)")
            raise AutoqError(f"{source}: expected a latency table of version {TABLE_VERSION}, got version {version!r}")
        if not isinstance(data.get("device"), str) or not data["device"].strip() or not isinstance(data.get("rows"), list):
            raise AutoqError(f"{source}: a latency table needs a 'device' string (the GPU's name) and a 'rows' list")
        rows: list[LatencyRow] = []
        seen: dict[tuple, int] = {}
        for i, raw in enumerate(data["rows"]):
            missing = [f for f in _ROW_FIELDS if not isinstance(raw, dict) or f not in raw]
            if missing:
                raise AutoqError(f"{source}: row {i} lacks {', '.join(missing)}; each row needs {', '.join(_ROW_FIELDS)}")
            odd = [f"{f}={raw[f]!r}" for f in ("n", "k", "batch") if isinstance(raw[f], bool) or not isinstance(raw[f], int)]
            if odd:  # int() would truncate 384.7 and read true as 1
                raise AutoqError(f"{source}: row {i} has {', '.join(odd)}; n, k and batch are integers")
            if raw.get("activation", WEIGHT_ONLY) not in (WEIGHT_ONLY, INT8_TOKENS):
                raise AutoqError(f"{source}: row {i} has activation {raw['activation']!r}; a row's activation is {WEIGHT_ONLY} or {INT8_TOKENS}")
            try:
                row = LatencyRow(int(raw["n"]), int(raw["k"]), str(raw["format"]), str(raw["kernel"]), int(raw["batch"]),
                                 float(raw["median_us"]), float(raw["p20_us"]), float(raw["p80_us"]), float(raw["gbps"]),
                                 str(raw.get("activation", WEIGHT_ONLY)), tuple(str(t) for t in raw.get("tiles", ())),
                                 tuple((str(t), float(us)) for t, us in dict(raw.get("tile_timings_us", {})).items()))
                QuantSpec.from_name(row.format)  # read whole and as written: int4-g0128-asym is refused, not int4-g128-asym
            except (TypeError, ValueError, AutoqError) as exc:
                raise AutoqError(f"{source}: row {i} ({raw.get('format')} {raw.get('n')}x{raw.get('k')}) is malformed: {exc}; "
                                 "each row holds integers n, k, batch, a format name such as int4-g128-asym, and numbers in microseconds") from None
            if min(row.n, row.k, row.batch) < 1:
                raise AutoqError(f"{source}: row {i} has n={row.n}, k={row.k}, batch={row.batch}; each must be at least 1")
            if not all(math.isfinite(v) and v > 0 for v in (row.median_us, row.p20_us, row.p80_us)):
                raise AutoqError(f"{source}: row {i} ({row.format} {row.n}x{row.k}) has timings {row.p20_us}, {row.median_us}, {row.p80_us} us; "
                                 "they must be positive and finite")
            _check_row(row, i, source, seen)
            rows.append(row)
        peak = data.get("peak_bandwidth_gbs")
        try:
            peak = None if peak is None else float(peak)
        except (TypeError, ValueError):
            raise AutoqError(f"{source}: peak_bandwidth_gbs {peak!r} is not a number of GB/s") from None
        timing = data.get("timing", "flush")
        if not isinstance(timing, str) or timing not in TIMINGS:
            raise AutoqError(f"{source}: timing {timing!r} is unknown; a latency table's timing is one of {', '.join(TIMINGS)}")
        return cls(data["device"], tuple(rows), str(data.get("torch", "")), str(data.get("triton", "")), str(data.get("cuda", "")),
                   str(data.get("created", "")), peak, timing)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        try:
            data = parse_json(path.read_text(encoding="utf-8"), f"latency table {path}")
        except UnicodeDecodeError:
            raise AutoqError(f"latency table {path} is not UTF-8 text; 'autoq kernels bench' writes JSON") from None
        except FileNotFoundError:
            raise AutoqError(f"latency table {path} does not exist; write one with 'autoq kernels bench --out {path}'") from None
        return cls.from_dict(data, source=str(path))


def _check_row(row: LatencyRow, i: int, source: str, seen: dict[tuple, int]) -> None:
    """Refuse a row that contradicts the table: a second measurement of one kernel at one shape, format and batch (the
    smaller was taken, unsaid), W8A8 rows of a format no W8A8 kernel reads (they joined the int8 series and halved its
    time), or a median outside its own spread."""
    key = (*row.key, row.kernel, row.activation)
    if key in seen:
        raise AutoqError(f"{source}: rows {seen[key]} and {i} both measure kernel {row.kernel!r} on {row.format} {row.n}x{row.k} at "
                         f"batch {row.batch}; keep one ('autoq kernels bench --merge' replaces a row it measures again)")
    seen[key] = i
    if row.activation == INT8_TOKENS and not supports_w8a8(QuantSpec.from_name(row.format)):
        raise AutoqError(f"{source}: row {i} times the W8A8 kernel ({INT8_TOKENS} activations) on {row.format}, which it does not "
                         "read; W8A8 rows are of int8 weights per channel, symmetric (int8-ch-sym)")
    if not row.p20_us <= row.median_us <= row.p80_us:
        raise AutoqError(f"{source}: row {i} ({row.format} {row.n}x{row.k}) has median {row.median_us} us outside its 20th-80th "
                         f"percentiles {row.p20_us}-{row.p80_us} us; a row's timings are p20_us <= median_us <= p80_us")


def check_mergeable(old: LatencyTable, device: str, timing: str, source: str = "the existing table",
                    versions: dict[str, str] | None = None) -> None:
    """Refuse merging a measurement of ``device`` by ``timing`` into ``old`` (another device's or timing's rows would
    not compare), or by other ``versions`` (``torch``, ``triton``, ``cuda``) than ``old`` records: the merged table has one
    header, and the old rows were written out under the new run's versions (Triton 3.6's as 3.9's). ``autoq kernels bench
    --merge`` asks before it measures, so a refusal costs no GPU time."""
    for what, mine, theirs in (("device", device, old.device), ("timing", timing, old.timing)):
        if mine != theirs:
            raise AutoqError(f"--merge: {source} was measured with {what} {theirs!r}, not this run's {mine!r}; "
                             "choose another --out, or measure with the same " + what)
    for what, mine in (versions or {}).items():
        theirs = getattr(old, what)
        if theirs and mine and mine != theirs:
            raise AutoqError(f"--merge: {source} was measured with {what} {theirs}, and this run has {mine}: its rows would be "
                             f"labelled with this run's versions; measure every row again (leave out --merge, or another --out), "
                             f"or run with {what} {theirs}")
