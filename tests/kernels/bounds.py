"""Loads the interpreter checks against the launch's own tensors: where a kernel reads outside them.

An out-of-range load whose value a kernel discards (a prefetch past the last step, say) changes no result, so a
float64 comparison cannot see it; on a GPU it may fault or read another allocation. Under ``TRITON_INTERPRET=1``
:func:`checked_loads` records every launch's tensor arguments (their elements' byte ranges, not their storages)
and every address a load reads where its mask holds, and collects those outside all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


@contextlib.contextmanager
def checked_loads() -> Iterator[list[str]]:
    """Inside, every interpreted load is checked; yields the list of violations found (one line each), empty if none.

    Patches two internals of ``triton.runtime.interpreter`` (the launch's host arguments and the masked load), both
    present in the Triton versions autoq supports; a test that uses this fails, rather than passes, if they move."""
    from triton.runtime import interpreter

    ranges: list[tuple[int, int]] = []
    violations: list[str] = []
    init_args, masked_load = interpreter.GridExecutor._init_args_hst, interpreter.InterpreterBuilder.create_masked_load

    def init(self, args_dev, kwargs):
        args, kw = init_args(self, args_dev, kwargs)
        ranges[:] = [_byte_range(t) for t in [*args, *kw.values()] if isinstance(t, torch.Tensor) and t.numel()]
        return args, kw

    def load(self, ptrs, mask, *rest, **kwargs):
        addresses = np.asarray(ptrs.data).astype(np.uint64)
        wanted = addresses if mask is None else addresses[np.broadcast_to(np.asarray(mask.data), addresses.shape)]
        size = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
        inside = np.zeros(wanted.shape, dtype=bool)
        for lo, hi in ranges:
            inside |= (wanted >= lo) & (wanted + size <= hi)
        if not inside.all():
            violations.append(f"{int((~inside).sum())} of {wanted.size} reads outside the launch's tensors, first at "
                              f"{hex(int(wanted[~inside][0]))}; tensors at {[(hex(lo), hex(hi)) for lo, hi in ranges]}")
        return masked_load(self, ptrs, mask, *rest, **kwargs)

    interpreter.GridExecutor._init_args_hst, interpreter.InterpreterBuilder.create_masked_load = init, load
    try:
        yield violations
    finally:
        interpreter.GridExecutor._init_args_hst, interpreter.InterpreterBuilder.create_masked_load = init_args, masked_load
