"""``gemv(..., pdl=True)``: the GEMV as a programmatic dependent launch (Hopper), for the floor benchmark to time.

Its program waits for the stream's previous kernel before its first load or store (the compiled PTX is checked
in ``test_compile_check.py``); on a Hopper GPU the test here reads activations a kernel wrote just before. Where it
cannot run, asking for it is refused with the reason.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, assert_close_to_reference, random_packed

from autoq.errors import AutoqError
from autoq.quant import QuantSpec

pytest.importorskip("triton")

from autoq.kernels import triton_wq_gemv  # noqa: E402  (after the skip: imports Triton)


def pdl_runs_here() -> bool:
    return triton_wq_gemv.pdl_problem(torch.device(DEVICE)) is None


@pytest.mark.skipif(pdl_runs_here(), reason="checks the refusal where PDL cannot run")
def test_pdl_is_refused_where_it_cannot_run():
    gen = torch.Generator().manual_seed(0)
    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 16, 256, gen)
    x = torch.randn(1, 256, generator=gen).half().to(DEVICE)
    with pytest.raises(AutoqError, match="programmatic dependent launch needs"):
        triton_wq_gemv.gemv(x, packed, 1, tile=triton_wq_gemv.gemv_tile(16, 256, 2), pdl=True)


@pytest.mark.skipif(not pdl_runs_here(), reason="programmatic dependent launch: a Hopper GPU")
@pytest.mark.parametrize("split", [1, 4])
def test_a_pdl_gemv_reads_what_the_kernel_before_it_wrote(split):
    gen = torch.Generator().manual_seed(split)
    packed = random_packed(QuantSpec.from_name("int4-g128-asym"), 4096, 4096, gen)
    w64 = packed.dequantize(torch.float64)
    base = torch.randn(1, 4096, generator=gen).half().to(DEVICE)
    tile = triton_wq_gemv.gemv_tile(16, 512, 2)
    for i in range(20):
        x = base * (i + 1)  # written by the kernel just before the GEMV, on the same stream
        out = triton_wq_gemv.gemv(x, packed, split, tile=tile, pdl=True)[0]
        assert_close_to_reference(out, x, w64, torch.float16)
    assert not packed.counters.any()


@pytest.mark.parametrize(("env", "arch", "expected"), [(None, 90, False), ("1", 90, True), ("1", 80, False), ("0", 90, False)])
def test_ops_launches_pdl_only_when_asked_and_where_the_target_has_it(monkeypatch, env, arch, expected):
    """``ops.wq_linear``'s GEMV is a programmatic dependent launch only with ``AUTOQ_GEMV_PDL=1`` (off by default since it
    slowed other formats on the H200) and on Hopper or later: compiling for a target, that target decides."""
    from autoq.kernels.precompile import Target, compiling_for

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # compiling_for's condition; the kernels, imported above, stay as they are
    if env is None:
        monkeypatch.delenv("AUTOQ_GEMV_PDL", raising=False)
    else:
        monkeypatch.setenv("AUTOQ_GEMV_PDL", env)
    with compiling_for(Target("cuda", arch, 32)):
        assert triton_wq_gemv.pdl_by_default(None, compile_only=True) is expected
    assert triton_wq_gemv.pdl_by_default(torch.device("cpu")) is False
