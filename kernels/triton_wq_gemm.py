"""The weight-only tiled GEMM in Triton: ``y = x @ dequant(W).T`` for packed W2-W8 at batches above 1.

Imported only when a kernel runs (it imports Triton). It reads the layout of :mod:`autoq.kernels.formats`
and dequantizes in registers; ``w = scale * (code - zero)``.

Tiled ``BLOCK_M x BLOCK_N`` with ``tl.dot`` on fp16/bf16 operands and fp32 accumulation, grouped
program order for L2 reuse; codes are unpacked to a tile, a shift and a mask each, in the thread that
loaded their word, and dequantized in fp16 through the bits of ``1024 + code`` (``_dequant``); scales
come once per row of a tile when a group spans the K block. Its ``BLOCK_K`` counts slots: a 2/4/8-bit
word fills as many slots as it has codes, three, five or six 3/5/6-bit words (30 codes) fill 32, and
the activations of the 2 spare slots are masked to 0 (``_codes_nk``). At batches up to 16 it can split
K, as the GEMV does: fp32 partial sums that the last split of each tile adds (:func:`autoq.kernels.splits.store_split`).

On a GPU it is autotuned per (batch bucket, N, K, format), the split over K with the tile (or per split,
where the caller names one); under ``TRITON_INTERPRET=1`` (or with ``AUTOQ_AUTOTUNE=0``) one large-block
configuration (``FIXED_GEMM``) is used directly, split as :func:`autoq.kernels.ops.gemm_split_k_for` says.
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl

from autoq.kernels.capability import interpreting
from autoq.kernels.gemv_steps import even_k, gemm_slot_group, gemm_step_columns, wordwise
from autoq.kernels.ops import GEMM_MIN_BLOCK_M
from autoq.kernels.splits import SPLITS, resolved_split, run_split, splits_of, store_split, with_split
from autoq.kernels.tiles import autotune_bench, batch_bucket, launch_tile, prune_gemm_configs, tile_offsets
from autoq.kernels.triton_scales import scale_row_stride, scale_zero_cols, scale_zero_rows


@triton.jit
def _spread_codes(words, FIRST: tl.constexpr, STRIDE: tl.constexpr, COUNT: tl.constexpr, BITS: tl.constexpr, CPW: tl.constexpr,
                  CODES: tl.constexpr):
    """Codes ``FIRST, FIRST + STRIDE, ...`` (``COUNT``, a power of two) of every slot group, along new trailing dims of
    size 2 whose flattened index is the code's slot: joined pairwise, each thread keeps its words' codes in its own
    registers. ``words`` holds the group's word tiles in order; slot ``s`` is code ``s % CPW`` of word ``s // CPW``,
    and slots from ``CODES`` on (2 of 32 for 3/5/6 bits) are code 0."""
    if COUNT == 1:
        if FIRST < CODES:
            out = (words[FIRST // CPW] >> ((FIRST % CPW) * BITS)) & ((1 << BITS) - 1)
        else:
            out = tl.zeros_like(words[0])
    else:
        even = _spread_codes(words, FIRST, 2 * STRIDE, COUNT // 2, BITS, CPW, CODES)
        odd = _spread_codes(words, FIRST + STRIDE, 2 * STRIDE, COUNT // 2, BITS, CPW, CODES)
        out = tl.join(even, odd)
    return out


@triton.jit
def _slot_columns(k0, K, SG_CODES: tl.constexpr, SG_SLOTS: tl.constexpr, BLOCK_K: tl.constexpr):
    """The GEMM step's ``BLOCK_K`` slots (slot groups of ``SG_SLOTS`` slots holding ``SG_CODES`` columns, from column
    ``k0``): their columns and whether each holds a column of K. Without spare slots they are ``k0 + arange``."""
    s = tl.arange(0, BLOCK_K)
    if SG_SLOTS == SG_CODES:
        cols = k0 + s
        live = cols < K
    else:
        cols = k0 + (s // SG_SLOTS) * SG_CODES + s % SG_SLOTS
        live = (s % SG_SLOTS < SG_CODES) & (cols < K)
    return cols, live


@triton.jit
def _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, R: tl.constexpr, SG_WORDS: tl.constexpr, EVEN_K: tl.constexpr):
    """Word ``R`` of every slot group (``first``: each group's first word) ``(BLOCK_N, groups)``; a dummy past ``SG_WORDS``."""
    if R < SG_WORDS:
        offs_w = first + R
        if EVEN_K:
            w_mask = n_mask[:, None]
        else:
            w_mask = n_mask[:, None] & (offs_w < n_words)[None, :]
        out = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :], mask=w_mask, other=0)
    else:
        out = tl.zeros([1, 1], dtype=tl.int32)
    return out


@triton.jit
def _codes_nk(w_ptr, offs_n, w0, n_mask, n_words, stride_wn, BITS: tl.constexpr, CPW: tl.constexpr, SG_WORDS: tl.constexpr,
              SG_SLOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """Integer codes ``(BLOCK_N, BLOCK_K)`` (int32) of the ``BLOCK_K // SG_SLOTS`` slot groups from word ``w0``, slot by slot.

    A slot group is one word of 2/4/8-bit codes, or ``SG_WORDS`` words of 3/5/6-bit codes (3, 5 or 6 words:
    30 codes in 32 slots). Each word is loaded once and spread into its codes in the loading thread's
    registers (``_spread_codes``). A reshape of the shifted ``(BLOCK_N, words, CPW)`` tile went through shared
    memory (8.3 instructions a weight for int4 in the sm_90 SASS, now 4.9); gathering each column's word, as
    3/5/6 bits did, cost 10.3 for int3 per channel at batch 16 (17.2 with Triton 3.6), now 6.9 (9.5).
    ``EVEN_K``: the step lies inside K, so the load is masked by row alone and each thread's 2/4/8-bit words
    load as one vector.
    """
    first = w0 + tl.arange(0, BLOCK_K // SG_SLOTS) * SG_WORDS
    # a tuple of the most words a slot group has (6-bit: 6); the ones past SG_WORDS are never read
    words = (_word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 0, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 1, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 2, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 3, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 4, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 5, SG_WORDS, EVEN_K))
    return tl.reshape(_spread_codes(words, 0, 1, SG_SLOTS, BITS, CPW, SG_WORDS * CPW), [BLOCK_N, BLOCK_K])


@triton.jit
def _dtype_params(scale, zero, HALF: tl.constexpr):
    """fp32 ``scale`` and ``zero`` as :func:`_dequant_with` takes them: fp16 ``scale`` and ``1024 + zero``, else as given."""
    if HALF:
        return scale.to(tl.float16), (zero + 1024.0).to(tl.float16)
    else:
        return scale, zero


@triton.jit
def _dequant_with(codes, scale, zero, HALF: tl.constexpr):
    """``scale * (code - zero)`` of integer codes in the activation dtype, ``scale`` and ``zero`` from :func:`_dtype_params`.

    fp16 (``HALF``): ``code | 0x6400`` is the fp16 ``1024 + code``, so ``(1024 + code) - (1024 + zero)`` is
    exact and one fp16 multiply rounds the product once, as the fp32 product rounded to fp16 would be,
    without an int-to-float conversion and with two weights an instruction. bf16 (8-bit significand)
    cannot hold ``128 + code`` for 8-bit codes, so it computes in fp32.
    """
    if HALF:
        w = ((codes | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - zero) * scale
    else:
        w = ((codes.to(tl.float32) - zero) * scale).to(tl.bfloat16)
    return w


@triton.jit
def _dequant(codes, scale, zero, HALF: tl.constexpr):
    """``scale * (code - zero)`` of integer codes, fp32 ``scale`` and ``zero`` broadcast as given, in the activation dtype."""
    scale, zero = _dtype_params(scale, zero, HALF)
    return _dequant_with(codes, scale, zero, HALF)


@triton.jit
def _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, k_limit, stride_sn, stride_sg, BITS: tl.constexpr,
                    GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HALF: tl.constexpr):
    """Dequantized ``(BLOCK_N, BLOCK_K)`` tile of a 2/4/8-bit group format (GROUP > 0), in the activation dtype.

    A group at least as wide as the block gives one (scale, zero) per row; narrower groups
    (a power of two dividing BLOCK_K) view the tile as ``(BLOCK_N, BLOCK_K // GROUP, GROUP)``.
    """
    if GROUP % BLOCK_K == 0:
        scale, zero = scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, k0 // GROUP, stride_sn, stride_sg, BITS, HAS_ZEROS)
        w = _dequant(codes, scale[:, None], zero[:, None], HALF)
    else:
        g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
        scale, zero = scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g * GROUP < k_limit, stride_sn, stride_sg, BITS, HAS_ZEROS)
        grouped = tl.reshape(codes, [BLOCK_N, BLOCK_K // GROUP, GROUP])
        w = tl.reshape(_dequant(grouped, scale[:, :, None], zero[:, :, None], HALF), [BLOCK_N, BLOCK_K])
    return w


@triton.jit
def _dequant_straddling(codes, s_ptr, z_ptr, offs_n, n_mask, k0, k_limit, stride_sn, stride_sg, BITS: tl.constexpr,
                        GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, SG_CODES: tl.constexpr, SG_SLOTS: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HALF: tl.constexpr):
    """Dequantized slots ``(BLOCK_N, BLOCK_K)`` of a 3/5/6-bit group format, whose slot groups can straddle scale groups.

    A slot group holds 30 columns and a scale group at least 32, so each slot group touches at most two:
    the one holding its first column (``lo``) and the next. Both groups' scales and zeros are loaded per row
    and slot group, in the dtype the dequantization uses, and each slot selects its own: a select a weight
    for each. (A dot a scale group, on the other group's activations masked to 0, dequantizes every slot twice
    and costs more: 15.9 instructions a weight for int3 g64 in a 16 x 128 x 32 tile of the sm_90 SASS, against 13.3.)
    """
    NSG: tl.constexpr = BLOCK_K // SG_SLOTS
    first = k0 + tl.arange(0, NSG) * SG_CODES  # each slot group's first column
    lo = first // GROUP
    s_lo, z_lo = _dtype_params(*scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, lo, lo * GROUP < k_limit, stride_sn, stride_sg,
                                                 BITS, HAS_ZEROS), HALF)
    s_hi, z_hi = _dtype_params(*scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, lo + 1, (lo + 1) * GROUP < k_limit, stride_sn,
                                                 stride_sg, BITS, HAS_ZEROS), HALF)
    # slot t is in the next scale group from t = (lo + 1) * GROUP - first on: one offset a slot group, not a column a slot
    later = (tl.arange(0, SG_SLOTS)[None, :] >= ((lo + 1) * GROUP - first)[:, None])[None, :, :]
    scale = tl.where(later, s_hi[:, :, None], s_lo[:, :, None])
    zero = tl.where(later, z_hi[:, :, None], z_lo[:, :, None])
    w = _dequant_with(tl.reshape(codes, [BLOCK_N, NSG, SG_SLOTS]), scale, zero, HALF)
    return tl.reshape(w, [BLOCK_N, BLOCK_K])


@triton.jit
def wq_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, part_ptr, count_ptr, M, N, K, M_BUCKET, stride_xm, stride_wn, stride_sn, stride_sg, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, DOT_FP32: tl.constexpr,
                   SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, SG_WORDS: tl.constexpr, SG_SLOTS: tl.constexpr, STEP: tl.constexpr):
    """One program: a ``BLOCK_M x BLOCK_N`` output tile over one of ``SPLIT_K`` ranges of K, whole steps each (a split
    writes fp32 partial sums to ``part_ptr``, one ``(M, N)`` slice laid out as the output, added by the last split, as the
    GEMV's are). ``SG_WORDS`` words fill a slot group of ``SG_SLOTS``
    slots (:func:`autoq.kernels.gemv_steps.gemm_slot_group`), and a step covers ``STEP`` columns of K
    (:func:`autoq.kernels.gemv_steps.gemm_step_columns`)."""
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    HALF: tl.constexpr = x_ptr.dtype.element_ty == tl.float16  # else bf16
    SG_CODES: tl.constexpr = SG_WORDS * CPW  # the columns a slot group holds
    n_words = tl.cdiv(K, CPW)
    if SPLIT_K == 1:  # plain bounds: a loop from 0 pipelines better (int4 per channel, 16 x 128 x 64: 5.67, not 6.02)
        k_begin = 0
        k_end = K
    else:
        k_per_split = tl.cdiv(tl.cdiv(K, STEP), SPLIT_K) * STEP
        k_begin = tl.program_id(1) * k_per_split
        k_end = tl.minimum(k_begin + k_per_split, K)
    if GROUP == 0:
        scale, zero = scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
    for k0 in range(k_begin, k_end, STEP):
        cols, live = _slot_columns(k0, K, SG_CODES, SG_SLOTS, BLOCK_K)
        if EVEN_K and WORDWISE:  # 3/5/6 bits always mask: 2 slots of 32 are spare
            x_mask = m_mask[:, None]
        else:
            x_mask = m_mask[:, None] & live[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :], mask=x_mask, other=0.0)
        codes = _codes_nk(w_ptr, offs_n, k0 // CPW, n_mask, n_words, stride_wn, BITS, CPW, SG_WORDS, SG_SLOTS, BLOCK_N, BLOCK_K, EVEN_K)
        if GROUP == 0:
            w = _dequant(codes, scale[:, None], zero[:, None], HALF)
        elif WORDWISE:
            w = _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, K, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS, BLOCK_N, BLOCK_K, HALF)
        else:
            w = _dequant_straddling(codes, s_ptr, z_ptr, offs_n, n_mask, k0, K, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS,
                                    SG_CODES, SG_SLOTS, BLOCK_N, BLOCK_K, HALF)
        if DOT_FP32:  # the interpreter: fp32 operands (the weights are already rounded to the activation dtype)
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
        else:
            acc += tl.dot(x, tl.trans(w))
    store_split(acc, out_ptr, part_ptr, count_ptr, offs_m[:, None] * stride_om + offs_n[None, :], m_mask[:, None] & n_mask[None, :],
                M * stride_om, tl.program_id(0), SPLIT_K)


# One configuration when not autotuning (see ``autotuning``): a large block keeps the number of programs and
# loop steps small under the interpreter, and it is a valid tile on any GPU.
FIXED_GEMM = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}

# The two smaller 16-row tiles were added when 3/5/6-bit codes were gathered column by column and every other 16-row
# tile spilled. With slot groups none does, and neither has the fewest instructions a weight for any format
# (16 x 128 x 64 or 16 x 64 x 128 has; benchmarks/gemm_sass.py). They stay as candidates: more programs for narrow layers.
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 3), (16, 128, 64, 4, 4), (16, 64, 64, 4, 3), (16, 128, 32, 4, 4),
                             (32, 64, 128, 4, 3), (32, 128, 64, 4, 4), (64, 64, 64, 4, 4), (64, 128, 64, 4, 3),
                             (64, 128, 32, 4, 4), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 256, 64, 8, 3)]
]


_GEMM_STEPS = {  # constexprs of how the GEMM walks K (see gemv_steps)
    "STEP": lambda a: gemm_step_columns(a["BLOCK_K"], a["CPW"]),
    "EVEN_K": lambda a: even_k(a["K"], gemm_step_columns(a["BLOCK_K"], a["CPW"]), a["SPLIT_K"]),
    "SG_WORDS": lambda a: gemm_slot_group(a["CPW"])[0],
    "SG_SLOTS": lambda a: gemm_slot_group(a["CPW"])[1],
}

# The autotuner that also chooses the split over K (what launches use on a GPU): every tile whole, and the 16-row tiles
# (the only ones batches up to 16 keep) split 2, 4 and 8 ways where each split keeps a whole step (prune_gemm_splits);
# ops.gemm_split_k_for, a rule written without a GPU, splits only where it does not autotune.
_GEMM_SPLIT_CONFIGS = [with_split(c, 1) for c in _GEMM_CONFIGS]
_GEMM_SPLIT_CONFIGS += [with_split(c, split) for c in _GEMM_CONFIGS if c.kwargs["BLOCK_M"] == GEMM_MIN_BLOCK_M for split in SPLITS]


def prune_gemm_splits(configs, named_args, **kwargs):
    """:func:`autoq.kernels.tiles.prune_gemm_configs`, and split tiles only for batches up to 16 (larger ones reuse
    each weight more and need more partial sums) where each split gets a whole step of K."""
    small = named_args["M_BUCKET"] <= GEMM_MIN_BLOCK_M

    def fits(c) -> bool:
        split = c.kwargs.get("SPLIT_K", 1)
        return split == 1 or (small and split * gemm_step_columns(c.kwargs["BLOCK_K"], kwargs["CPW"]) <= named_args["K"])

    return prune_gemm_configs([c for c in configs if fits(c)], named_args)


@functools.cache
def gemm_splits(m_bucket: int, k: int, cpw: int) -> tuple[int, ...]:
    """The splits over K (more than 1) the split-choosing autotuner may pick for a batch bucket and rows of ``k`` columns."""
    return splits_of(prune_gemm_splits(_GEMM_SPLIT_CONFIGS, {"M_BUCKET": m_bucket, "K": k}, CPW=cpw))


_gemm_heuristic = triton.heuristics(_GEMM_STEPS)(wq_gemm_kernel)
_gemm_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=["M_BUCKET", "N", "K", "SPLIT_K", "BITS", "GROUP", "HAS_ZEROS"],
                              prune_configs_by={"early_config_prune": prune_gemm_configs}, do_bench=autotune_bench)(_gemm_heuristic)
_gemm_split_tuned = triton.autotune(configs=_GEMM_SPLIT_CONFIGS, key=["M_BUCKET", "N", "K", "BITS", "GROUP", "HAS_ZEROS"],
                                    prune_configs_by={"early_config_prune": prune_gemm_splits}, do_bench=autotune_bench)(_gemm_heuristic)


def launch_gemm(x, qweight, scales, zeros, out, part, counters, split_k: int | None, bits: int, cpw: int, group: int,
                compile_only: bool = False, tile: triton.Config | None = None) -> list:
    """Run the tiled GEMM kernel into ``out`` ``(M, N)``, split over K through ``part`` and ``counters`` (one per output
    tile: ``ceil(M / 16) * N`` always suffice); ``split_k``
    (``None``: the autotuner chooses it with the tile), ``tile`` and ``compile_only`` as for
    :func:`autoq.kernels.triton_wq_gemv.launch_gemv`."""
    m, k = x.shape
    n = qweight.shape[0]
    args = (x, qweight, scales, scales if zeros is None else zeros, out, part, counters, m, n, k, batch_bucket(m), x.stride(0), qweight.stride(0),
            scale_row_stride(scales), scales.stride(1), out.stride(-2))
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=wordwise(cpw),
                DOT_FP32=interpreting())  # numpy computes the interpreter's dot: same products, fp32 operands (see the kernel)
    if split_k is not None:
        meta["SPLIT_K"] = split_k
    tuned = _gemm_tuned if split_k is not None else _gemm_split_tuned
    grid = lambda c: (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]), c["SPLIT_K"])  # noqa: E731
    return launch_tile(tuned, wq_gemm_kernel, FIXED_GEMM, tile, grid, args, meta, compile_only, _GEMM_STEPS, {"K": k})


def gemm(x, w, split_k: int | None = 1, compile_only: bool = False, tile: triton.Config | None = None) -> tuple:
    """``x @ dequant(w).T`` by the tiled GEMM for a ``PackedWeight`` ``w``: ``(out, compiled kernels)``; splits over K
    as :func:`autoq.kernels.triton_wq_gemv.gemv` does (``split_k=None``: the autotuner chooses, or the tile says)."""
    m, n = x.shape[0], w.shape[0]
    split = resolved_split(split_k, tile)
    splits = gemm_splits(batch_bucket(m), w.shape[1], w.codes_per_word) if split is None else (split,)

    def launch(out, part, counters):
        return launch_gemm(x, w.qweight, w.scales, w.zeros, out, part, counters, split, w.bits, w.codes_per_word, w.group_size,
                           compile_only, tile)

    return run_split(launch, m, n, x.dtype, x.device, splits, triton.cdiv(m, GEMM_MIN_BLOCK_M), w.counters)
