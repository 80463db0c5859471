"""Launches split over K (:mod:`autoq.kernels.splits`): fp32 partial sums that the last split of each output tile adds,
in split order and rounded once, in the same kernel; the counters it arrives on are the layer's and left at zero."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from kernel_cases import DEVICE, assert_close_to_reference, random_packed

from autoq.errors import AutoqError
from autoq.kernels.capability import autotuning, interpreting
from autoq.quant import QuantSpec

pytest.importorskip("triton")

import triton  # noqa: E402  (after the skip)
import triton.language as tl  # noqa: E402

from autoq.kernels import triton_wq_gemm, triton_wq_gemv  # noqa: E402
from autoq.kernels.splits import resolved_split, run_split, store_split, with_split  # noqa: E402


@triton.jit
def _given_partials_kernel(y_ptr, out_ptr, part_ptr, count_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """Program (tile, split) stores the given partial sums ``y[split]`` of its ``BLOCK`` outputs through ``store_split``."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    y = tl.load(y_ptr + tl.program_id(1) * numel + offs, mask=mask, other=0.0)
    store_split(y, out_ptr, part_ptr, count_ptr, offs, mask, numel, tl.program_id(0), SPLIT_K)


@pytest.mark.parametrize("split_k,numel,block,dtype", [(2, 4096 + 5, 1024, torch.float16), (3, 383, 128, torch.bfloat16),
                                                       (8, 80, 16, torch.float16)])
def test_the_last_split_adds_in_split_order_and_rounds_once(split_k, numel, block, dtype):
    """Bit for bit the fp32 sum in split order, rounded once: a partial last tile, and partial sums that cancel (what a
    rounding to fp16 per split would get wrong). Every tile's counter is back at 0 after."""
    gen = torch.Generator().manual_seed(split_k)
    y = torch.randn(split_k, numel, generator=gen) * 1e3
    y[-1] -= y[:-1].sum(0) * 0.999  # the last split nearly cancels the others
    tiles = triton.cdiv(numel, block)
    out = torch.empty(numel, dtype=dtype, device=DEVICE)
    part = torch.full((split_k, numel), float("nan"), device=DEVICE)
    counters = torch.zeros(tiles + 1, dtype=torch.int32, device=DEVICE)
    counters[-1] = 7  # past the tiles: not this launch's
    _given_partials_kernel[(tiles, split_k)](y.to(DEVICE), out, part, counters, numel, SPLIT_K=split_k, BLOCK=block)
    expected = y[0].clone()
    for s in range(1, split_k):
        expected += y[s]
    out = out.cpu()
    if interpreting() and dtype == torch.bfloat16:  # Triton's interpreter casts fp32 to bf16 by dropping the low 16 bits
        assert torch.equal(out, (expected.view(torch.int32) & -65536).view(torch.float32).to(dtype))
    else:  # a GPU rounds to nearest even, as torch does
        assert torch.equal(out, expected.to(dtype))
    assert counters.tolist() == [0] * tiles + [7]


@pytest.mark.skipif(interpreting(), reason="thousands of programs racing to be last: on a GPU (the interpreter runs them in turn)")
def test_racing_splits_add_the_same_bits_every_launch():
    """On a GPU the splits of a tile finish in any order on different SMs: the last must see every slice (released by
    the others' count, read from L2), and add them in split order whichever it is."""
    gen = torch.Generator().manual_seed(0)
    split_k, numel, block = 8, 1 << 20, 128
    y = (torch.randn(split_k, numel, generator=gen) * 1e3).to(DEVICE)
    expected = y[0].clone()
    for s in range(1, split_k):
        expected += y[s]
    expected = expected.half()
    tiles = triton.cdiv(numel, block)
    part = torch.empty(split_k, numel, device=DEVICE)
    counters = torch.zeros(tiles, dtype=torch.int32, device=DEVICE)
    for _ in range(20):
        out = torch.full((numel,), float("nan"), dtype=torch.float16, device=DEVICE)
        _given_partials_kernel[(tiles, split_k)](y, out, part, counters, numel, SPLIT_K=split_k, BLOCK=block)
        assert torch.equal(out, expected)
        assert not counters.any()


def test_run_split_allocates_partial_sums_for_the_largest_split_and_counts_on_the_weight_s_counters():
    seen = {}

    def launch(out, part, counters):
        seen.update(out=out, part=part, counters=counters)
        return ["compiled"]

    device = torch.device(DEVICE)
    own = torch.zeros(3 * 50, dtype=torch.int32, device=DEVICE)
    out, compiled = run_split(launch, 2, 50, torch.float16, device, (2, 8), 3, own)
    assert compiled == ["compiled"] and out.shape == (2, 50) and out.dtype == torch.float16
    assert seen["part"].shape == (8, 2, 50) and seen["part"].dtype == torch.float32 and seen["counters"] is own
    run_split(launch, 2, 50, torch.float16, device, (4,), 4, own)  # too short for 4 tiles of rows: zeroed ones of its own
    assert seen["counters"] is not own and seen["counters"].shape == (200,) and not seen["counters"].any()
    run_split(launch, 2, 50, torch.float16, device, (4,), 1, None)
    assert seen["counters"].shape == (50,) and not seen["counters"].any()
    elsewhere = torch.zeros(50, dtype=torch.int32, device="meta")  # a weight's counters on another device than the output
    run_split(launch, 2, 50, torch.float16, device, (2,), 1, elsewhere)
    assert seen["counters"].device == out.device and not seen["counters"].any()
    run_split(launch, 2, 50, torch.float16, device, (1,), 1, own)  # nothing splits: empty buffers, fp32 and int32 as always
    assert seen["part"].shape == (0, 2, 50) and seen["part"].dtype == torch.float32
    assert seen["counters"].numel() == 0 and seen["counters"].dtype == torch.int32


@pytest.mark.parametrize("kernel,rows,name,split", [("gemv", 1, "int4-g128-asym", 4), ("gemv", 3, "int2-ch-asym", 8),
                                                    ("gemm", 5, "int4-ch-asym", 2), ("gemm", 16, "int3-g64-asym", 4)])
def test_split_launches_leave_the_layer_s_counters_at_zero_and_run_without_them(kernel, rows, name, split):
    gen = torch.Generator().manual_seed(rows)
    packed = random_packed(QuantSpec.from_name(name), 37, 2048 + 64, gen)
    x = torch.randn(rows, packed.shape[1], generator=gen).half().to(DEVICE)
    run = triton_wq_gemv.gemv if kernel == "gemv" else triton_wq_gemm.gemm
    w64 = packed.dequantize(torch.float64)
    out, _ = run(x, packed, split)
    assert_close_to_reference(out, x, w64, torch.float16)
    assert packed.counters.numel() == 37 and not packed.counters.any()
    again, _ = run(x, packed, split)  # the counters serve the next launch
    assert torch.equal(again, out)
    bare, _ = run(x, dataclasses.replace(packed, counters=None), split)  # a weight without them: each launch zeroes its own
    assert torch.equal(bare, out)


def test_a_named_split_must_match_the_named_tile():
    tile = triton.Config({"BLOCK_N": 8, "SPLIT_K": 4})
    assert resolved_split(None, tile) == 4 and resolved_split(4, tile) == 4 and resolved_split(2, None) == 2
    assert resolved_split(None, triton.Config({"BLOCK_N": 8})) == 1
    assert resolved_split(None, None) == (None if autotuning() else 1)  # None: the split-choosing autotuner picks
    with pytest.raises(AutoqError, match="splits K 4 ways, not 2"):
        resolved_split(2, tile)


@pytest.mark.parametrize("split_k", [0, -1, 2.0, True])
def test_a_split_that_is_not_a_positive_integer_is_refused(split_k):
    """0 raised a bare ZeroDivisionError; -1 launched nothing and returned the uninitialized output."""
    from autoq.kernels.ops import wq_linear

    w = random_packed(QuantSpec(4, "channel", None, False), 8, 64, torch.Generator().manual_seed(0))
    for rows in (1, 4):
        with pytest.raises(AutoqError, match=f"split_k must be a positive integer .*got {split_k!r}"):
            wq_linear(torch.randn(rows, 64, dtype=torch.float16, device=DEVICE), w, backend="triton", split_k=split_k)


def test_a_split_candidate_keeps_its_tile_s_warps_and_stages():
    """``with_split`` changes the split over K alone: a candidate fell back to 4 warps."""
    split = with_split(triton.Config({"BLOCK_N": 8}, num_warps=2, num_stages=3), 4)
    assert (split.kwargs, split.num_warps, split.num_stages) == ({"BLOCK_N": 8, "SPLIT_K": 4}, 2, 3)
