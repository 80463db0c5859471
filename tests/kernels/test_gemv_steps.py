"""How the kernels walk K per format (autoq.kernels.gemv_steps): plain arithmetic, checked against the layout."""

from __future__ import annotations

import pytest

from autoq.kernels.gemv_steps import even_k, gemm_slot_group, gemm_step_columns, group_tile, step_columns, words_touched, wordwise
from autoq.quant.spec import GROUP_SIZES


def test_wordwise_formats_are_the_power_of_two_codes_per_word():
    assert [cpw for cpw in (16, 10, 8, 6, 5, 4) if wordwise(cpw)] == [16, 8, 4]


@pytest.mark.parametrize("cpw", [10, 6, 5])
@pytest.mark.parametrize("group", GROUP_SIZES)
def test_group_tile_covers_every_word_a_group_touches(cpw: int, group: int):
    """Every group, at every alignment against the words, fits its TW slots, and most slots are its own."""
    tw, ngs = group_tile(1024, cpw, group)
    for g in range(cpw * 4):
        first, last = g * group // cpw, (g * group + group - 1) // cpw
        assert last - first + 1 <= words_touched(cpw, group) <= tw
    assert words_touched(cpw, group) > tw // 2 and tw & (tw - 1) == 0  # the smallest power of two that fits
    assert group / (cpw * tw) >= 0.66
    assert ngs * tw == max(1024 // 8, tw) and step_columns(1024, cpw, group) == ngs * group


def test_whole_word_formats_and_per_channel_step_by_block():
    assert step_columns(1024, 8, 128) == 1024 and step_columns(512, 16, 32) == 512
    assert group_tile(1024, 8, 128) == (0, 0) and group_tile(1024, 10, 0) == (0, 0)
    assert step_columns(1024, 10, 0) == 1280  # 128 whole words


def test_a_block_narrower_than_one_group_still_steps_a_whole_group():
    """A K block of 64 columns holds 8 words, half of the 16 slots a 3-bit group of 128 needs: one group a step, never
    none (a loop that stepped no columns)."""
    assert group_tile(64, 10, 128) == (16, 1) and step_columns(64, 10, 128) == 128


def test_even_k():
    assert even_k(4096, 1024) and even_k(4096, 1024, 4) and not even_k(4096, 1024, 8) and not even_k(4100, 1024)


@pytest.mark.parametrize("cpw", [16, 10, 8, 6, 5, 4])
def test_gemm_slot_groups_are_whole_words_in_a_power_of_two_of_slots(cpw: int):
    """2/4/8 bits: a word a group, no spare slot; 3/5/6 bits: 30 codes in 32 slots. A slot group must not be wider than
    the narrowest scale group: the GEMM lets each touch at most two."""
    words, slots = gemm_slot_group(cpw)
    codes = words * cpw
    assert slots & (slots - 1) == 0 and codes <= slots
    assert (words, slots - codes) == ((1, 0) if wordwise(cpw) else (30 // cpw, 2))
    assert codes <= min(GROUP_SIZES)
    assert gemm_step_columns(128, cpw) == 128 // slots * codes


def test_gemm_steps_in_columns():
    assert gemm_step_columns(64, 8) == 64 and gemm_step_columns(32, 16) == 32
    assert gemm_step_columns(64, 10) == 60 and gemm_step_columns(128, 6) == 120 and gemm_step_columns(32, 5) == 30
