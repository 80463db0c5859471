"""Triton kernels against a float64 reference (run through Triton's interpreter on CPU; see conftest.py).

Error bounds are those of ``kernel_cases.assert_close_to_reference`` (fp16/bf16 operands). Shapes are
chosen not to be multiples of any block, word or group.
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_cases import DEVICE, UNIT_ROUNDOFF, assert_close_to_reference, random_packed

from autoq.errors import AutoqError
from autoq.kernels.capability import autotuning
from autoq.kernels.formats import KERNEL_BITS, PACKED_BITS, Int8Weight, PackedWeight
from autoq.kernels.ops import gemm_split_k_for, int8_matmul, quantize_tokens, sm_count, split_k_for, w8a8_linear, wq_linear
from autoq.quant import QuantSpec, quantize

GRANULARITIES = [("tensor", None), ("channel", None), ("group", 32), ("group", 64), ("group", 128)]
N, K = 72, 203  # 72 = 64 + 8 outputs; 203 leaves a partial K block, word and group for every format


def spec_id(spec: QuantSpec) -> str:
    return spec.name


ALL_WEIGHT_ONLY = [QuantSpec(b, g, s, sym) for b in KERNEL_BITS for g, s in GRANULARITIES for sym in (False, True)]


@pytest.mark.parametrize("spec", ALL_WEIGHT_ONLY, ids=spec_id)
def test_weight_only_kernels_every_format(spec: QuantSpec):
    """GEMV (batch 1, with and without split-K; batch 3) and GEMM (batch 5 and 37) on fp16 activations."""
    gen = torch.Generator().manual_seed(hash(spec.name) % 2**31)
    packed = random_packed(spec, N, K, gen)
    w64 = packed.dequantize(torch.float64)
    for m, kernel, split in [(1, "gemv", 1), (1, "gemv", 2), (3, "gemv", 1), (5, "gemm", None), (37, "gemm", None)]:
        x = torch.randn(m, K, generator=gen).half().to(DEVICE)
        y = wq_linear(x, packed, backend="triton", kernel=kernel, split_k=split)
        assert_close_to_reference(y, x, w64, torch.float16)


@pytest.mark.parametrize("bits", sorted(set(PACKED_BITS) - set(KERNEL_BITS)))
def test_weight_only_kernels_other_bit_widths(bits: int):
    gen = torch.Generator().manual_seed(bits)
    packed = random_packed(QuantSpec(bits, "group", 64), N, K, gen)
    for m in (1, 9):
        x = torch.randn(m, K, generator=gen).half().to(DEVICE)
        assert_close_to_reference(wq_linear(x, packed, backend="triton"), x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.parametrize("name", ["int4-g128-asym", "int3-g32-sym", "int8-ch-asym"])
def test_weight_only_kernels_bf16(name: str):
    gen = torch.Generator().manual_seed(7)
    packed = random_packed(QuantSpec.from_name(name), N, K, gen)
    for m in (1, 20):
        x = torch.randn(m, K, generator=gen).bfloat16().to(DEVICE)
        assert_close_to_reference(wq_linear(x, packed, backend="triton"), x, packed.dequantize(torch.float64), torch.bfloat16)


@pytest.mark.parametrize("n,k", [(5, 19), (130, 64), (33, 300)])
def test_weight_only_small_and_ragged_shapes(n: int, k: int):
    """Shapes smaller than one block, exactly one K block, and several K blocks with a remainder."""
    gen = torch.Generator().manual_seed(n * k)
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), n, k, gen)
    for m in (1, 17):
        x = torch.randn(m, k, generator=gen).half().to(DEVICE)
        assert_close_to_reference(wq_linear(x, packed, backend="triton"), x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.parametrize("name", ["int4-g128-asym", "int2-ch-sym", "int8-g32-asym", "int3-g64-asym", "int3-ch-sym", "int4-tensor-sym"])
def test_weight_only_when_k_is_whole_blocks(name: str):
    """K a multiple of the K step (and of the step * split): the unmasked, vector-load path along K (EVEN_K)."""
    from autoq.kernels.gemv_steps import even_k, gemm_step_columns, step_columns
    from autoq.kernels.triton_wq_gemm import FIXED_GEMM
    from autoq.kernels.triton_wq_gemv import FIXED_GEMV

    spec = QuantSpec.from_name(name)
    step = step_columns(FIXED_GEMV["BLOCK_K"], 32 // spec.bits, spec.group_size or 0)
    gemm_step = gemm_step_columns(FIXED_GEMM["BLOCK_K"], 32 // spec.bits)
    k = 2 * math.lcm(step, gemm_step)
    assert even_k(k, step, 2) and even_k(k, gemm_step) and not even_k(k + 8, step)
    gen = torch.Generator().manual_seed(len(name))
    packed = random_packed(spec, 70, k, gen)
    for m, kernel, split in [(1, "gemv", 1), (1, "gemv", 2), (6, "gemm", None)]:
        x = torch.randn(m, k, generator=gen).half().to(DEVICE)
        y = wq_linear(x, packed, backend="triton", kernel=kernel, split_k=split)
        assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.parametrize("name", ["int3-g32-asym", "int5-g64-sym", "int6-g128-asym", "int3-ch-asym", "int5-ch-sym", "int6-tensor-sym"])
def test_gemm_slot_groups_across_scale_groups(name: str):
    """The GEMM reads 3/5/6-bit words in slot groups of 30 columns (3, 5 or 6 words) that straddle scale groups of
    32-128: K ending inside a slot group and inside a word, one column past a scale group, exactly whole steps
    (4 slot groups, 120 columns, in the fixed tile), and a single partial step; fp16 and bf16."""
    spec = QuantSpec.from_name(name)
    gen = torch.Generator().manual_seed(len(name) * spec.bits)
    for k in (257, 240, 97, 23):
        packed = random_packed(spec, 37, k, gen)
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.randn(9, k, generator=gen).to(dtype).to(DEVICE)
            y = wq_linear(x, packed, backend="triton", kernel="gemm")
            assert_close_to_reference(y, x, packed.dequantize(torch.float64), dtype)


@pytest.mark.parametrize("name,k", [("int3-g128-asym", 257), ("int5-g32-sym", 33), ("int4-g32-asym", 65), ("int6-g64-asym", 129)])
def test_gemv_last_group_holds_one_column(name: str, k: int):
    """K one past a group boundary: the last group is a single column, inside a word that starts in the group before."""
    gen = torch.Generator().manual_seed(k)
    packed = random_packed(QuantSpec.from_name(name), 19, k, gen)
    x = torch.randn(1, k, generator=gen).half().to(DEVICE)
    for split in (1, 2):
        y = wq_linear(x, packed, backend="triton", kernel="gemv", split_k=split)
        assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


@pytest.mark.parametrize("name", ["int4-ch-asym", "int8-g128-asym", "int3-ch-sym", "int2-g32-asym"])
def test_gemv_long_rows_of_positive_activations(name: str):
    """The GEMV sums ``2**bits * sum m * x - (2**bits + zero) * sum x`` (m = 1 + code / 2**bits): with x >= 0
    (after ReLU/GELU) and long rows the two terms are large and nearly cancel; the result must keep fp16 accuracy."""
    k = 4096
    gen = torch.Generator().manual_seed(k + len(name))
    packed = random_packed(QuantSpec.from_name(name), 24, k, gen)
    x = torch.rand(1, k, generator=gen).half().to(DEVICE)
    y = wq_linear(x, packed, backend="triton", kernel="gemv", split_k=1)
    assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


def test_weight_only_from_real_quantized_weights_and_leading_dims():
    """A QuantizedTensor from autoq.quant runs on the kernel; (B, T, K) inputs keep their leading shape."""
    gen = torch.Generator().manual_seed(11)
    qt = quantize(torch.randn(N, K, generator=gen), QuantSpec.from_name("int4-g64-asym"))
    packed = PackedWeight.from_quantized(qt).to(DEVICE)
    x = torch.randn(2, 3, K, generator=gen).half().to(DEVICE)
    y = wq_linear(x, packed, backend="triton")
    assert y.shape == (2, 3, N)
    assert_close_to_reference(y.reshape(6, N), x.reshape(6, K), qt.dequantize().double().to(DEVICE), torch.float16)
    torch_path = wq_linear(x.cpu(), packed.to("cpu"), backend="torch")
    assert_close_to_reference(torch_path.reshape(6, N), x.cpu().reshape(6, K), qt.dequantize().double(), torch.float16)


def test_auto_runs_the_gemv_at_batch_1_and_the_tiled_gemm_above(monkeypatch):
    """The issue's batch-1 path: a single row reads the weight once in the GEMV; two rows already take the GEMM (the
    GEMV reads the weight once per row). Each kernel still runs, recorded on its way in."""
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv

    ran: list[str] = []
    for module, name in ((triton_wq_gemv, "gemv"), (triton_wq_gemm, "gemm")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _real=real, _name=name, **kwargs: (ran.append(_name), _real(*args, **kwargs))[1])
    gen = torch.Generator().manual_seed(12)
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), N, K, gen)
    for m, kernel in [(1, "gemv"), (2, "gemm"), (5, "gemm")]:
        ran.clear()
        x = torch.randn(m, K, generator=gen).half().to(DEVICE)
        y = wq_linear(x, packed, backend="triton")
        assert ran == [kernel]
        assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


def test_split_k_heuristic():
    assert split_k_for(4096, 4096, target_programs=264) == 1  # 512 programs of 8 rows fill the GPU
    assert split_k_for(384, 384, target_programs=264) == 1  # K too short to split
    assert split_k_for(384, 4096, target_programs=264) == 4  # 48 programs want 6 splits: rounded down to 4
    assert split_k_for(64, 1536, target_programs=264) == 2  # at least 512 columns per split
    assert split_k_for(0, 4096, target_programs=264) == 1  # no outputs: nothing to split (was a ZeroDivisionError)


def test_a_weight_without_outputs_gives_an_empty_output_on_every_kernel():
    """Batches up to 16 (the GEMV, and the GEMM's split choice) divided by the number of output tiles, zero here."""
    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 0, 16, torch.Generator().manual_seed(4))
    for m, kernel in [(1, "auto"), (16, "gemm"), (17, "auto")]:
        x = torch.randn(m, 16).half().to(DEVICE)
        assert wq_linear(x, packed, backend="triton", kernel=kernel).shape == (m, 0)


def test_split_targets_the_tensors_own_device():
    """The default target is two programs per SM of the device that runs the kernel: a CPU (the interpreter) has one."""
    cpu = torch.device("cpu")
    assert sm_count(cpu) == 1
    assert split_k_for(384, 4096, device=cpu) == 1  # 48 programs already fill two "SMs"
    assert gemm_split_k_for(16, 128, 4096, device=cpu) == 2  # one 16 x 128 tile: split in two
    for index in range(torch.cuda.device_count()):  # on a GPU machine: each GPU's own count, not GPU 0's
        cuda = torch.device("cuda", index)
        assert sm_count(cuda) == torch.cuda.get_device_properties(index).multi_processor_count


def test_gemm_split_k_heuristic():
    """Batches up to 16 (16-row tiles only) split K when 16 x 128 tiles cannot fill the GPU; larger batches never do."""
    assert gemm_split_k_for(16, 4096, 4096, target_programs=264) == 8  # 32 tiles want 9 splits: 8
    assert gemm_split_k_for(2, 11008, 4096, target_programs=264) == 4  # 86 tiles want 4 splits
    assert gemm_split_k_for(16, 4096, 11008, target_programs=264) == 8
    assert gemm_split_k_for(16, 576, 576, target_programs=264) == 1  # K too short to split
    assert gemm_split_k_for(17, 4096, 4096, target_programs=264) == 1  # taller tiles: K stays whole


@pytest.mark.parametrize("name", ["int4-g128-asym", "int3-g64-sym", "int8-ch-asym", "int5-ch-asym", "int2-g32-asym"])
def test_gemm_split_over_k(name: str):
    """The GEMM split over K: fp32 partial sums of whole steps, added on the host; ragged K, more splits than steps
    (the extra splits add zeros), and K a multiple of the step times the split (every split unmasked along K)."""
    from autoq.kernels.gemv_steps import gemm_step_columns
    from autoq.kernels.triton_wq_gemm import FIXED_GEMM

    spec = QuantSpec.from_name(name)
    whole = 3 * 4 * gemm_step_columns(FIXED_GEMM["BLOCK_K"], 32 // spec.bits)
    gen = torch.Generator().manual_seed(len(name) + spec.bits)
    for k, splits in [(1000, (2, 3)), (257, (8,)), (whole, (4,))]:
        packed = random_packed(spec, 70, k, gen)
        for split in splits:
            for m in (5, 16):
                x = torch.randn(m, k, generator=gen).half().to(DEVICE)
                y = wq_linear(x, packed, backend="triton", kernel="gemm", split_k=split)
                assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


def test_bad_calls_are_autoq_errors():
    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 8, 16, torch.Generator().manual_seed(0))
    with pytest.raises(AutoqError, match="features"):
        wq_linear(torch.randn(2, 15).half().to(DEVICE), packed, backend="triton")
    with pytest.raises(AutoqError, match="fp16 or bf16"):
        wq_linear(torch.randn(2, 16).to(DEVICE), packed, backend="triton")
    with pytest.raises(AutoqError, match="backend"):
        wq_linear(torch.randn(2, 16).half(), packed, backend="cuda")


def test_quantize_tokens_matches_the_torch_reference():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 300, generator=gen) * torch.logspace(-2, 2, 6)[:, None]
    x[2] = 0.0  # an all-zero token keeps codes 0 and a tiny positive scale
    x = x.half().to(DEVICE)
    q, scale = quantize_tokens(x, backend="triton")
    q_ref, scale_ref = quantize_tokens(x.cpu(), backend="torch")
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert torch.allclose(scale.cpu(), scale_ref, rtol=1e-6, atol=0)
    assert torch.equal(q.cpu(), q_ref)
    assert q[2].abs().max() == 0 and q.abs().max() == 127


def test_quantize_tokens_rounds_ties_to_even_as_the_simulation_does():
    """A row whose largest magnitude is 127 has scale 1: its halves are ties, rounded as torch.round rounds them."""
    from autoq.quant.activation import ActSpec, fake_quantize_activation

    x = torch.tensor([[127.0, 2.5, -2.5, 1.5, -1.5, 0.5, -0.5, 3.5, -126.5, 0.4]]).half().to(DEVICE)
    expected = torch.tensor([[127, 2, -2, 2, -2, 0, 0, 4, -126, 0]], dtype=torch.int8)
    for backend in ("triton", "torch"):
        q, scale = quantize_tokens(x if backend == "triton" else x.cpu(), backend=backend)
        assert float(scale[0]) == 1.0 and torch.equal(q.cpu(), expected), backend
    simulated = fake_quantize_activation(x.cpu().float(), ActSpec.from_name("a8-token"))
    assert torch.equal(simulated, expected.float())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, at a NaN or inf row
def test_static_quantize_tokens_is_one_kernel_matching_the_torch_path_and_the_simulation():
    """A static range quantized its rows with eight eager torch kernels before the GEMM, where the latency table
    charged the one Triton launch it timed; the kernel now takes the calibrated scale and makes one pass."""
    from autoq.quant.activation import ActRange, ActSpec, fake_quantize_activation

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(6, 300, generator=gen) * torch.logspace(-1, 0.7, 6)[:, None]  # the last rows pass the range: clamped
    x[1, 7], x[3, 0], x[4, 299] = float("nan"), float("inf"), float("-inf")
    rng = ActRange(-2.5, 2.5)
    scale = 2.5 / 127.0
    x = x.half()
    q, q_scale = quantize_tokens(x.to(DEVICE), backend="triton", static_scale=scale)
    q_ref, scale_ref = quantize_tokens(x, backend="torch", static_scale=scale)
    assert q_scale.cpu().isnan().tolist() == scale_ref.isnan().tolist() == [False, True, False, False, False, False]
    finite = ~scale_ref.isnan()  # a NaN row's codes mean nothing: its scale makes its outputs NaN
    assert torch.equal(q.cpu()[finite], q_ref[finite])
    assert torch.equal(q_scale.cpu()[finite], scale_ref[finite]) and float(scale_ref[0]) == pytest.approx(scale, rel=1e-7)
    assert q_ref[3, 0] == 127 and q_ref[4, 299] == -127 and q_ref[5].abs().max() == 127
    simulated = fake_quantize_activation(x.float(), ActSpec.from_name("a8-tensor"), rng)
    assert torch.equal((q_ref.float() * scale_ref[:, None])[finite], simulated[finite])


@pytest.mark.parametrize("name", ["int8-ch-sym", "int8-tensor-sym"])
def test_int8_gemm_is_exact_before_the_output_rounding(name: str):
    """int32 accumulation is exact; only the fp32 rescale and the fp16 output round."""
    gen = torch.Generator().manual_seed(9)
    for m in (1, 37):
        q = torch.randint(-127, 128, (m, K), generator=gen).to(torch.int8).to(DEVICE)
        q_scale = (torch.rand(m, generator=gen) * 0.1 + 1e-3).to(DEVICE)
        rows = 1 if name.endswith("tensor-sym") else N
        w = Int8Weight(QuantSpec.from_name(name), torch.randint(-128, 128, (N, K), generator=gen).to(torch.int8),
                       (torch.rand(rows, generator=gen) * 0.01 + 1e-4).half()).to(DEVICE)
        y = int8_matmul(q, q_scale, w, torch.float16, backend="triton")
        ref = (q.double() @ w.qweight.double().T) * q_scale.double()[:, None] * w.scales.double().reshape(1, -1)
        assert ((y.double() - ref).abs() <= 2 * UNIT_ROUNDOFF[torch.float16] * ref.abs() + 1e-7).all()


def test_int8_matmul_refuses_rows_and_scales_that_do_not_match():
    """The Triton path read a scale per row of q: two scales for three rows gave a third row scaled by the memory past
    them (out of bounds on a GPU), and float rows failed inside Triton."""
    gen = torch.Generator().manual_seed(3)
    w = Int8Weight(QuantSpec.from_name("int8-ch-sym"), torch.randint(-128, 128, (N, K), generator=gen).to(torch.int8),
                   torch.full((N,), 0.01).half()).to(DEVICE)
    q = torch.randint(-127, 128, (3, K), generator=gen).to(torch.int8).to(DEVICE)
    for backend in ("torch", "triton"):
        with pytest.raises(AutoqError, match=r"q_scale must be one float scale per row of q, shape \(3,\), got a torch.float32 tensor of shape \(2,\)"):
            int8_matmul(q, torch.ones(2, device=DEVICE), w, torch.float16, backend=backend)
        with pytest.raises(AutoqError, match=r"int8_matmul takes q as \(M, K\) int8 rows .*, got a 2-D torch.float16 tensor"):
            int8_matmul(q.half(), torch.ones(3, device=DEVICE), w, torch.float16, backend=backend)
    assert int8_matmul(q, torch.ones(3, device=DEVICE), w, torch.float16, backend="torch").shape == (3, N)


@pytest.mark.parametrize(("capability", "auto"), [((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_the_int8_gemm_runs_on_ampere_and_newer_and_auto_takes_the_torch_path_below(monkeypatch, capability, auto):
    """Triton's int8 dot does not compile for a T4 (7.5) or V100 (7.0): backend='auto' chose it on any CUDA GPU, and the
    first forward of a W8A8 export there failed with an MLIR dump."""
    from autoq.kernels.capability import triton_installed
    from autoq.kernels.ops import _use_int8_triton

    if not triton_installed():
        pytest.skip("Triton is not installed")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    gpu = torch.device("cuda", 0)  # a device object only: the decision is made before any launch
    assert _use_int8_triton(gpu, torch.float16, "auto") is auto
    assert _use_int8_triton(gpu, torch.float16, "torch") is False
    with pytest.raises(AutoqError, match="unknown kernel backend 'tritn'"):  # a typo is not taken for auto on any GPU
        _use_int8_triton(gpu, torch.float16, "tritn")
    if auto:
        assert _use_int8_triton(gpu, torch.float16, "triton") is True
    else:
        with pytest.raises(AutoqError, match=rf"needs a GPU of compute capability 8.0 or newer .*; cuda:0 is {capability[0]}.{capability[1]}. "
                                             "Use backend='auto' or 'torch'"):
            _use_int8_triton(gpu, torch.float16, "triton")


def test_w8a8_linear_against_float64():
    """End to end: the error is the activation rounding (half a step per element) plus fp16 output rounding."""
    gen = torch.Generator().manual_seed(13)
    qt = quantize(torch.randn(N, K, generator=gen), QuantSpec.from_name("int8-ch-sym"))
    w = Int8Weight.from_quantized(qt).to(DEVICE)
    w64 = w.dequantize(torch.float64)
    for m in (1, 37):
        x = torch.randn(m, K, generator=gen).half().to(DEVICE)
        y = w8a8_linear(x, w, backend="triton")
        ref = x.double() @ w64.T
        step = x.double().abs().amax(dim=1, keepdim=True) / 127
        bound = 0.5 * step * w64.abs().sum(dim=1)[None, :] * 1.01 + 4 * UNIT_ROUNDOFF[torch.float16] * (x.double().abs() @ w64.abs().T)
        assert ((y.double() - ref).abs() <= bound).all()
        y_torch = w8a8_linear(x.cpu(), w.to("cpu"), backend="torch")
        assert ((y_torch.double() - ref.cpu()).abs() <= bound.cpu()).all()


@pytest.mark.skipif(autotuning(), reason="the fixed block configuration (interpreter, AUTOQ_AUTOTUNE=0) is what is varied")
@pytest.mark.parametrize("blocks", [{"BLOCK_N": 16, "BLOCK_K": 32, "BLOCK_M": 16, "PREFETCH": False, "ROWS_IN_THREAD": True},
                                    {"BLOCK_N": 32, "BLOCK_K": 64, "BLOCK_M": 64, "PREFETCH": True, "ROWS_IN_THREAD": False}])
def test_weight_only_with_other_block_sizes(monkeypatch, blocks):
    """Blocks narrower than a group (one scale per row of the tile), several K steps, one word per block row;
    the GEMV with and without loading the next step's words ahead, with and without the rows in each thread."""
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv

    monkeypatch.setattr(triton_wq_gemv, "FIXED_GEMV", {k: blocks[k] for k in ("BLOCK_N", "BLOCK_K", "PREFETCH", "ROWS_IN_THREAD")})
    monkeypatch.setattr(triton_wq_gemm, "FIXED_GEMM", {**{k: blocks[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}, "GROUP_M": 2})
    gen = torch.Generator().manual_seed(blocks["BLOCK_K"])
    for name in ("int2-g128-asym", "int3-g64-sym", "int4-g32-asym", "int8-ch-asym"):
        packed = random_packed(QuantSpec.from_name(name), 40, 150, gen)
        for m, split in ((1, 1), (1, 2), (21, None)):
            x = torch.randn(m, 150, generator=gen).half().to(DEVICE)
            y = wq_linear(x, packed, backend="triton", split_k=split)
            assert_close_to_reference(y, x, packed.dequantize(torch.float64), torch.float16)


def test_autotune_pruning_keeps_tiles_that_fit_the_row_and_the_batch():
    """Through Triton's own autotuners (their calling convention): GEMV tiles whose K step exceeds the row are
    dropped, GEMM tiles much taller than the batch are dropped."""
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv
    from autoq.kernels.gemv_steps import step_columns
    from autoq.kernels.ops import GEMM_MIN_BLOCK_M

    configs = triton_wq_gemv._GEMV_CONFIGS
    for k, cpw in [(384, 8), (384, 10), (1536, 16), (4096, 8), (11008, 4), (100, 8)]:
        triton_wq_gemv._gemv_tuned.nargs = {"N": 64, "K": k, "x_ptr": torch.empty(1, k, dtype=torch.float16, device="meta")}
        kept = triton_wq_gemv._gemv_tuned.prune_configs({"BITS": 32 // cpw, "CPW": cpw, "GROUP": 0, "HAS_ZEROS": True, "SPLIT_K": 1})
        readable = [c for c in configs if cpw == 8 or not c.kwargs["HALF2"]]  # packed-half tiles read W4 only
        fits = [c for c in readable if step_columns(c.kwargs["BLOCK_K"], cpw, 0) <= 1 << (k - 1).bit_length()
                and (not c.kwargs.get("PERSIST") or k % step_columns(c.kwargs["BLOCK_K"], cpw, 0) == 0)]  # persistent: whole steps
        assert kept == (fits or [min(readable, key=lambda c: c.kwargs["BLOCK_K"])]), (k, cpw)
        assert (len(kept) == len(configs)) == (cpw == 8 and k > 1024), (k, cpw)
    assert GEMM_MIN_BLOCK_M == min(c.kwargs["BLOCK_M"] for c in triton_wq_gemm._GEMM_CONFIGS)  # what gemm_split_k_for assumes
    for bucket in (1, 16, 128):
        triton_wq_gemm._gemm_tuned.nargs = {"M": bucket, "N": 64, "K": 256, "M_BUCKET": bucket}
        kept = triton_wq_gemm._gemm_tuned.prune_configs({"BITS": 4, "CPW": 8, "GROUP": 0, "HAS_ZEROS": True, "WORDWISE": True})
        assert kept and all(c.kwargs["BLOCK_M"] <= max(16, bucket) for c in kept)
        assert any(c.kwargs["BLOCK_M"] == max(16, min(bucket, 128)) for c in kept)
    triton_wq_gemv._gemv_tuned.nargs = triton_wq_gemm._gemm_tuned.nargs = None


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, at inf - inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_token_holding_nan_or_inf_gives_nan_outputs_on_every_path(bad: float):
    """The kernel's tl.maximum skipped NaN and its clamp made it code -127: a NaN row came out finite, and +inf as -inf."""
    from autoq.quant.activation import ActSpec, fake_quantize_activation

    gen = torch.Generator().manual_seed(21)
    qt = quantize(torch.rand(N, K, generator=gen) + 0.1, QuantSpec.from_name("int8-ch-sym"))  # positive weights
    w = Int8Weight.from_quantized(qt)
    x = torch.rand(3, K, generator=gen).half()
    x[1, 7] = bad
    simulated = fake_quantize_activation(x.float(), ActSpec.from_name("a8-token")) @ qt.dequantize().T
    assert simulated[1].isnan().all() and simulated[[0, 2]].isfinite().all()
    for backend, device in (("torch", "cpu"), ("triton", DEVICE)):
        y = w8a8_linear(x.to(device), w.to(device), backend=backend).cpu()
        assert y[1].isnan().all(), (backend, y[1])
        assert y[[0, 2]].isfinite().all() and torch.allclose(y[[0, 2]].float(), simulated[[0, 2]], rtol=2e-2, atol=1e-2), backend


def int8_weight(gen: torch.Generator) -> Int8Weight:
    """A random int8 per-channel symmetric weight of N x K, as the W8A8 kernel takes it."""
    return Int8Weight.from_quantized(quantize(torch.randn(N, K, generator=gen), QuantSpec.from_name("int8-ch-sym")))


def test_the_torch_backend_is_the_exact_fp32_reference():
    """backend='torch' dequantizes and multiplies in fp32 (fp32 activations too), never a Triton kernel."""
    gen = torch.Generator().manual_seed(31)
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), N, K, gen).to("cpu")
    for dtype in (torch.float16, torch.float32):
        x = torch.randn(3, K, generator=gen).to(dtype)
        assert torch.equal(wq_linear(x, packed, backend="torch"), (x.float() @ packed.dequantize().T).to(dtype)), dtype


def test_backend_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    """CPU tensors run Triton only under TRITON_INTERPRET=1: otherwise backend='triton' says so."""
    from autoq.kernels import triton_w8a8, triton_wq_gemm, triton_wq_gemv  # noqa: F401  (defined interpreted, as the other tests need)

    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 8, 16, torch.Generator().manual_seed(0)).to("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(AutoqError, match="Triton kernels need CUDA tensors .*got tensors on cpu"):
        wq_linear(torch.randn(1, 16).half(), packed, backend="triton")


def test_an_unknown_weight_only_kernel_is_refused():
    packed = random_packed(QuantSpec.from_name("int4-ch-asym"), 8, 16, torch.Generator().manual_seed(0))
    with pytest.raises(AutoqError, match="unknown weight-only kernel 'gemvv'; choose auto, gemv or gemm"):
        wq_linear(torch.randn(1, 16).half().to(DEVICE), packed, backend="triton", kernel="gemvv")


def test_an_explicit_kernel_runs_that_kernel_whatever_the_batch(monkeypatch):
    """kernel='gemm' at batch 1 runs the GEMM, kernel='gemv' at batch 3 the GEMV (each recorded on its way in)."""
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv

    ran: list[str] = []
    for module, name in ((triton_wq_gemv, "gemv"), (triton_wq_gemm, "gemm")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _real=real, _name=name, **kwargs: (ran.append(_name), _real(*args, **kwargs))[1])
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), 16, 64, torch.Generator().manual_seed(2))
    for m, kernel in [(1, "gemm"), (3, "gemv")]:
        ran.clear()
        wq_linear(torch.randn(m, 64).half().to(DEVICE), packed, backend="triton", kernel=kernel)
        assert ran == [kernel], (m, kernel)


def test_the_torch_path_keeps_the_leading_shape():
    packed = random_packed(QuantSpec.from_name("int4-g32-asym"), N, K, torch.Generator().manual_seed(3)).to("cpu")
    assert wq_linear(torch.randn(2, 3, K).half(), packed, backend="torch").shape == (2, 3, N)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_int8_matmul_refuses_q_that_is_not_two_dimensional_or_scales_that_are_not_float(backend: str):
    """A 1-D q (K,) with K scales would come back as a (K, N) product, and integer scales would pass as scales: both are
    refused, saying what was given."""
    gen = torch.Generator().manual_seed(4)
    w = int8_weight(gen).to(DEVICE)
    q = torch.randint(-127, 128, (3, K), generator=gen).to(torch.int8).to(DEVICE)
    with pytest.raises(AutoqError, match=r"int8_matmul takes q as \(M, K\) int8 rows .*, got a 1-D torch.int8 tensor"):
        int8_matmul(q[0], torch.ones(K, device=DEVICE), w, torch.float16, backend=backend)
    with pytest.raises(AutoqError, match=r"q_scale must be one float scale per row of q, shape \(3,\), got a torch.int32 tensor of shape \(3,\)"):
        int8_matmul(q, torch.ones(3, dtype=torch.int32, device=DEVICE), w, torch.float16, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_w8a8_outputs_come_in_the_requested_dtype(backend: str):
    """int8_matmul answers in out_dtype and w8a8_linear in the activations' dtype (bf16 stays bf16) on every path."""
    gen = torch.Generator().manual_seed(5)
    device = DEVICE if backend == "triton" else torch.device("cpu")
    w = int8_weight(gen).to(device)
    q = torch.randint(-127, 128, (2, K), generator=gen).to(torch.int8).to(device)
    for dtype in (torch.float16, torch.bfloat16):
        assert int8_matmul(q, torch.ones(2, device=device), w, dtype, backend=backend).dtype == dtype
        assert w8a8_linear(torch.randn(2, K, generator=gen).to(dtype).to(device), w, backend=backend).dtype == dtype


def test_the_torch_quantize_tokens_gives_an_inf_row_a_nan_scale():
    """The docstring's rule, as the Triton kernel does: a row holding inf gets a NaN scale, not an inf one."""
    x = torch.ones(3, 20).half()
    x[1, 4] = float("inf")
    x[2, 5] = -float("inf")
    _, scale = quantize_tokens(x, backend="torch")
    assert scale.isnan().tolist() == [False, True, True]


def test_a_compile_only_w8a8_layer_asks_for_both_of_its_kernels_compiled(monkeypatch):
    """A W8A8 layer's precompile compiles the kernel that quantizes its tokens as well as the int8 GEMM (each launcher is
    asked with compile_only set, on meta tensors: nothing runs); without it the first forward on the GPU would compile it."""
    from autoq.kernels import triton_w8a8

    asked: list[tuple[str, bool]] = []
    monkeypatch.setattr(triton_w8a8, "launch_quantize_rows", lambda x, q, scale, compile_only, **kw: asked.append(("quantize", compile_only)))
    monkeypatch.setattr(triton_w8a8, "launch_int8_gemm", lambda q, s, w, ws, out, compile_only: asked.append(("gemm", compile_only)))
    x = torch.empty(2, 3, K, dtype=torch.float16, device="meta")
    y = w8a8_linear(x, int8_weight(torch.Generator().manual_seed(6)).to("meta"), compile_only=True)
    assert asked == [("quantize", True), ("gemm", True)] and y.shape == (2, 3, N) and y.device.type == "meta"
