"""The weight-only kernels' autotuners choose the split over K with the tile, and a split launch adds its own partial
sums (the GEMV at batch 1, the GEMM at batches up to 16).

A GPU times the candidates; here Triton's own autotuner runs the interpreted kernel with a stand-in timer that
checks each candidate's output as its timed call leaves it (a split one's added by its last split, in the kernel)
and makes one chosen candidate win, so the launch that follows runs it.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DEVICE, assert_close_to_reference, random_packed

from autoq.quant import QuantSpec

pytest.importorskip("triton")

from autoq.kernels import splits, tiles, triton_wq_gemm, triton_wq_gemv  # noqa: E402  (after the skip: imports Triton)
from autoq.kernels.tiles import batch_bucket  # noqa: E402


def test_split_candidates_keep_a_whole_step_for_every_split():
    assert triton_wq_gemv.gemv_splits(4096, 8, 0) == (2, 4, 8)  # int4: 8 x 512 columns fill 4096
    assert triton_wq_gemv.gemv_splits(1536, 8, 0) == (2, 4)  # 4 x 256 and 2 x 512 fit, 8 x 256 does not
    assert triton_wq_gemv.gemv_splits(384, 8, 0) == ()  # the default model's short rows never split
    assert triton_wq_gemv.gemv_splits(11008, 4, 0) == (2, 4, 8)  # int8: 4 codes a word, same columns a step
    kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": 1536}, CPW=8, GROUP=0)
    whole = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_CONFIGS, {"K": 1536}, CPW=8, GROUP=0)
    assert [c.kwargs | {"SPLIT_K": 1} for c in whole] == [c.kwargs for c in kept if c.kwargs["SPLIT_K"] == 1]  # every tile whole
    assert all(c.kwargs["SPLIT_K"] * c.kwargs["BLOCK_K"] <= 1536 for c in kept if c.kwargs["SPLIT_K"] > 1)


def test_gemm_split_candidates_are_16_row_tiles_for_batches_up_to_16():
    assert triton_wq_gemm.gemm_splits(16, 4096, 8) == triton_wq_gemm.gemm_splits(2, 4096, 8) == (2, 4, 8)
    assert triton_wq_gemm.gemm_splits(32, 4096, 8) == ()  # larger batches reuse each weight more: K stays whole
    kept = triton_wq_gemm.prune_gemm_splits(triton_wq_gemm._GEMM_SPLIT_CONFIGS, {"M_BUCKET": 16, "K": 384}, CPW=8)
    split = [c for c in kept if c.kwargs["SPLIT_K"] > 1]
    assert split and all(c.kwargs["BLOCK_M"] == 16 and c.kwargs["SPLIT_K"] * c.kwargs["BLOCK_K"] <= 384 for c in split)
    whole = triton_wq_gemm.prune_gemm_splits(triton_wq_gemm._GEMM_SPLIT_CONFIGS, {"M_BUCKET": 128, "K": 4096}, CPW=8)
    assert len(whole) == len(triton_wq_gemm._GEMM_CONFIGS) and all(c.kwargs["SPLIT_K"] == 1 for c in whole)


def _launcher(kernel: str):
    """The split-choosing autotuner of ``kernel``, its launch with the split left to it, and its candidates for a weight."""
    if kernel == "gemv":
        return (triton_wq_gemv._gemv_split_tuned, lambda x, w: triton_wq_gemv.gemv(x, w, None),
                lambda x, w: triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": w.shape[1], "x_ptr": x},
                                                               CPW=w.codes_per_word, GROUP=w.group_size, BITS=w.bits))
    return (triton_wq_gemm._gemm_split_tuned, lambda x, w: triton_wq_gemm.gemm(x, w, None),
            lambda x, w: triton_wq_gemm.prune_gemm_splits(triton_wq_gemm._GEMM_SPLIT_CONFIGS,
                                                          {"M_BUCKET": batch_bucket(x.shape[0]), "K": w.shape[1]}, CPW=w.codes_per_word))


@pytest.mark.parametrize("kernel,name,dtype,rows", [("gemv", "int4-ch-asym", torch.float16, 1), ("gemv", "int4-g128-asym", torch.bfloat16, 1),
                                                    ("gemv", "int4-ch-asym", torch.float16, 3),  # kernel="gemv" takes a few rows too
                                                    ("gemm", "int4-g128-asym", torch.float16, 5), ("gemm", "int3-g64-asym", torch.bfloat16, 16)])
def test_the_autotuner_chooses_a_split_and_the_launch_runs_it(monkeypatch, kernel, name, dtype, rows):
    tuner, run, candidates_for = _launcher(kernel)
    monkeypatch.setattr(tiles, "autotuning", lambda: True)  # launch_tile's check, and resolved_split's
    monkeypatch.setattr(splits, "autotuning", lambda: True)
    monkeypatch.setattr(tuner, "cache", {})  # a fresh choice, restored after the test
    gen = torch.Generator().manual_seed(3)
    n, k = 21, 1024 + 64  # splits of 2 and 4 fit whole steps, and a remainder
    packed = random_packed(QuantSpec.from_name(name), n, k, gen)
    x = torch.randn(rows, k, generator=gen).to(dtype).to(DEVICE)
    w64 = packed.dequantize(torch.float64)
    timed = []

    def stand_in_timer(kernel_call, quantiles):
        """Each candidate once: its output checked, then a time that makes the last candidate (a split one) the fastest."""
        out = tuner.nargs["out_ptr"]
        out.fill_(float("nan"))
        kernel_call()
        assert_close_to_reference(out.clone(), x, w64, dtype)  # split candidates too: one kernel adds its splits
        assert not packed.counters.any()  # and leaves the layer's counters at zero for the next
        timed.append(True)
        return [1.0 / len(timed)] * len(quantiles)

    monkeypatch.setattr(tuner, "do_bench", stand_in_timer)
    out, _ = run(x, packed)
    candidates = candidates_for(x, packed)
    assert len(timed) == len(candidates) > 4
    assert tuner.best_config is candidates[-1] and tuner.best_config.kwargs["SPLIT_K"] > 1
    assert_close_to_reference(out, x, w64, dtype)
    timed.clear()
    again, _ = run(x, packed)  # the choice is cached: no timing, the same split
    assert timed == [] and torch.equal(again, out) and not packed.counters.any()
