"""The HALF2 tiles' inline PTX (``kernels/triton_half2.py``), run by a numpy emulator of its instructions (``ptx_emu``).

The interpreter runs the tiles' integer-and-fp32 twin instead of the PTX, and CI has no GPU, so these tests are
where the assembly itself (its constants, its code order, its pairing of activations, its rounding) is checked
on every run: exactly where the result is exact, within the kernel tests' fp16 bound where it rounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from ptx_emu import run_ptx

pytest.importorskip("triton")

from autoq.kernels import triton_half2  # noqa: E402  (after the skip: imports Triton)

UNIT = 2.0**-11  # fp16 unit roundoff


def f16_bits(values) -> np.ndarray:
    return np.asarray(values, np.float64).astype(np.float16).view(np.uint16).astype(np.uint32)


def halves(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ((bits & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64),
            (bits >> 16).astype(np.uint16).view(np.float16).astype(np.float64))


def word_dots(words: np.ndarray, zeros: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The PTX's ``sum_j (code_j - zero) / 64 * x_j`` (float32) for words ``(n,)``, zeros ``(n,)`` and activations ``(n, 8)``."""
    nz, nzh = run_ptx(triton_half2._ZERO_ASM.value, 2, [f16_bits(zeros)])
    xb = f16_bits(x)
    pairs = [xb[:, 2 * i] | (xb[:, 2 * i + 1] << 16) for i in range(4)]  # (x0, x1) .. (x6, x7), as the kernel loads them
    regrouped = run_ptx(triton_half2._PAIR_ASM.value, 4, pairs)
    (dots,) = run_ptx(triton_half2._DOT_ASM.value, 1, [words, nz, nzh, *regrouped])
    return dots.view(np.float32).astype(np.float64)


def codes(words: np.ndarray) -> np.ndarray:
    return np.stack([(words.astype(np.int64) >> (4 * j)) & 15 for j in range(8)], axis=1).astype(np.float64)


def test_the_zero_pairs_are_exact_for_every_integer_zero_and_the_symmetric_constants_are_zero_8s():
    zeros = np.arange(256)
    even, odd = run_ptx(triton_half2._ZERO_ASM.value, 2, [f16_bits(zeros)])
    lo, hi = halves(even)
    assert np.array_equal(lo, -(16 + zeros / 64)) and np.array_equal(hi, lo)
    lo, hi = halves(odd)
    assert np.array_equal(lo, -(1 + zeros / 64)) and np.array_equal(hi, lo)
    even8, odd8 = run_ptx(triton_half2._ZERO_ASM.value, 2, [f16_bits([8])])
    assert int(even8[0]) == triton_half2.SYMMETRIC_NZ.value & 0xFFFFFFFF
    assert int(odd8[0]) == triton_half2.SYMMETRIC_NZH.value & 0xFFFFFFFF


def test_each_code_comes_out_as_code_minus_zero_over_64_in_its_slot():
    """One activation 1 and the rest 0: the dot is that slot's ``(code - zero) / 64``, exactly, for every code in every slot."""
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32)
    words[:16] = np.arange(16, dtype=np.uint32) * 0x11111111  # every code in every slot
    zeros = rng.integers(0, 16, words.size).astype(np.float64)
    for j in range(8):
        x = np.zeros((words.size, 8))
        x[:, j] = 1.0
        assert np.array_equal(word_dots(words, zeros, x), (codes(words)[:, j] - zeros) / 64), j


@pytest.mark.parametrize(("label", "scale"), [("N(0, 3)", 3.0), ("N(0, 0.05)", 0.05), ("near fp16's limit", None)])
def test_a_words_dot_stays_within_the_kernel_tests_fp16_bound(label, scale):
    """Random words, zeros and activations: within 2.5 fp16 roundoffs of the word's ``sum |terms|`` (2.1 seen; the kernel
    tests allow four), and finite even with activations up to 60000 (four products of 15 / 64 * 60000 a lane)."""
    rng = np.random.default_rng(1)
    n = 20000
    words = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    zeros = rng.integers(0, 16, n).astype(np.float64)
    if scale is None:
        x = rng.choice([-1.0, 1.0], (n, 8)) * rng.uniform(2e4, 6e4, (n, 8))
    else:
        x = scale * rng.standard_normal((n, 8))
    x = x.astype(np.float16).astype(np.float64)
    terms = (codes(words) - zeros[:, None]) / 64 * x
    got = word_dots(words, zeros, x)
    assert np.isfinite(got).all(), label
    assert (np.abs(got - terms.sum(axis=1)) <= 2.5 * UNIT * np.abs(terms).sum(axis=1)).all(), label
