"""Compile the Triton kernels for a CUDA architecture without a GPU (front end, LLVM and ptxas).

The interpreter runs kernels as numpy code and so misses what only the compiler sees
(types, layouts, shared memory). This check closes part of that gap on machines without a
GPU: every kernel is compiled to a cubin for, by default, Hopper (sm_90) and Ampere (sm_80)
in representative configurations. It cannot say anything about speed or about results.

    TRITON_INTERPRET=0 python -m autoq.kernels.compile_check [--arch 90,80]

Run it with ``TRITON_INTERPRET`` unset or 0: under the interpreter kernels are not compilable objects.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from autoq.errors import AutoqError
from autoq.kernels.capability import interpreting


@dataclass(frozen=True)
class CompileCase:
    """One kernel specialisation: runtime argument types (``*fp16``, ``i32``, ...) and constexpr values."""

    name: str
    kernel: str  # attribute of triton_wq / triton_w8a8
    types: dict
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3


def _wq_types(kind: str, act: str, out: str) -> dict:
    ptrs = {"x_ptr": f"*{act}", "w_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "out_ptr": f"*{out}"}
    if kind == "gemv":
        ints = ["N", "K", "stride_xm", "stride_wn", "stride_sn", "stride_sg", "stride_os", "stride_om"]
    else:
        ints = ["M", "N", "K", "M_BUCKET", "stride_xm", "stride_wn", "stride_sn", "stride_sg", "stride_om"]
    return {**ptrs, **dict.fromkeys(ints, "i32")}


def default_cases() -> list[CompileCase]:
    """Weight-only GEMV/GEMM for word-wise (2/4/8-bit) and gathered (3-bit) unpacking, every scale layout, W8A8."""
    cases = []
    for bits, group, zeros, act in [(4, 128, True, "fp16"), (4, 32, False, "bf16"), (3, 64, True, "fp16"), (2, 0, True, "fp16"), (8, 0, False, "bf16")]:
        cpw = 32 // bits
        wordwise = cpw & (cpw - 1) == 0
        base = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros, WORDWISE=wordwise)
        tag = f"int{bits}-{'g' + str(group) if group else 'ch'}-{'asym' if zeros else 'sym'}-{act}"
        for split, out in [(1, act), (4, "fp32")]:
            cases.append(CompileCase(f"wq-gemv {tag} split{split}", "wq_gemv_kernel", _wq_types("gemv", act, out),
                                     {**base, "SPLIT_K": split, "BLOCK_N": 16, "BLOCK_K": 256}))
        cases.append(CompileCase(f"wq-gemm {tag}", "wq_gemm_kernel", _wq_types("gemm", act, act),
                                 {**base, "DOT_FP32": False, "BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, 4, 3))
    int8_types = {"a_ptr": "*i8", "sa_ptr": "*fp32", "w_ptr": "*i8", "sw_ptr": "*fp16", "out_ptr": "*fp16",
                  **dict.fromkeys(["M", "N", "K", "M_BUCKET", "stride_am", "stride_wn", "stride_sw", "stride_om"], "i32")}
    cases.append(CompileCase("w8a8 int8-gemm", "int8_gemm_kernel", int8_types, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, 4, 3))
    for act in ("fp16", "bf16"):
        quant_types = {"x_ptr": f"*{act}", "q_ptr": "*i8", "s_ptr": "*fp32", "K": "i32", "stride_xm": "i32", "stride_qm": "i32"}
        cases.append(CompileCase(f"w8a8 quantize-rows {act}", "quantize_rows_kernel", quant_types, {"BLOCK_K": 1024}))
    return cases


def compile_case(case: CompileCase, arch: int) -> None:
    """Compile ``case`` for ``sm_<arch>``; raises whatever the compiler raises."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from autoq.kernels import triton_w8a8, triton_wq

    if interpreting():
        raise AutoqError("the compile check needs TRITON_INTERPRET unset or 0 (interpreted kernels are not compiled)")
    module = triton_wq if hasattr(triton_wq, case.kernel) else triton_w8a8
    fn = getattr(module, case.kernel)
    signature = {**case.types, **dict.fromkeys(case.constexprs, "constexpr")}
    src = ASTSource(fn, signature, case.constexprs)
    triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90,80", help="CUDA compute capabilities, e.g. 90,80")
    args = parser.parse_args(argv)
    failures = 0
    for arch in (int(a) for a in args.arch.split(",")):
        for case in default_cases():
            try:
                compile_case(case, arch)
                print(f"ok    sm_{arch}  {case.name}")
            except AutoqError:
                raise
            except Exception as exc:  # report every failing specialisation, not just the first
                failures += 1
                print(f"FAIL  sm_{arch}  {case.name}: {type(exc).__name__}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
