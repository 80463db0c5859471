"""The Triton kernels compile to a Hopper cubin on a machine without a GPU (what the interpreter cannot check)."""

from __future__ import annotations

import os
import subprocess
import sys

from autoq.kernels.compile_check import default_cases


def test_every_kernel_compiles_for_sm90():
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, "-m", "autoq.kernels.compile_check", "--arch", "90"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kernels = {case.kernel for case in default_cases()}
    assert kernels == {"wq_gemv_kernel", "wq_gemm_kernel", "int8_gemm_kernel", "quantize_rows_kernel"}
    assert proc.stdout.count("ok    sm_90") == len(default_cases())
