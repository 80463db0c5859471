"""The split-K reduction of :mod:`autoq.kernels.tiles`: one kernel adds the fp32 partial sums and rounds once."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE

from autoq.kernels.capability import interpreting

pytest.importorskip("triton")

from autoq.kernels.tiles import REDUCE_BLOCK, add_splits, reduce_splits, split_output  # noqa: E402  (after the skip: imports Triton)


@pytest.mark.parametrize("split_k,m,n,dtype", [(2, 1, 4096 + 5, torch.float16), (3, 16, 383, torch.bfloat16),
                                               (8, 5, REDUCE_BLOCK, torch.float16)])
def test_reduce_splits_adds_in_split_order_and_rounds_once(split_k, m, n, dtype):
    """Bit for bit the fp32 sum in split order, rounded once: outputs past a whole block, a partial last block,
    and partial sums that cancel (what a second rounding to fp16 per split would get wrong)."""
    gen = torch.Generator().manual_seed(split_k)
    x = torch.empty(m, 7, dtype=dtype, device=DEVICE)
    part = split_output(x, n, split_k)
    assert part.shape == (split_k, m, n) and part.dtype == torch.float32
    part.copy_((torch.randn(split_k, m, n, generator=gen) * 1e3).to(DEVICE))
    part[-1] -= part[:-1].sum(0) * 0.999  # the last split nearly cancels the others
    expected = part[0].clone()
    for s in range(1, split_k):
        expected += part[s]
    out = reduce_splits(part, split_k, dtype).cpu()
    assert out.shape == (m, n) and out.dtype == dtype
    expected = expected.cpu()
    if interpreting() and dtype == torch.bfloat16:  # Triton's interpreter casts fp32 to bf16 by dropping the low 16 bits
        assert torch.equal(out, (expected.view(torch.int32) & -65536).view(torch.float32).to(dtype))
    else:  # a GPU rounds to nearest even, as torch does
        assert torch.equal(out, expected.to(dtype))


def test_one_split_is_the_output_itself():
    x = torch.zeros(2, 3, dtype=torch.float16, device=DEVICE)
    out = split_output(x, 5, 1)
    assert out.dtype == torch.float16 and reduce_splits(out, 1, torch.float16) is out


def test_add_splits_reads_only_the_splits_it_is_told():
    """The GEMV's buffer holds a slice for the largest split its autotuner may choose; a smaller choice adds only its own
    (the slices past it are NaN here, so reading one would show)."""
    gen = torch.Generator().manual_seed(11)
    part = torch.full((8, 2, 300), float("nan"))
    part[:3] = torch.randn(3, 2, 300, generator=gen)
    part = part.to(DEVICE)
    out = torch.empty(2, 300, dtype=torch.float16, device=DEVICE)
    add_splits(part, 3, out)
    assert torch.equal(out.cpu(), (part[0] + part[1] + part[2]).to(torch.float16).cpu())
