"""Tile helpers shared by the autotuned kernels (autoq.kernels.tiles): autotune keys and a named tile's launch options."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

import triton  # noqa: E402

from autoq.kernels.tiles import batch_bucket, tile_kwargs  # noqa: E402


def test_batch_buckets_are_the_next_power_of_two_and_batch_one_its_own():
    """Batch 1 (the GEMV's decode step) keys apart from batch 2; other batches round up to a power of two."""
    assert [batch_bucket(m) for m in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 4, 4, 8, 16, 32]


def test_a_named_tile_launches_with_its_blocks_warps_and_stages():
    tile = triton.Config({"BLOCK_N": 8, "BLOCK_K": 512}, num_warps=2, num_stages=3)
    assert tile_kwargs(tile) == {"BLOCK_N": 8, "BLOCK_K": 512, "num_warps": 2, "num_stages": 3}
