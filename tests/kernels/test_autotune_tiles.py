"""Every tile the autotuners may pick, against a float64 reference (under the interpreter here).

On a GPU each autotuner picks its tile by speed, and each tile takes its own path through the kernel:
its K step, prefetch or not, whole steps or a masked last one, words and groups per step. The other
kernel tests run one fixed tile; here every tile runs through its launcher (``tile=``) at shapes with
several K steps, a partial last one and rows that are not a multiple of the tile, so a wrong answer
cannot hide in a tile that only a GPU's autotuner would choose.
"""

from __future__ import annotations

import pytest
import torch
from bounds import checked_loads
from kernel_cases import DEVICE, UNIT_ROUNDOFF, assert_close_to_reference, random_packed

from autoq.errors import AutoqError
from autoq.kernels.capability import interpreting
from autoq.kernels.formats import Int8Weight, codes_per_word
from autoq.kernels.gemv_steps import step_columns
from autoq.quant import QuantSpec

pytest.importorskip("triton")

from autoq.kernels import triton_w8a8, triton_wq_gemm, triton_wq_gemv  # noqa: E402  (after the skip: imports Triton)

# per channel (whole words; 3 bits: 10 codes a word), narrow groups summed per step, 3-bit groups read group by group
GEMV_FORMATS = ("int4-ch-asym", "int3-ch-sym", "int4-g32-sym", "int8-g64-asym", "int3-g128-asym")
# 2/4/8-bit words, and 3/5/6-bit slot groups (3 and 5 words) straddling scale groups or per channel
GEMM_FORMATS = ("int4-g128-asym", "int3-g64-sym", "int8-ch-asym", "int5-g32-asym", "int3-ch-asym")


def tile_id(tile) -> str:
    return "-".join(f"{v:d}" for v in tile.kwargs.values()) + f"-w{tile.num_warps}"


def gemv_k(tile, name: str, remainder: int = 37) -> int:
    """Two whole K steps of ``tile`` in format ``name`` and a masked remainder: the first step, one both prefetched and
    prefetching, and a partial last one. Per tile: one K for all (two steps of the longest) gave a 256-column tile 20
    steps, each a pass of the interpreter."""
    spec = QuantSpec.from_name(name)
    return 2 * step_columns(tile.kwargs["BLOCK_K"], codes_per_word(spec.bits), spec.group_size or 0) + remainder


FP32_GEMV = [t for t in triton_wq_gemv._GEMV_CONFIGS if not t.kwargs["HALF2"]]
HALF2_GEMV = [t for t in triton_wq_gemv._GEMV_CONFIGS + triton_wq_gemv._GEMV_SPLIT_CONFIGS if t.kwargs["HALF2"] and t.kwargs.get("SPLIT_K", 1) > 1]
HALF2_GEMV = [t for t in triton_wq_gemv._GEMV_CONFIGS if t.kwargs["HALF2"] and not t.kwargs.get("PERSIST")] + HALF2_GEMV
PERSISTENT_GEMV = [t for t in triton_wq_gemv._GEMV_CONFIGS if t.kwargs.get("PERSIST")]


@pytest.mark.parametrize("tile", FP32_GEMV, ids=tile_id)
def test_every_gemv_tile(tile):
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] * tile.kwargs["BLOCK_K"] + tile.kwargs["ROWS_IN_THREAD"] + tile.num_warps)
    for name in GEMV_FORMATS:
        k = gemv_k(tile, name)
        packed = random_packed(QuantSpec.from_name(name), 2 * tile.kwargs["BLOCK_N"] - 3, k, gen)
        w64 = packed.dequantize(torch.float64)
        x = torch.randn(1, k, generator=gen).half().to(DEVICE)
        for split in (1, 2):
            assert_close_to_reference(triton_wq_gemv.gemv(x, packed, split, tile=tile)[0], x, w64, torch.float16)
    whole = gemv_k(tile, "int4-g128-asym", 0)  # whole K steps (EVEN_K) and whole tiles of rows (EVEN_N)
    packed = random_packed(QuantSpec.from_name("int4-g128-asym"), 2 * tile.kwargs["BLOCK_N"], whole, gen)
    x = torch.randn(1, whole, generator=gen).bfloat16().to(DEVICE)
    assert_close_to_reference(triton_wq_gemv.gemv(x, packed, 1, tile=tile)[0], x, packed.dequantize(torch.float64), torch.bfloat16)


@pytest.mark.parametrize("tile", [t for t in FP32_GEMV if t.kwargs["ROWS_IN_THREAD"]], ids=tile_id)
def test_rows_in_thread_tiles_take_every_word_width(tile):
    """The tiles with the rows in each thread load words and activations flat, and scale each word by its own group:
    2-bit words (16 activations each) and 8-bit ones too, groups narrower and wider than a step, per channel."""
    gen = torch.Generator().manual_seed(7 * tile.kwargs["BLOCK_N"] + tile.kwargs["BLOCK_K"])
    k = tile.kwargs["BLOCK_K"] + 160  # a whole step and a masked one
    for name, dtype in (("int2-g32-asym", torch.float16), ("int2-ch-sym", torch.bfloat16), ("int8-ch-sym", torch.float16),
                        ("int4-g128-sym", torch.bfloat16), ("int8-g64-asym", torch.float16)):
        packed = random_packed(QuantSpec.from_name(name), tile.kwargs["BLOCK_N"] + 3, k, gen)
        x = torch.randn(1, k, generator=gen).to(dtype).to(DEVICE)
        for split in (1, 2):
            assert_close_to_reference(triton_wq_gemv.gemv(x, packed, split, tile=tile)[0], x, packed.dequantize(torch.float64), dtype)


@pytest.mark.parametrize("tile", HALF2_GEMV, ids=tile_id)
def test_every_half2_gemv_tile(tile):
    """The packed-half W4 tiles (fp16 activations, pairs of them an int32): per channel and in groups, symmetric and not,
    whole steps and a partial one that ends inside a word (K = 2 steps + 38; 4 steps with two prefetched), rows not a multiple of the tile and
    whole tiles. Here the interpreter runs their integer-and-fp32 twin (no PTX); on a GPU this runs the PTX."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] * tile.kwargs["BLOCK_K"] + tile.num_warps + tile.kwargs.get("SPLIT_K", 1))
    split = tile.kwargs.get("SPLIT_K", 1)
    step = step_columns(tile.kwargs["BLOCK_K"], 8)
    steps = 4 if tile.kwargs["PREFETCH"] == 2 else 2  # two steps ahead: enough steps that those words are used
    for name, rows, extra in (("int4-ch-asym", 2 * tile.kwargs["BLOCK_N"] - 3, 38), ("int4-ch-sym", tile.kwargs["BLOCK_N"] + 1, 6),
                              ("int4-g32-asym", 2 * tile.kwargs["BLOCK_N"], 0), ("int4-g128-sym", 2 * tile.kwargs["BLOCK_N"] - 1, 128)):
        k = steps * split * step + extra
        packed = random_packed(QuantSpec.from_name(name), rows, k, gen)
        x = (3 * torch.randn(1, k, generator=gen)).half().to(DEVICE)
        for split_k in ((None,) if split > 1 else (1, 2)):
            assert_close_to_reference(triton_wq_gemv.gemv(x, packed, split_k, tile=tile)[0], x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.parametrize("tile", PERSISTENT_GEMV, ids=tile_id)
def test_every_persistent_gemv_tile(tile):
    """The persistent HALF2 tiles: each program walks row tiles with its loads running ahead across them. Enough row
    tiles that every program takes two or three (the last one partial), three K steps a tile (so prefetches cross from
    one tile into the next at every step offset), per channel and in groups, symmetric and not, and two rows of
    activations, whose programs share the grid."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] * tile.kwargs["BLOCK_K"] + tile.kwargs["PERSIST"])
    programs = triton_wq_gemv.resident_slots(torch.device(DEVICE)) * tile.kwargs["PERSIST"]
    n = tile.kwargs["BLOCK_N"] * (2 * programs + 1) - 3
    k = 3 * step_columns(tile.kwargs["BLOCK_K"], 8)
    for name, batch in (("int4-ch-asym", 1), ("int4-ch-sym", 2), ("int4-g64-asym", 1), ("int4-g128-sym", 1)):
        packed = random_packed(QuantSpec.from_name(name), n, k, gen)
        x = (3 * torch.randn(batch, k, generator=gen)).half().to(DEVICE)
        assert_close_to_reference(triton_wq_gemv.gemv(x, packed, None, tile=tile)[0], x, packed.dequantize(torch.float64), torch.float16)


def test_persistent_grids_fill_the_slots_and_never_outnumber_the_row_tiles():
    assert triton_wq_gemv.persistent_grid(512, 1, 132, 2) == 264
    assert triton_wq_gemv.persistent_grid(512, 1, 132, 4) == 512  # 528 slots, 512 row tiles
    assert triton_wq_gemv.persistent_grid(100, 1, 132, 2) == 100  # no program without a tile
    assert triton_wq_gemv.persistent_grid(512, 2, 132, 2) == 132  # two rows of activations share the slots
    assert triton_wq_gemv.persistent_grid(512, 1000, 132, 2) == 1  # at least one


@pytest.mark.parametrize(("k", "split", "match"), [(3000, 1, "multiple of their 1024 columns"), (2048, 2, "split_k must be 1")])
def test_persistent_tiles_refuse_a_partial_step_or_a_split(k, split, match):
    """A named persistent tile where K is not whole steps, or split, is an error that says why; the autotuners prune it there."""
    tile = triton_wq_gemv.gemv_tile(8, 1024, 4, prefetch=2, half2=True, persist=4)
    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 16, k, torch.Generator().manual_seed(k))
    x = torch.randn(1, k).half().to(DEVICE)
    with pytest.raises(AutoqError, match=match):
        triton_wq_gemv.gemv(x, packed, split, tile=tile)
    kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": k, "x_ptr": x}, CPW=8, GROUP=0, BITS=4)
    assert all(c.kwargs["SPLIT_K"] == 1 for c in kept if c.kwargs.get("PERSIST"))
    assert any(c.kwargs.get("PERSIST") for c in kept) == (k % 1024 == 0)  # 2048: the 1024-column ones, whole
    # the autotuner of a split the caller names: the split comes with the launch, not the tile
    kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_CONFIGS, {"K": k, "x_ptr": x}, CPW=8, GROUP=0, BITS=4, SPLIT_K=split)
    assert any(c.kwargs.get("PERSIST") for c in kept) == (k % 1024 == 0 and split == 1)


@pytest.mark.parametrize("tile", [triton_wq_gemv.gemv_tile(8, 256, 1, prefetch=1, half2=True, persist=2),
                                  triton_wq_gemv.gemv_tile(8, 256, 1, prefetch=2, half2=True, persist=1),
                                  triton_wq_gemv.gemv_tile(8, 256, 1, half2=True), triton_wq_gemv.gemv_tile(8, 256, 1, rows_in_thread=True),
                                  triton_wq_gemv.gemv_tile(16, 256, 2)], ids=tile_id)
def test_gemv_tiles_write_only_their_outputs(tile):
    """No store of a GEMV program lands past N in its row: the output is a view into rows of canaries wider than N, and
    the canaries must stay (a store mask of ``offs_n <= N`` wrote the next row's first output, or past the tensor, and
    passed every comparison, since that row's own program wrote it again afterwards)."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] + tile.kwargs.get("PERSIST", 0))
    for name, n in (("int4-ch-asym", 37), ("int4-g64-sym", 40)):
        packed = random_packed(QuantSpec.from_name(name), n, 768, gen)
        x = (3 * torch.randn(2, 768, generator=gen)).half().to(DEVICE)
        canaries = torch.full((2, n + 8), float("nan"), dtype=torch.float16, device=DEVICE)
        out = canaries[:, :n]
        none = torch.empty(0, 2, n, dtype=torch.float32, device=DEVICE)
        triton_wq_gemv.launch_gemv(x, packed.qweight, packed.scales, packed.zeros, out, none, torch.empty(0, dtype=torch.int32, device=DEVICE), 1,
                                   packed.bits, packed.codes_per_word, packed.group_size, tile=tile)
        assert torch.isnan(canaries[:, n:]).all(), canaries[:, n:]
        assert_close_to_reference(out, x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.skipif(not interpreting(), reason="checks the addresses the interpreter's loads read")
@pytest.mark.parametrize("prefetch", [1, 2])
def test_persistent_tiles_read_only_their_tensors(prefetch):
    """The prefetches past a program's last tile read the layer's last tile again, not past it: whole row tiles (no row
    mask would stop a read past N) and a partial one, per channel (the next tile's scales a tile ahead, clamped too),
    per tensor and in groups."""
    gen = torch.Generator().manual_seed(prefetch)
    with checked_loads() as violations:
        for name, n in (("int4-ch-asym", 40), ("int4-ch-asym", 37), ("int4-g32-asym", 24), ("int4-g32-asym", 29), ("int4-tensor-sym", 21)):
            for persist in (1, 2):
                tile = triton_wq_gemv.gemv_tile(8, 256, 1, prefetch=prefetch, half2=True, persist=persist)
                packed = random_packed(QuantSpec.from_name(name), n, 768, gen)
                x = (3 * torch.randn(1, 768, generator=gen)).half()
                assert_close_to_reference(triton_wq_gemv.gemv(x, packed, 1, tile=tile)[0], x, packed.dequantize(torch.float64), torch.float16)
    assert not violations, violations


@pytest.mark.skipif(not interpreting(), reason="checks the addresses the interpreter's loads read")
@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_half2_tiles_read_only_their_tensors(prefetch):
    """No load of a HALF2 tile reads outside the launch's tensors, though a float64 comparison could not tell: the
    loop's prefetches are clamped to the last whole step, and a prefetch past it would be thrown away unused. K below
    one step, whole steps only, and a remainder; rows a partial tile; per channel, per tensor (scale row stride 0) and
    in groups (scales loaded in the step, or two steps ahead); K whole and split."""
    tile = triton_wq_gemv.gemv_tile(8, 256, 1, prefetch=prefetch, half2=True)
    gen = torch.Generator().manual_seed(prefetch)
    with checked_loads() as violations:
        for name, k, split in (("int4-ch-asym", 38, 1), ("int4-ch-asym", 768, 2), ("int4-tensor-sym", 512, 1), ("int4-g32-asym", 1030, 1),
                               ("int4-g64-sym", 1280, 4)):
            packed = random_packed(QuantSpec.from_name(name), 13, k, gen)
            x = (3 * torch.randn(1, k, generator=gen)).half()
            assert_close_to_reference(triton_wq_gemv.gemv(x, packed, split, tile=tile)[0], x, packed.dequantize(torch.float64), torch.float16)
    assert not violations, violations


@pytest.mark.parametrize(("name", "dtype", "k", "match"), [("int4-ch-asym", torch.bfloat16, 1024, "fp16 activations"),
                                                           ("int8-ch-asym", torch.float16, 256, "4-bit codes"),
                                                           ("int4-g32-asym", torch.float16, 255, "K=255 must be even")])
def test_half2_tiles_refuse_what_they_cannot_read(name, dtype, k, match):
    """A named HALF2 tile on bf16 activations, another width or an odd K is an error that says why; the autotuners
    prune such tiles instead (``prune_gemv_configs``)."""
    tile = next(t for t in triton_wq_gemv._GEMV_CONFIGS if t.kwargs["HALF2"])
    packed = random_packed(QuantSpec.from_name(name), 8, k, torch.Generator().manual_seed(k))
    x = torch.randn(1, k).to(dtype).to(DEVICE)
    with pytest.raises(AutoqError, match=match):
        triton_wq_gemv.gemv(x, packed, 1, tile=tile)
    kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": k, "x_ptr": x}, CPW=32 // packed.bits,
                                             GROUP=packed.group_size, BITS=packed.bits)
    assert kept and not any(c.kwargs["HALF2"] for c in kept)
    if name == "int4-ch-asym":  # the same launch in fp16 keeps them
        kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": k, "x_ptr": x.half()}, CPW=8, GROUP=0, BITS=4)
        assert any(c.kwargs["HALF2"] for c in kept)


@pytest.mark.parametrize("tile", [t for t in triton_wq_gemv._GEMV_SPLIT_CONFIGS if t.kwargs["SPLIT_K"] > 1 and not t.kwargs["HALF2"]],
                         ids=tile_id)
def test_every_split_gemv_tile(tile):
    """The split-choosing autotuner's split tiles, as a launch runs its choice (``split_k=None``: the tile says): the
    fp32 partial sums of every split, added by the last one in the same kernel; a remainder step, and rows not a multiple of the tile."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] * tile.kwargs["SPLIT_K"] + tile.kwargs["BLOCK_K"])
    k = tile.kwargs["SPLIT_K"] * tile.kwargs["BLOCK_K"] + 37  # every split a step (the pruning's rule), and a remainder
    for name, dtype in (("int4-ch-asym", torch.float16), ("int4-g32-sym", torch.bfloat16), ("int3-g128-asym", torch.float16)):
        packed = random_packed(QuantSpec.from_name(name), 2 * tile.kwargs["BLOCK_N"] - 3, k, gen)
        x = torch.randn(1, k, generator=gen).to(dtype).to(DEVICE)
        assert_close_to_reference(triton_wq_gemv.gemv(x, packed, None, tile=tile)[0], x, packed.dequantize(torch.float64), dtype)
    with pytest.raises(AutoqError, match="pass split_k=None"):
        triton_wq_gemv.gemv(x, packed, 1, tile=tile)


@pytest.mark.parametrize("tile", triton_wq_gemm._GEMM_CONFIGS, ids=tile_id)
def test_every_weight_only_gemm_tile(tile):
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_M"] * tile.kwargs["BLOCK_N"] + tile.kwargs["BLOCK_K"])
    m, n, k = tile.kwargs["BLOCK_M"] + 5, tile.kwargs["BLOCK_N"] + 7, 2 * tile.kwargs["BLOCK_K"] + 29
    splits = (1, 3, 1, 1, 2)  # split over K as batches up to 16 are (3 splits: in some tiles one gets no step)
    for name, dtype, split in zip(GEMM_FORMATS, (torch.float16, torch.bfloat16, torch.float16, torch.float16, torch.bfloat16), splits):
        packed = random_packed(QuantSpec.from_name(name), n, k, gen)
        x = torch.randn(m, k, generator=gen).to(dtype).to(DEVICE)
        assert_close_to_reference(triton_wq_gemm.gemm(x, packed, split, tile=tile)[0], x, packed.dequantize(torch.float64), dtype)


@pytest.mark.parametrize("tile", [t for t in triton_wq_gemm._GEMM_SPLIT_CONFIGS if t.kwargs["SPLIT_K"] > 1], ids=tile_id)
def test_every_split_gemm_tile(tile):
    """The GEMM's split candidates (16-row tiles, batches up to 16) as a launch runs its autotuner's choice: 2/4/8-bit
    words and 3/5-bit slot groups, every split a step and a remainder, rows and columns not a multiple of the tile."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_N"] * tile.kwargs["SPLIT_K"] + tile.kwargs["BLOCK_K"])
    k = tile.kwargs["SPLIT_K"] * tile.kwargs["BLOCK_K"] + 29
    for name, dtype, m in (("int4-g128-asym", torch.float16, 16), ("int3-g64-sym", torch.bfloat16, 5), ("int8-ch-asym", torch.float16, 2)):
        packed = random_packed(QuantSpec.from_name(name), tile.kwargs["BLOCK_N"] + 7, k, gen)
        x = torch.randn(m, k, generator=gen).to(dtype).to(DEVICE)
        assert_close_to_reference(triton_wq_gemm.gemm(x, packed, None, tile=tile)[0], x, packed.dequantize(torch.float64), dtype)


@pytest.mark.parametrize("tile", triton_w8a8._GEMM_CONFIGS, ids=tile_id)
def test_every_int8_gemm_tile(tile):
    """int32 accumulation is exact, so the only errors are the fp32 rescale and its rounding to fp16."""
    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_M"] + tile.kwargs["BLOCK_N"])
    m, n, k = tile.kwargs["BLOCK_M"] + 3, tile.kwargs["BLOCK_N"] + 5, 2 * tile.kwargs["BLOCK_K"] + 11
    q = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8).to(DEVICE)
    q_scale = (torch.rand(m, generator=gen) + 0.5).to(DEVICE)
    w = Int8Weight(QuantSpec.from_name("int8-ch-sym"), torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8),
                   (torch.rand(n, generator=gen) * 0.01 + 1e-3).half()).to(DEVICE)
    out = torch.empty(m, n, dtype=torch.float16, device=DEVICE)
    triton_w8a8.launch_int8_gemm(q, q_scale, w.qweight, w.scales, out, tile=tile)
    ref = (q.double() @ w.qweight.double().T) * q_scale.double()[:, None] * w.scales.double()[None, :]
    assert ((out.double() - ref).abs() <= 2 * UNIT_ROUNDOFF[torch.float16] * ref.abs() + 1e-6).all()


@pytest.mark.parametrize("tile", triton_w8a8._QUANT_CONFIGS, ids=tile_id)
def test_every_token_quantization_tile(tile):
    """Rows longer than the tile, and a remainder: the same codes and scales as the torch reference."""
    from autoq.kernels.ops import quantize_tokens

    gen = torch.Generator().manual_seed(tile.kwargs["BLOCK_K"])
    x = torch.randn(3, tile.kwargs["BLOCK_K"] * 2 + 13, generator=gen).half().to(DEVICE)
    q = torch.empty(x.shape, dtype=torch.int8, device=DEVICE)
    scale = torch.empty(x.shape[0], dtype=torch.float32, device=DEVICE)
    triton_w8a8.launch_quantize_rows(x, q, scale, tile=tile)
    q_ref, scale_ref = quantize_tokens(x.cpu(), backend="torch")
    assert torch.allclose(scale.cpu(), scale_ref, rtol=1e-6, atol=0)  # a GPU's fp32 division may differ in the last bit
    assert (q.cpu().int() - q_ref.int()).abs().max() <= 1  # so a value at a rounding tie may go either way


@pytest.mark.parametrize("tile", [triton_wq_gemv.gemv_tile(8, 256, 1, half2=True), triton_wq_gemv.gemv_tile(8, 256, 1, prefetch=2, half2=True),
                                  triton_wq_gemv.gemv_tile(16, 1024, 4, half2=True)], ids=tile_id)
def test_half2_tiles_read_no_activation_past_k(tile):
    """K even but not a multiple of 8, with the words filling whole steps (K = 2 steps - 2): the step holding the last,
    partial word is read masked, so the next row's activations (here 1000) never meet the padding codes' ``-zero``."""
    step = step_columns(tile.kwargs["BLOCK_K"], 8)
    k = 2 * step - 2
    gen = torch.Generator().manual_seed(k)
    packed = random_packed(QuantSpec.from_name("int4-ch-sym"), 9, k, gen)
    x = torch.randn(2, k, generator=gen).half()
    x[1, :2] = 1000.0
    x = x.to(DEVICE)
    assert_close_to_reference(triton_wq_gemv.gemv(x, packed, 1, tile=tile)[0], x, packed.dequantize(torch.float64), torch.float16)


def test_half2_launches_copy_activations_that_are_not_4_byte_aligned():
    """A view 2 bytes into a buffer, or rows an odd number of elements apart: the autotuner's key cannot tell them from
    aligned activations, so ``gemv`` copies them first and a HALF2 tile reads the copy."""
    tile = triton_wq_gemv.gemv_tile(8, 256, 1, half2=True)
    gen = torch.Generator().manual_seed(5)
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), 9, 512, gen)
    w64 = packed.dequantize(torch.float64)
    buf = torch.randn(3 * 513 + 1, generator=gen).half().to(DEVICE)
    shifted = buf[1:513]
    assert shifted.data_ptr() % 4 == 2
    assert_close_to_reference(triton_wq_gemv.gemv(shifted[None], packed, 1, tile=tile)[0], shifted[None], w64, torch.float16)
    rows = buf[: 3 * 513].view(3, 513)[:, :512]
    assert rows.stride(0) % 2 == 1
    assert_close_to_reference(triton_wq_gemv.gemv(rows, packed, 1, tile=tile)[0], rows, w64, torch.float16)
    with pytest.raises(AutoqError, match="4-byte aligned"):  # the launcher itself still refuses them
        triton_wq_gemv.launch_gemv(shifted[None], packed.qweight, packed.scales, packed.zeros, torch.empty(1, 9).half().to(DEVICE),
                                   torch.empty(0).to(DEVICE), packed.counters, 1, 4, 8, 32, tile=tile)


def test_half2_tiles_take_activations_near_the_fp16_limit():
    """Packed halves hold ``(code - zero) / 64 * x``, four to a lane before fp32: with activations up to 60000 (fp16's
    limit is 65504) no partial sum overflows, as none does in the fp32 tiles. (Here the interpreter runs the fp32 twin;
    the GPU session's tests step runs the PTX.)"""
    gen = torch.Generator().manual_seed(11)
    for tile in (triton_wq_gemv.gemv_tile(8, 256, 1, half2=True), triton_wq_gemv.gemv_tile(16, 1024, 4, half2=True)):
        k = 2 * step_columns(tile.kwargs["BLOCK_K"], 8)
        for name in ("int4-ch-asym", "int4-g32-sym"):
            packed = random_packed(QuantSpec.from_name(name), 9, k, gen)
            packed.scales.mul_(1e-3)  # outputs stay inside fp16's range
            sign = torch.randint(0, 2, (1, k), generator=gen) * 2 - 1
            x = (sign * (2e4 + 4e4 * torch.rand(1, k, generator=gen))).half().to(DEVICE)
            y = triton_wq_gemv.gemv(x, packed, 1, tile=tile)[0]
            assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)
