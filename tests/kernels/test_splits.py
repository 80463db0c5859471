"""Launches split over K (:mod:`autoq.kernels.splits`): fp32 partial sums, one kernel adding them and rounding once."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE

from autoq.errors import AutoqError
from autoq.kernels.capability import autotuning, interpreting

pytest.importorskip("triton")

from autoq.kernels.splits import ADD_BLOCK, add_splits, resolved_split, run_split  # noqa: E402  (after the skip: imports Triton)


@pytest.mark.parametrize("split_k,m,n,dtype", [(2, 1, 4096 + 5, torch.float16), (3, 16, 383, torch.bfloat16),
                                               (8, 5, ADD_BLOCK, torch.float16)])
def test_run_split_adds_in_split_order_and_rounds_once(split_k, m, n, dtype):
    """Bit for bit the fp32 sum in split order, rounded once: outputs past a whole block, a partial last block,
    and partial sums that cancel (what a second rounding to fp16 per split would get wrong)."""
    gen = torch.Generator().manual_seed(split_k)
    written = {}

    def launch(out, part):  # stands in for a kernel writing its partial sums
        assert out.shape == (m, n) and out.dtype == dtype and part.shape == (split_k, m, n) and part.dtype == torch.float32
        part.copy_((torch.randn(split_k, m, n, generator=gen) * 1e3).to(DEVICE))
        part[-1] -= part[:-1].sum(0) * 0.999  # the last split nearly cancels the others
        written["part"] = part.clone()
        return ["compiled"]

    out, compiled = run_split(launch, None, m, n, dtype, torch.device(DEVICE), split_k, (split_k,))
    assert compiled == ["compiled"]
    part = written["part"]
    expected = part[0].clone()
    for s in range(1, split_k):
        expected += part[s]
    out, expected = out.cpu(), expected.cpu()
    if interpreting() and dtype == torch.bfloat16:  # Triton's interpreter casts fp32 to bf16 by dropping the low 16 bits
        assert torch.equal(out, (expected.view(torch.int32) & -65536).view(torch.float32).to(dtype))
    else:  # a GPU rounds to nearest even, as torch does
        assert torch.equal(out, expected.to(dtype))


def test_one_split_writes_the_output_and_an_empty_fp32_buffer_stands_for_the_partial_sums():
    def launch(out, part):
        assert part.shape == (0, 2, 5) and part.dtype == torch.float32
        out.fill_(3.0)
        return []

    out, _ = run_split(launch, None, 2, 5, torch.float16, torch.device(DEVICE), 1, (1,))
    assert out.dtype == torch.float16 and (out == 3.0).all()


def test_a_named_split_must_match_the_named_tile():
    import triton

    tile = triton.Config({"BLOCK_N": 8, "SPLIT_K": 4})
    assert resolved_split(None, tile) == 4 and resolved_split(4, tile) == 4 and resolved_split(2, None) == 2
    assert resolved_split(None, triton.Config({"BLOCK_N": 8})) == 1
    assert resolved_split(None, None) == (None if autotuning() else 1)  # None: the split-choosing autotuner picks
    with pytest.raises(AutoqError, match="splits K 4 ways, not 2"):
        resolved_split(2, tile)


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
