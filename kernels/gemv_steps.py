"""How the weight-only kernels walk K for each packed format: plain Python, shared by the kernels' launchers,
their autotuner hooks and the compile check (none of which should disagree about a K step).

The GEMM spreads words into slot groups whose slots are a power of two (``gemm_slot_group``), so its
``BLOCK_K`` counts slots: ``gemm_step_columns`` columns of K a step. The GEMV has two ways, chosen
per format (see ``autoq.kernels.triton_wq_gemv``):

* whole words (2/4/8 bits, where groups are whole words, and every width per channel): ``BLOCK_K``
  columns a step for 2/4/8 bits, ``BLOCK_K // 8`` whole words for 3/5/6 bits;
* group by group (3/5/6 bits in groups, whose words can straddle two groups): ``NGS`` groups a step,
  each read as the ``TW`` words it touches (the power of two covering ``words_touched``); for the
  group sizes autoq offers, 67-80% of those slots hold the group's own codes.
"""

from __future__ import annotations


def wordwise(cpw: int) -> bool:
    """Whether the codes per word are a power of two (2/4/8 bits): groups and K blocks are then whole words."""
    return cpw & (cpw - 1) == 0


def words_touched(cpw: int, group: int) -> int:
    """The most words one group touches: group ``g`` starts at column ``g * group``, word ``g * group // cpw``."""
    return max((start % cpw + group - 1) // cpw + 1 for start in range(0, cpw * group, group))


def group_tile(block_k: int, cpw: int, group: int) -> tuple[int, int]:
    """``(TW, NGS)`` when the GEMV reads a 3/5/6-bit group format group by group, else ``(0, 0)``."""
    if wordwise(cpw) or group == 0:
        return 0, 0
    tw = 1 << (words_touched(cpw, group) - 1).bit_length()
    return tw, max(1, block_k // 8 // tw)


def step_constexprs(block_k: int, cpw: int, group: int) -> dict[str, int]:
    """The GEMV's constexprs for its K step: ``STEP`` words (whole-word path), ``TW`` and ``NGS`` (group path)."""
    tw, groups = group_tile(block_k, cpw, group)
    return {"STEP": block_k // cpw if wordwise(cpw) else block_k // 8, "TW": tw, "NGS": groups}


def step_columns(block_k: int, cpw: int, group: int = 0) -> int:
    """Columns of K the GEMV covers per step of its loop (splits of K are whole steps)."""
    steps = step_constexprs(block_k, cpw, group)
    return steps["NGS"] * group if steps["TW"] else steps["STEP"] * cpw


def gemm_slot_group(cpw: int) -> tuple[int, int]:
    """``(words, slots)`` of the GEMM's slot group: one word of 2/4/8-bit codes in as many slots, or the 3/5/6
    words of 3/5/6-bit codes (30 codes) in 32 slots, the last 2 spare."""
    return (1, cpw) if wordwise(cpw) else (30 // cpw, 32)


def gemm_step_columns(block_k: int, cpw: int) -> int:
    """Columns of K the GEMM covers per step: ``block_k`` slots, ``block_k // slots`` slot groups."""
    words, slots = gemm_slot_group(cpw)
    return block_k // slots * words * cpw


def even_k(k: int, step: int, split_k: int = 1) -> bool:
    """Whether every K split is whole steps of ``step`` columns: then no load needs a mask along K."""
    return k % (step * split_k) == 0
