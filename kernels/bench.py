"""Measure kernels into a :class:`~autoq.kernels.table.LatencyTable` on the current GPU.

For every layer shape ``(N, K)``, batch ``M`` and weight format, each kernel that reads
the format (by default the dispatching weight-only kernel ``wq`` and, for symmetric
int8, ``w8a8``) and torch's fp16 ``F.linear`` as the baseline are timed by CUDA graph
replay (:mod:`autoq.kernels.timing`: GPU time without the host's launch cost, weights read
from HBM), by one of two methods (``BenchConfig.timing``): ``flush`` clears the L2 before
each call; ``rotate`` runs calls back to back, each on its own copy of the weights, as layers
run in a forward pass. Inputs are random; latency does not depend on the values.
Needs a CUDA GPU: without one, :func:`measure` raises an ``AutoqError``.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from autoq.errors import AutoqError
from autoq.kernels.autotune_log import TileChoice, recording
from autoq.kernels.capability import require_gpu
from autoq.kernels.formats import PACKED_BITS
from autoq.kernels.precompile import PrecompileCase, Target, cache_entries, precompile
from autoq.kernels.table import INT8_TOKENS, TIMINGS, WEIGHT_ONLY, LatencyRow, LatencyTable
from autoq.kernels.timing import copies_needed, time_calls_us, warm_up
from autoq.quant import QuantizedTensor, QuantSpec

DEFAULT_BATCHES = (1, 16, 128)
DEFAULT_KERNELS = ("wq", "w8a8")
BASELINE_KERNEL = "torch-fp16"
LLAMA_7B_SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))  # (N, K): q/k/v/o, gate/up, down
_SHAPE_RE = re.compile(r"^\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*$")


def default_formats() -> tuple[QuantSpec, ...]:
    """Every packed bit-width per channel and in groups of 32/64/128 (asymmetric), plus the common symmetric ones."""
    asym = [QuantSpec(b, "channel") for b in PACKED_BITS] + [QuantSpec(b, "group", g) for b in PACKED_BITS for g in (32, 64, 128)]
    sym = [QuantSpec(4, "group", 128, True), QuantSpec(4, "channel", None, True), QuantSpec(8, "channel", None, True)]
    return tuple(asym + sym)


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"4096x4096,11008x4096"`` -> ``((4096, 4096), (11008, 4096))`` (each ``N x K`` = out x in features)."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SHAPE_RE.match(part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise AutoqError(f"cannot parse layer shape {part!r}; expected NxK (out x in features), e.g. '4096x11008'")
        shapes.append((int(match[1]), int(match[2])))
    if not shapes:
        raise AutoqError("no layer shapes given; expected e.g. '4096x4096,11008x4096'")
    return tuple(shapes)


def parse_formats(text: str) -> tuple[QuantSpec, ...]:
    """Comma-separated ``QuantSpec`` names (``int4-g128-asym,int8-ch-sym``); ``fp16`` is always the baseline."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    specs = tuple(QuantSpec.from_name(name) for name in names if name != "fp16")
    if not specs:
        given = "only fp16, which every table measures as its baseline anyway" if names else "no formats"
        raise AutoqError(f"--formats names {given}; name the integer formats to time beside it, e.g. 'int4-g128-asym,int8-ch-sym'")
    return specs


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise AutoqError(f"cannot parse batch sizes {text!r}; expected e.g. '1,16,128'") from None
    if not batches or min(batches) < 1:
        raise AutoqError(f"batch sizes must be positive integers, e.g. '1,16,128'; got {text!r}")
    return batches


def model_shapes(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """The distinct ``(out, in)`` shapes of the model's quantizable layers, in first-seen order."""
    from autoq.model.layers import find_layers

    seen: dict[tuple[int, int], None] = {}
    for info in find_layers(model):
        seen.setdefault((info.out_features, info.in_features), None)
    return tuple(seen)


def moved_bytes(n: int, k: int, batch: int, weight_bytes: int, quantizes_activations: bool = False) -> int:
    """Bytes a linear layer must move at least: weights (+ scales), fp16 activations in, fp16 outputs out."""
    extra = batch * (k + 4) * 2 if quantizes_activations else 0  # int8 copy written and read back, fp32 scales
    return weight_bytes + batch * k * 2 + batch * n * 2 + extra


def peak_bandwidth_gbs(device_name: str) -> float | None:
    """The device's memory bandwidth in GB/s: from the driver's clock and bus width, else a known preset."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate
    from autoq.latency.devices import preset_for

    preset = preset_for(device_name)
    return preset.bandwidth_gbs if preset else None


@dataclass(frozen=True)
class BenchConfig:
    """What to measure: layer shapes ``(N, K)``, batch sizes, weight formats, kernels, timing time per case (ms)."""

    shapes: tuple[tuple[int, int], ...]
    batches: tuple[int, ...] = DEFAULT_BATCHES
    formats: tuple[QuantSpec, ...] = ()
    kernels: tuple[str, ...] = DEFAULT_KERNELS
    rep_ms: int = 100
    seed: int = 0
    max_seconds: float | None = None  # start no new case after this long (precompiling included); the table holds the cases measured
    compile_workers: int | None = None  # processes that precompile the kernels first (None: one per core; 0: compile at launch)
    timing: str = "flush"  # how each case is timed: one of table.TIMINGS

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise AutoqError(f"unknown timing {self.timing!r}; choose one of {', '.join(TIMINGS)} "
                             f"({'; '.join(f'{k}: {v}' for k, v in TIMINGS.items())})")
        if isinstance(self.rep_ms, bool) or not isinstance(self.rep_ms, int) or self.rep_ms <= 0:
            raise AutoqError(f"rep_ms (--rep-ms, timing time per case in ms) must be a positive whole number, got {self.rep_ms!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise AutoqError(f"max_seconds (--max-seconds) must be a positive number of seconds (None, or the option left out: no "
                             f"limit), got {self.max_seconds!r}")
        if self.compile_workers is not None and self.compile_workers < 0:
            raise AutoqError(f"compile_workers (--compile-workers) must be 0 (compile at launch) or a positive number of processes "
                             f"(None, or the option left out: one per core); got {self.compile_workers}")
        self._check_no_repeats()
        self._check_kernels_run_formats()

    def _check_no_repeats(self) -> None:
        """Refuse a shape, batch, format or kernel named twice: each would be measured twice (minutes of GPU time) into
        rows a latency table refuses to hold, so the table written could not be used with ``--device``."""
        given = {"shapes (--shapes)": [f"{n}x{k}" for n, k in self.shapes], "batches (--batches)": [str(b) for b in self.batches],
                 "formats (--formats)": [spec.name for spec in self.formats], "kernels (--kernels)": list(self.kernels)}
        for what, names in given.items():
            twice = [name for name in dict.fromkeys(names) if names.count(name) > 1]
            if twice:
                raise AutoqError(f"{what} name {', '.join(twice)} more than once; each is measured once, so give each once "
                                 f"(got {', '.join(names)})")

    def _check_kernels_run_formats(self) -> None:
        """Refuse formats asked for that none of the kernels runs, or kernels that run none of the default formats: such a
        run measured only the fp16 baseline, after minutes of GPU set-up, and wrote a table without a format."""
        from autoq.kernels.registry import get_kernel, kernels_for

        if not self.kernels:
            raise AutoqError("no kernel to time; name at least one, such as " + ", ".join(DEFAULT_KERNELS))
        infos = [get_kernel(name) for name in self.kernels]
        formats = self.formats or default_formats()
        idle = [spec.name for spec in formats if not any(info.supports(spec) for info in infos)]
        if self.formats and idle or len(idle) == len(formats):
            which = "; ".join(f"{name}: {', '.join(k.name for k in kernels_for(parse_formats(name)[0])) or 'none'}" for name in idle[:4])
            raise AutoqError(f"kernel(s) {', '.join(self.kernels)} run none of the format(s) {', '.join(idle)}; the kernels that run "
                             f"each ({which}) go in --kernels")

    def cases(self) -> list[tuple[tuple[int, int], QuantSpec | None, str]]:
        """(shape, format, kernel) to measure at every batch; format ``None`` is the fp16 baseline.

        The baselines come first, then format by format over all shapes, so a run cut short by
        ``max_seconds`` still has the first formats at every shape, each with its baseline."""
        from autoq.kernels.registry import get_kernel

        infos = [get_kernel(name) for name in self.kernels]
        formats = self.formats or default_formats()
        out: list[tuple[tuple[int, int], QuantSpec | None, str]] = [(shape, None, BASELINE_KERNEL) for shape in self.shapes]
        out += [(shape, spec, info.name) for spec in formats for info in infos if info.supports(spec) for shape in self.shapes]
        return out

    def precompile_cases(self) -> list[PrecompileCase]:
        """What :meth:`cases` will launch, as precompile work: one piece per kernel, format and batch, over all shapes.

        Shapes share a piece because they mostly share kernels (one compile serves every shape that specializes alike)."""
        pairs = dict.fromkeys((kernel, spec.name) for _, spec, kernel in self.cases() if spec is not None)
        return [PrecompileCase(kernel, spec, self.shapes, (m,)) for kernel, spec in pairs for m in self.batches]


def random_quantized(n: int, k: int, spec: QuantSpec, generator: torch.Generator) -> QuantizedTensor:
    """A weight of random codes and plausible scales (timing does not depend on the values)."""
    g = spec.n_param_groups(n, k)
    codes = torch.randint(0, spec.qmax + 1, (n, k), generator=generator, dtype=torch.int64).to(torch.uint8)
    scale = (torch.rand(g, generator=generator) * 0.01 + 1e-3).half()
    zero = torch.full((g,), float(1 << (spec.bits - 1))).half()
    if not spec.symmetric:
        zero = torch.randint(0, spec.qmax + 1, (g,), generator=generator).half()
    return QuantizedTensor(spec, codes, scale, zero)


def prepare_case(n: int, k: int, spec: QuantSpec | None, kernel: str, gen: torch.Generator, device: torch.device, timing: str):
    """``(weights, run(x, w) -> y, weight bytes, quantizes activations)`` for one case; ``spec=None`` is the fp16 baseline.

    ``weights`` are copies of one random weight on ``device``, each in its own memory: one for ``flush``,
    :func:`~autoq.kernels.timing.copies_for` for ``rotate`` (:func:`~autoq.kernels.timing.copies_needed`)."""
    if spec is None:
        weight = (torch.randn(n, k, generator=gen) * 0.02).half()
        nbytes = weight.numel() * 2
        return [weight.to(device, copy=True) for _ in range(copies_needed(timing, nbytes))], torch.nn.functional.linear, nbytes, False
    from autoq.kernels.registry import get_kernel

    info = get_kernel(kernel)
    packed = info.prepare(random_quantized(n, k, spec, gen))
    copies = [packed.to(device, copy=True) for _ in range(copies_needed(timing, packed.nbytes))]
    return copies, (lambda x, w: info.run(x, w, backend="triton")), packed.nbytes, info.quantizes_activations


def _time_case(weights, run, x: torch.Tensor, rep_ms: int, timing: str) -> tuple[tuple[float, float, float], list[TileChoice]]:
    """``(median, p20, p80)`` in us, and the tiles the autotuners chose (on the first call, outside the timing)."""
    with recording() as tiles:
        run(x, weights[0])  # compile and autotune outside the timing (every copy has the same shapes: one choice serves all)
    return time_calls_us([lambda w=w: run(x, w) for w in weights], timing, rep_ms, x.device), tiles


def measure(config: BenchConfig, progress: bool = True) -> LatencyTable:
    """Time every case of ``config`` at every batch on the current GPU; one row per (shape, format, kernel, batch).

    The current GPU is ``torch.cuda.current_device()``: choose another with ``CUDA_VISIBLE_DEVICES``.

    The kernels are first compiled in parallel (``config.compile_workers``), so that the timing loop
    only loads them; it reports how many it still had to compile (0 when precompiling caught all)."""
    require_gpu("'autoq kernels bench'")
    import triton

    from autoq.progress import progress_bar

    device = torch.device("cuda", torch.cuda.current_device())
    gen = torch.Generator().manual_seed(config.seed)
    name = torch.cuda.get_device_name(device)
    rows: list[LatencyRow] = []
    cases = config.cases()
    start = time.perf_counter()
    if config.compile_workers != 0:
        report = precompile(config.precompile_cases(), Target.current(), config.compile_workers, progress)
        print(f"autoq: kernels bench: {report.summary()}", file=sys.stderr, flush=True)
    compiled = cache_entries()
    warm_up(device)
    bar = progress_bar(total=len(cases) * len(config.batches), desc="kernels bench", disable=not progress, unit="case")  # seldom in a log
    for done, ((n, k), spec, kernel) in enumerate(cases):
        if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
            print(f"autoq: kernels bench: stopped after {config.max_seconds:.0f} s (max_seconds) with {len(cases) - done} of "
                  f"{len(cases)} cases not measured; the table holds the others", file=sys.stderr, flush=True)
            break
        weights, run, nbytes, quant_act = prepare_case(n, k, spec, kernel, gen, device, config.timing)
        for m in config.batches:
            x = torch.randn(m, k, generator=gen).half().to(device)
            (median, p20, p80), tiles = _time_case(weights, run, x, config.rep_ms, config.timing)
            gbps = moved_bytes(n, k, m, nbytes, quant_act) / (median * 1e-6) / 1e9
            rows.append(LatencyRow(n, k, spec.name if spec else "fp16", kernel, m, median, p20, p80, gbps,
                                   INT8_TOKENS if quant_act else WEIGHT_ONLY, tuple(f"{c.kernel} {c.tile}" for c in tiles),
                                   tuple((f"{c.kernel} {t}", us) for c in tiles for t, us in c.timings_us)))
            bar.update(1)
    bar.close()
    print(f"autoq: kernels bench: the timing loop compiled {cache_entries() - compiled} kernels", file=sys.stderr, flush=True)
    return LatencyTable(
        device=name, rows=tuple(rows), torch=torch.__version__, triton=triton.__version__, cuda=str(torch.version.cuda),
        created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), peak_bandwidth_gbs=peak_bandwidth_gbs(name),
        timing=config.timing,
    )


def speedups(table: LatencyTable, activation: str | None = None) -> list[dict]:
    """Per row: speedup over the fp16 baseline at the same shape and batch, and bandwidth as a share of peak."""
    out = []
    for row in table.rows:
        if row.format == "fp16" or (activation is not None and row.activation != activation):
            continue
        base = table.lookup(row.n, row.k, "fp16", row.batch)
        out.append({
            "n": row.n, "k": row.k, "format": row.format, "kernel": row.kernel, "batch": row.batch, "median_us": row.median_us,
            "fp16_us": base.median_us if base else None, "speedup": base.median_us / row.median_us if base else None,
            "gbps": row.gbps, "bandwidth_share": row.gbps / table.peak_bandwidth_gbs if table.peak_bandwidth_gbs else None,
            "tile": "; ".join(row.tiles) or None,
        })
    return out


def format_table(rows: Iterable[dict], columns: Sequence[str] = ("n", "k", "format", "kernel", "batch", "median_us", "speedup", "gbps")) -> str:
    """A plain-text table of ``rows`` (dicts) for the terminal."""
    def cell(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
