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
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autoq.errors import AutoqError
from autoq.kernels.capability import interpreting
from autoq.kernels.gemv_steps import step_columns, step_constexprs, wordwise
from autoq.kernels.sass import sass_report

# How Triton specializes a launch with 16-byte aligned pointers and sizes and strides divisible by 16 (as
# at LLaMA shapes): those arguments get ``tt.divisibility = 16``; an integer argument equal to 1 becomes a constant.
ALIGNED_WQ = ("x_ptr", "w_ptr", "s_ptr", "z_ptr", "out_ptr", "N", "K", "stride_xm", "stride_wn", "stride_sn", "stride_om")


@dataclass(frozen=True)
class CompileCase:
    """One kernel specialisation: runtime argument types (``*fp16``, ``i32``, ...), constexpr values, and the
    arguments known to be multiples of 16 (``aligned``: what Triton sees at runtime for such shapes)."""

    name: str
    kernel: str  # attribute of triton_wq / triton_w8a8
    types: dict
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3
    aligned: tuple[str, ...] = field(default=())


def _wq_types(kind: str, act: str, out: str) -> dict:
    ptrs = {"x_ptr": f"*{act}", "w_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "out_ptr": f"*{out}"}
    if kind == "gemv":
        ints = ["one_f32", "N", "K", "stride_xm", "stride_wn", "stride_sn", "stride_sg", "stride_os", "stride_om"]
    else:
        ints = ["M", "N", "K", "M_BUCKET", "stride_xm", "stride_wn", "stride_sn", "stride_sg", "stride_om"]
    return {**ptrs, **dict.fromkeys(ints, "i32")}


def _wq_case(name: str, kernel: str, kind: str, act: str, out: str, constexprs: dict, aligned: bool, warps: int, stages: int) -> CompileCase:
    """A weight-only case; ``aligned`` compiles it as a launch at 16-aligned shapes (group scales contiguous: stride 1)."""
    types = _wq_types(kind, act, out)
    if aligned:
        del types["stride_sg"]
        constexprs = {**constexprs, "stride_sg": 1}
    return CompileCase(name, kernel, types, constexprs, warps, stages, ALIGNED_WQ if aligned else ())


def _gemv_constexprs(bits: int, group: int, zeros: bool, block_n: int, block_k: int, split: int, even: bool, prefetch: bool) -> dict:
    """The GEMV's constexprs as its launcher sets them (the K step's from ``gemv_steps``)."""
    cpw = 32 // bits
    return dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros, WORDWISE=wordwise(cpw), SPLIT_K=split, EVEN_K=even,
                BLOCK_N=block_n, BLOCK_K=block_k, PREFETCH=prefetch, **step_constexprs(block_k, cpw, group))


def gemv_case(spec, act: str, block_n: int, block_k: int, warps: int, stages: int, prefetch: bool = True) -> CompileCase:
    """The batch-1 GEMV for ``spec`` (a :class:`autoq.quant.QuantSpec`) at 16-aligned shapes with whole K steps, no split."""
    constexprs = _gemv_constexprs(spec.bits, spec.group_size or 0, not spec.symmetric, block_n, block_k, 1, True, prefetch)
    name = f"wq-gemv {spec.name}-{act} {block_n}x{block_k} w{warps}{'' if prefetch else ' no-prefetch'}"
    return _wq_case(name, "wq_gemv_kernel", "gemv", act, act, constexprs, True, warps, stages)


def default_cases() -> list[CompileCase]:
    """Weight-only GEMV/GEMM for 2/4/8 bits and 3 bits (groups read group by group in the GEMV, codes gathered in the GEMM),
    every scale layout, W8A8.

    The even-K cases are compiled as at 16-aligned shapes (the LLaMA-7B ones), the others as at odd shapes."""
    cases = []
    for bits, group, zeros, act in [(4, 128, True, "fp16"), (4, 32, False, "bf16"), (4, 0, True, "fp16"), (3, 64, True, "fp16"),
                                    (2, 0, True, "fp16"), (8, 0, False, "bf16")]:
        cpw = 32 // bits
        base = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros, WORDWISE=wordwise(cpw))
        tag = f"int{bits}-{'g' + str(group) if group else 'ch'}-{'asym' if zeros else 'sym'}-{act}"
        for split, out, even in [(1, act, True), (4, "fp32", False)]:
            cases.append(_wq_case(f"wq-gemv {tag} split{split}{' even-K' if even else ''}", "wq_gemv_kernel", "gemv", act, out,
                                  _gemv_constexprs(bits, group, zeros, 16, 1024, split, even, True), even, 4, 2))
        even = bits != 3
        cases.append(_wq_case(f"wq-gemm {tag}{' even-K' if even else ''}", "wq_gemm_kernel", "gemm", act, act,
                              {**base, "DOT_FP32": False, "EVEN_K": even, "BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, even, 4, 3))
    # a gathered format in a 16-row tile (batch <= 16), the tile added because the larger ones spill
    cases.append(_wq_case("wq-gemm int3-g64-asym-fp16 even-K 16-row", "wq_gemm_kernel", "gemm", "fp16", "fp16",
                          dict(BITS=3, CPW=10, GROUP=64, HAS_ZEROS=True, WORDWISE=False, DOT_FP32=False, EVEN_K=True,
                               BLOCK_M=16, BLOCK_N=128, BLOCK_K=32, GROUP_M=8), True, 4, 4))
    int8_types = {"a_ptr": "*i8", "sa_ptr": "*fp32", "w_ptr": "*i8", "sw_ptr": "*fp16", "out_ptr": "*fp16",
                  **dict.fromkeys(["M", "N", "K", "M_BUCKET", "stride_am", "stride_wn", "stride_sw", "stride_om"], "i32")}
    int8_aligned = ("a_ptr", "sa_ptr", "w_ptr", "sw_ptr", "out_ptr", "N", "K", "stride_am", "stride_wn", "stride_om")
    cases.append(CompileCase("w8a8 int8-gemm", "int8_gemm_kernel", int8_types, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, 4, 3,
                             int8_aligned))
    for act in ("fp16", "bf16"):
        quant_types = {"x_ptr": f"*{act}", "q_ptr": "*i8", "s_ptr": "*fp32", "K": "i32", "stride_xm": "i32", "stride_qm": "i32"}
        cases.append(CompileCase(f"w8a8 quantize-rows {act}", "quantize_rows_kernel", quant_types, {"BLOCK_K": 1024}))
    return cases


def weights_per_thread(case: CompileCase) -> int:
    """Weights one thread dequantizes per main-loop iteration (0 for kernels without packed weights): the
    loop's instruction count over this is the instructions a weight that decide a memory-bound kernel's speed."""
    c = case.constexprs
    if "CPW" not in c:
        return 0
    cols = c["BLOCK_K"] if "BLOCK_M" in c else step_columns(c["BLOCK_K"], c["CPW"], c["GROUP"])
    return c["BLOCK_N"] * cols // (32 * case.num_warps)


def compile_case(case: CompileCase, arch: int):
    """Compile ``case`` for ``sm_<arch>`` and return Triton's compiled kernel; raises whatever the compiler raises."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from autoq.kernels import triton_w8a8, triton_wq

    if interpreting():
        raise AutoqError("the compile check needs TRITON_INTERPRET unset or 0 (interpreted kernels are not compiled)")
    module = triton_wq if hasattr(triton_wq, case.kernel) else triton_w8a8
    fn = getattr(module, case.kernel)
    params = list(inspect.signature(fn.fn).parameters)
    signature = {**case.types, **dict.fromkeys(case.constexprs, "constexpr")}
    signature = {name: signature[name] for name in params}
    attrs = {(params.index(name),): [["tt.divisibility", 16]] for name in case.aligned}
    src = ASTSource(fn, signature, case.constexprs, attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90,80", help="CUDA compute capabilities, e.g. 90,80")
    parser.add_argument("--sass", action="store_true", help="also report registers, spills, shared memory, load widths, MMA kind")
    parser.add_argument("--json", default=None, help="with --sass: also write the reports to this JSON file, by arch and case")
    args = parser.parse_args(argv)
    failures = 0
    reports: dict[str, dict] = {}
    for arch in (int(a) for a in args.arch.split(",")):
        for case in default_cases():
            try:
                compiled = compile_case(case, arch)
                line = ""
                if args.sass:
                    report = sass_report(compiled)
                    per_thread = weights_per_thread(case)
                    per_weight = round(report.loop_instructions / per_thread, 2) if per_thread else None
                    reports.setdefault(f"sm_{arch}", {})[case.name] = {**dataclasses.asdict(report), "aligned": bool(case.aligned),
                                                                       "weights_per_thread": per_thread, "loop_per_weight": per_weight}
                    line = f"  {report.summary()}" + (f"  loop/weight {per_weight:5.2f}" if per_weight else "")
                print(f"ok    sm_{arch}  {case.name}{line}")
            except AutoqError:
                raise
            except Exception as exc:  # report every failing specialisation, not just the first
                failures += 1
                print(f"FAIL  sm_{arch}  {case.name}: {type(exc).__name__}: {exc}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
