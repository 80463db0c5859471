"""Compile the Triton kernels for a CUDA architecture without a GPU (front end, LLVM and ptxas).

The interpreter runs kernels as numpy code and so misses what only the compiler sees
(types, layouts, shared memory). This check closes part of that gap on machines without a
GPU: every kernel is compiled to a cubin for, by default, Hopper (sm_90) and Ampere (sm_80)
in representative configurations. It cannot say anything about results.

``--sass`` also reads each cubin's machine code (with the ``cuobjdump`` Triton ships): the
registers and stack (spills) a thread uses, shared memory, the width of every global load
and which matrix instruction the GEMMs use. That is what decides whether a memory-bound
kernel can approach the bandwidth, and it costs no GPU time to look at.

    TRITON_INTERPRET=0 python -m autoq.kernels.compile_check [--arch 90,80] [--sass] [--json FILE]

Run it with ``TRITON_INTERPRET`` unset or 0: under the interpreter kernels are not compilable objects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from autoq.errors import AutoqError
from autoq.kernels.autotune_log import gemv_switches
from autoq.kernels.gemv_steps import gemm_step_columns, step_columns
from autoq.kernels.ops import GEMM_MIN_BLOCK_M
from autoq.kernels.precompile import Target, compiling_for
from autoq.kernels.sass import sass_report

LLAMA = (4096, 4096)  # a 16-aligned layer (N, K): pointers, sizes and strides multiples of 16, whole K steps
ODD = (1001, 4100)  # a layer whose rows, packed words and K steps are not
_KERNELS = {"gemv": "wq_gemv_kernel", "gemm": "wq_gemm_kernel", "int8-gemm": "int8_gemm_kernel", "quantize-rows": "quantize_rows_kernel",
            "quantize-rows-static": "quantize_rows_kernel"}
_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class CompileCase:
    """One launch to compile: the launcher (``gemv``, ``gemm``, ``int8-gemm``, ``quantize-rows``, ``quantize-rows-static``), the weight format
    (a ``QuantSpec`` name), activations (``fp16``/``bf16``), layer shape ``(N, K)``, batch, K splits, and one tile.

    It compiles through the launcher itself (``compile_only``) with ``meta`` tensors of that shape, so Triton
    specializes it exactly as a launch at that shape: alignment, strides equal to 1, the K-step rules."""

    name: str
    launcher: str
    blocks: tuple[tuple[str, int], ...]
    num_warps: int = 4
    num_stages: int = 3
    spec: str | None = None
    act: str = "fp16"
    shape: tuple[int, int] = LLAMA
    batch: int = 1
    split_k: int = 1

    @classmethod
    def of_tile(cls, name: str, launcher: str, tile, **fields) -> CompileCase:
        """A case for one ``triton.Config`` (one of the autotuners' tiles, say)."""
        return cls(name, launcher, tuple(tile.kwargs.items()), tile.num_warps, tile.num_stages, **fields)

    @property
    def kernel(self) -> str:
        """The Triton function this launch runs."""
        return _KERNELS[self.launcher]

    @property
    def aligned(self) -> bool:
        """Whether the layer's N and K are multiples of 16 (a LLaMA-like shape)."""
        return all(d % 16 == 0 for d in self.shape)

    def tile(self):
        """The tile as the ``triton.Config`` the launchers take."""
        import triton

        return triton.Config(dict(self.blocks), num_warps=self.num_warps, num_stages=self.num_stages)


def _tile(**blocks: int) -> tuple[tuple[str, int], ...]:
    return tuple(blocks.items())


def gemv_case(spec, act: str, tile) -> CompileCase:
    """The batch-1 GEMV for ``spec`` (a :class:`autoq.quant.QuantSpec`) in ``tile`` (a ``triton.Config``) at 4096 x 4096."""
    b = tile.kwargs
    name = f"wq-gemv {spec.name}-{act} {b['BLOCK_N']}x{b['BLOCK_K']} w{tile.num_warps}{gemv_switches(b)}"
    return CompileCase.of_tile(name, "gemv", tile, spec=spec.name, act=act)


def gemm_case(spec, act: str, tile) -> CompileCase:
    """The tiled GEMM for ``spec`` in ``tile`` at 4096 x 4096, at batch 16 for a 16-row tile (what a batch of 16
    autotunes among) and 128 for the others."""
    b = tile.kwargs
    batch = GEMM_MIN_BLOCK_M if b["BLOCK_M"] == GEMM_MIN_BLOCK_M else 128
    name = f"wq-gemm {spec.name}-{act} {b['BLOCK_M']}x{b['BLOCK_N']}x{b['BLOCK_K']} w{tile.num_warps} batch{batch}"
    return CompileCase.of_tile(name, "gemm", tile, spec=spec.name, act=act, batch=batch)


def default_cases() -> list[CompileCase]:
    """Weight-only GEMV/GEMM for 2/4/8 bits and 3 bits (groups read group by group in the GEMV, slot groups of 3 words
    in the GEMM), every scale layout, W8A8: each at a LLaMA shape (``even-K`` in the name) and some at an odd one."""
    from autoq.quant import QuantSpec

    gemv_tile = _tile(BLOCK_N=16, BLOCK_K=1024, PREFETCH=True, ROWS_IN_THREAD=False)
    cases = []
    for bits, group, zeros, act in [(4, 128, True, "fp16"), (4, 32, False, "bf16"), (4, 0, True, "fp16"), (3, 64, True, "fp16"),
                                    (2, 0, True, "fp16"), (8, 0, False, "bf16")]:
        spec = QuantSpec(bits, "group" if group else "channel", group or None, not zeros)
        tag = f"{spec.name}-{act}"
        cases.append(CompileCase(f"wq-gemv {tag} split1 even-K", "gemv", gemv_tile, 4, 2, spec.name, act, LLAMA))
        cases.append(CompileCase(f"wq-gemv {tag} split4", "gemv", gemv_tile, 4, 2, spec.name, act, ODD, split_k=4))
        even = bits != 3
        cases.append(CompileCase(f"wq-gemm {tag}{' even-K' if even else ''}", "gemm", _tile(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8),
                                 4, 3, spec.name, act, LLAMA if even else ODD, batch=128 if even else 100))
    # the rows of the tile in each thread (ROWS_IN_THREAD): one word of 16 rows, its activations in the same thread
    rows_tile = _tile(BLOCK_N=16, BLOCK_K=1024, PREFETCH=True, ROWS_IN_THREAD=True)
    for spec, act in (("int4-ch-asym", "fp16"), ("int8-ch-sym", "bf16"), ("int4-g128-asym", "fp16")):
        cases.append(CompileCase(f"wq-gemv {spec}-{act} rows-in-thread even-K", "gemv", rows_tile, 4, 2, spec, act, LLAMA))
    # packed halves (HALF2) for W4 with fp16 activations: the fastest tile one step ahead on the H200, and one two ahead
    half2_tiles = ((_tile(BLOCK_N=8, BLOCK_K=2048, PREFETCH=1, ROWS_IN_THREAD=True, HALF2=True), 8, "int4-ch-asym", "8x2048"),
                   (_tile(BLOCK_N=8, BLOCK_K=1024, PREFETCH=2, ROWS_IN_THREAD=True, HALF2=True), 4, "int4-g128-asym", "8x1024 ahead2"),
                   (_tile(BLOCK_N=8, BLOCK_K=2048, PREFETCH=1, ROWS_IN_THREAD=True, HALF2=True, PERSIST=2), 8, "int4-ch-asym",
                    "8x2048 persist2"),
                   (_tile(BLOCK_N=8, BLOCK_K=2048, PREFETCH=1, ROWS_IN_THREAD=True, HALF2=True, PERSIST=2), 8, "int4-g128-asym",
                    "8x2048 persist2"))
    for blocks, warps, spec, tag in half2_tiles:
        cases.append(CompileCase(f"wq-gemv {spec}-fp16 half2 {tag} even-K", "gemv", blocks, warps, 2, spec, "fp16", LLAMA))
    # 3-bit slot groups in the 16-row tile a batch of 16 runs best (sm_90 SASS), per channel and straddling scale groups;
    # and split over K, as a batch of 16 runs on a GPU (ops.gemm_split_k_for)
    small_batch = _tile(BLOCK_M=16, BLOCK_N=128, BLOCK_K=64, GROUP_M=8)
    for spec in ("int3-ch-asym", "int3-g64-asym"):
        cases.append(CompileCase(f"wq-gemm {spec}-fp16 16-row", "gemm", small_batch, 4, 4, spec, "fp16", LLAMA, batch=16))
    cases.append(CompileCase("wq-gemm int4-g128-asym-fp16 16-row split8 even-K", "gemm", small_batch, 4, 4, "int4-g128-asym", "fp16", LLAMA,
                             batch=16, split_k=8))
    cases.append(CompileCase("wq-gemm int3-g32-asym-fp16 16-row split4", "gemm", small_batch, 4, 4, "int3-g32-asym", "fp16", ODD,
                             batch=13, split_k=4))
    cases.append(CompileCase("w8a8 int8-gemm", "int8-gemm", _tile(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8), 4, 3,
                             "int8-ch-sym", "fp16", LLAMA, batch=128))
    for act in ("fp16", "bf16"):
        cases.append(CompileCase(f"w8a8 quantize-rows {act}", "quantize-rows", _tile(BLOCK_K=1024), act=act, batch=128))
    cases.append(CompileCase("w8a8 quantize-rows static fp16", "quantize-rows-static", _tile(BLOCK_K=1024), act="fp16", batch=128))
    return cases


def weights_per_thread(case: CompileCase) -> int:
    """Weights one thread dequantizes per main-loop iteration (0 for kernels without packed weights): the
    loop's instruction count over this is the instructions a weight that decide a memory-bound kernel's speed.
    Columns of K, not slots: a 3/5/6-bit GEMM's 2 spare slots of 32 count as the overhead they are."""
    if case.launcher not in ("gemv", "gemm"):
        return 0
    from autoq.kernels.formats import codes_per_word
    from autoq.quant import QuantSpec

    spec, b = QuantSpec.from_name(case.spec), dict(case.blocks)
    cpw = codes_per_word(spec.bits)
    cols = gemm_step_columns(b["BLOCK_K"], cpw) if case.launcher == "gemm" else step_columns(b["BLOCK_K"], cpw, spec.group_size or 0)
    return b["BLOCK_N"] * cols // (32 * case.num_warps)


def _launch(case: CompileCase) -> list:
    """Compile ``case`` through its launcher with ``meta`` tensors (inside :func:`compiling_for`)."""
    import torch

    from autoq.kernels import triton_w8a8, triton_wq_gemm, triton_wq_gemv
    from autoq.kernels.formats import Int8Weight, PackedWeight
    from autoq.quant import QuantSpec

    (n, k), m, dtype = case.shape, case.batch, getattr(torch, _DTYPES[case.act])

    def empty(*shape, dtype=dtype):
        return torch.empty(*shape, dtype=dtype, device="meta")

    if case.launcher in ("quantize-rows", "quantize-rows-static"):
        static = 0.02 if case.launcher == "quantize-rows-static" else None  # a calibrated range's scale: one pass
        return triton_w8a8.launch_quantize_rows(empty(m, k), empty(m, k, dtype=torch.int8), empty(m, dtype=torch.float32), True, case.tile(),
                                                static_scale=static)
    spec = QuantSpec.from_name(case.spec)
    if case.launcher == "int8-gemm":
        w = Int8Weight.empty(spec, case.shape)
        return triton_w8a8.launch_int8_gemm(empty(m, k, dtype=torch.int8), empty(m, dtype=torch.float32), w.qweight, w.scales,
                                            empty(m, n), True, case.tile())
    w = PackedWeight.empty(spec, case.shape)
    if case.launcher == "gemm":
        return triton_wq_gemm.gemm(empty(m, k), w, case.split_k, True, case.tile())[1]
    # launched as ops.wq_linear launches it: a programmatic dependent launch only with AUTOQ_GEMV_PDL=1 on sm_90 and later
    return triton_wq_gemv.gemv(empty(m, k), w, case.split_k, True, case.tile(), pdl=triton_wq_gemv.pdl_by_default(None, True))[1]


def compile_case(case: CompileCase, arch: int):
    """Compile ``case`` for ``sm_<arch>`` and return Triton's compiled kernel; raises whatever the compiler raises."""
    with compiling_for(Target("cuda", arch, 32)):
        (kernel,) = _launch(case)
    return kernel


def loop_per_weight(report, case: CompileCase) -> float | None:
    """The main loop's instructions per weight a thread dequantizes in it (``None`` for kernels without packed weights)."""
    per_thread = weights_per_thread(case)
    return round(report.loop_instructions / per_thread, 2) if per_thread else None


def tile_report(case: CompileCase, arch: int) -> dict:
    """What the SASS benchmarks tabulate for one case: registers, stack, the kernel's and the main loop's length,
    instructions a weight and barriers."""
    report = sass_report(compile_case(case, arch))
    return {"registers": report.registers, "stack_bytes": report.stack_bytes, "instructions": report.instructions,
            "loop_instructions": report.loop_instructions,
            "weights_per_thread": weights_per_thread(case), "loop_per_weight": loop_per_weight(report, case),
            "loop_barriers": report.loop_barriers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90,80", help="CUDA compute capabilities, e.g. 90,80")
    parser.add_argument("--sass", action="store_true", help="also report registers, spills, shared memory, load widths, MMA kind")
    parser.add_argument("--json", default=None, help="with --sass: also write the reports to this JSON file, by arch and case")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",")]
    if not all(a.isdigit() for a in archs):  # int('abc') was a traceback
        parser.error(f"--arch {args.arch!r}: compute capabilities as numbers, e.g. 90,80 (sm_90 and sm_80)")
    if args.json:  # before minutes of compiling, not at the write after them
        json_path = Path(args.json)
        if json_path.is_dir() or not json_path.parent.is_dir():
            parser.error(f"--json {args.json}: a file in a folder that exists (a folder, or a file in a missing one, would be "
                         "found only after every kernel compiled)")
    failures = 0
    reports: dict[str, dict] = {}
    for arch in (int(a) for a in archs):
        for case in default_cases():
            try:
                compiled = compile_case(case, arch)
                line = ""
                if args.sass:
                    report = sass_report(compiled)
                    per_weight = loop_per_weight(report, case)
                    reports.setdefault(f"sm_{arch}", {})[case.name] = {**dataclasses.asdict(report), "aligned": case.aligned,
                                                                       "weights_per_thread": weights_per_thread(case),
                                                                       "loop_per_weight": per_weight}
                    line = f"  {report.summary()}" + (f"  loop/weight {per_weight:5.2f}" if per_weight else "")
                print(f"ok    sm_{arch}  {case.name}{line}")
            except AutoqError:
                raise
            except Exception as exc:  # report every failing specialisation, not just the first
                failures += 1
                print(f"FAIL  sm_{arch}  {case.name}: {type(exc).__name__}: {exc}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AutoqError as exc:  # (TRITON_INTERPRET set, say): one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
