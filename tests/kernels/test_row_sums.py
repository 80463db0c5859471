"""The rows' sums of the batch-1 GEMV's tiles with the rows in a thread, packed-half and fp32 (autoq.kernels.triton_row_sums),
against torch's in float64."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from autoq.kernels.triton_row_sums import row_sums  # noqa: E402


@triton.jit
def _row_sums_kernel(a_ptr, out_ptr, R: tl.constexpr, BW: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * BW + tl.arange(0, BW)[None, :]
    tl.store(out_ptr + tl.arange(0, R), row_sums(tl.load(a_ptr + offs), R, BW))


@pytest.mark.parametrize(("rows", "cols", "warps"), [(2, 32, 1), (4, 128, 4), (8, 256, 8), (16, 128, 4), (32, 64, 2), (8, 64, 4), (4, 256, 1)])
def test_row_sums_are_each_rows_sum(rows, cols, warps):
    """Every row's own sum, for 2 to 32 rows, one column a thread (the GEMV's layout) and not (more or fewer threads):
    each level of the butterfly keeps half the rows, so a row mixed up with another, or a partner's half summed twice,
    shows as a wrong row. Values of different scales a row, so that each row's sum is its own."""
    gen = torch.Generator().manual_seed(rows * cols + warps)
    a = (torch.randn(rows, cols, generator=gen) * torch.logspace(0, 3, rows)[:, None]).to(DEVICE)
    out = torch.empty(rows, device=DEVICE)
    _row_sums_kernel[(1,)](a, out, rows, cols, num_warps=warps)
    expected = a.double().sum(dim=1)
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-5 * a.double().abs().sum(dim=1).max().item()), (out, expected)
