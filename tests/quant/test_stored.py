"""`autoq.quant.stored`: the dtype the export gives, and the cost model counts for, every tensor outside the quantized weights."""

from __future__ import annotations

import pytest
import torch

from autoq.quant.stored import stored_dtype, stored_nbytes


@pytest.mark.parametrize(
    ("tensor", "dtype"),
    [
        (torch.randn(16), torch.float16),  # the usual case
        (torch.randn(16, dtype=torch.bfloat16), torch.float16),
        (torch.randn(16).half(), torch.float16),
        (torch.full((4,), 1e6), torch.float32),  # beyond 65504
        (torch.full((2,), 3e38), torch.float32),  # beyond 65504, and the float32 norm overflows too
        (torch.tensor([1e300, 1.0], dtype=torch.float64), torch.float64),
        (torch.full((4,), 2e-8), torch.float32),  # read 0 in fp16
        (torch.full((4,), 1e-5), torch.float32),  # fp16 holds it (subnormal), 0.14% off: more than a normal fp16 value's 0.05% at worst
        (torch.full((4,), 1e-6), torch.float32),  # 1.3% off (a LayerScale gamma, a learned epsilon)
        (torch.full((4,), 7e-5), torch.float16),  # fp16's normal range starts at 6.1e-5: as close as any normal value
        (torch.cat([torch.randn(1000), torch.full((2,), 1e-9)]), torch.float16),  # a few tiny values do not count
        (torch.tensor([0.0, -float("inf")]), torch.float16),  # an attention mask's -inf is fp16's too
        (torch.arange(5), torch.int64),
        (torch.tensor([True, False]), torch.bool),
    ],
)
def test_the_stored_dtype_and_its_bytes(tensor, dtype):
    assert stored_dtype(tensor) == dtype
    assert stored_nbytes(tensor) == tensor.numel() * torch.empty((), dtype=dtype).element_size()
