"""How the GEMV walks K per format (autoq.kernels.gemv_steps): plain arithmetic, checked against the layout."""

from __future__ import annotations

import pytest

from autoq.kernels.gemv_steps import even_k, group_tile, step_columns, words_touched, wordwise
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


def test_even_k():
    assert even_k(4096, 1024) and even_k(4096, 1024, 4) and not even_k(4096, 1024, 8) and not even_k(4100, 1024)
