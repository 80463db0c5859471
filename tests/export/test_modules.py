"""`QuantLinear`: the Triton kernel path (under ``TRITON_INTERPRET=1``) agrees with the torch path and the simulation."""

from __future__ import annotations

import pytest
import torch

from autoq.export import QuantLinear
from autoq.kernels.formats import PackedWeight
from autoq.quant import QuantSpec, quantize


def layer(name: str, n: int = 24, k: int = 70) -> tuple[QuantLinear, torch.Tensor]:
    torch.manual_seed(0)
    qt = quantize(torch.randn(n, k), QuantSpec.from_name(name))
    return QuantLinear(PackedWeight.from_quantized(qt), torch.randn(n)), qt.dequantize()


def packed(name: str, n: int = 8, k: int = 32, seed: int = 0) -> PackedWeight:
    torch.manual_seed(seed)
    return PackedWeight.from_quantized(quantize(torch.randn(n, k), QuantSpec.from_name(name)))


def test_torch_path_is_the_simulation_exactly():
    module, w = layer("int3-g32-asym")
    x = torch.randn(5, 70)
    with torch.inference_mode():
        expected = x @ w.T + module.bias
        assert torch.allclose(module(x), expected, rtol=0, atol=1e-5)
    assert torch.equal(module.dequantized_weight(), w)


@pytest.mark.parametrize("name, batch", [("int4-g32-asym", 1), ("int2-ch-sym", 3)])
def test_triton_path_matches_torch_path(name, batch):
    module, w = layer(name)
    x = torch.randn(batch, 70).half()
    with torch.inference_mode():
        module.backend = "torch"
        reference = module(x).float()
        module.backend = "triton"  # CPU tensors run on Triton's interpreter here
        got = module(x).float()
    assert got.dtype == torch.float32 and got.shape == (batch, 24)
    assert float((got - reference).abs().max() / reference.abs().max()) < 1e-2  # fp16 operands


def test_the_layer_keeps_zeroed_counters_for_split_launches_outside_its_state_dict():
    from autoq.kernels.ops import split_k_for

    module, _ = layer("int4-g128-asym", n=8, k=2048)
    assert module.split_counters.dtype == torch.int32 and module.split_counters.shape == (8,)
    assert "split_counters" not in module.state_dict() and module.packed.counters is module.split_counters
    assert split_k_for(8, 2048) > 1  # the interpreter's GEMV splits this narrow layer over K
    x = torch.randn(1, 2048).half()
    with torch.inference_mode():
        module.backend = "torch"
        reference = module(x).float()
        module.backend = "triton"
        got = module(x).float()
    assert float((got - reference).abs().max() / reference.abs().max()) < 1e-2
    assert not module.split_counters.any()  # left at zero for the next call


@pytest.mark.parametrize("cast", [torch.nn.Module.float, torch.nn.Module.half, torch.nn.Module.double,
                                  lambda m: m.to(torch.bfloat16), lambda m: m.to("cpu", torch.bfloat16)])
def test_a_dtype_cast_changes_the_compute_dtype_never_the_stored_quantization(cast):
    torch.manual_seed(0)
    qt = quantize(torch.randn(24, 70), QuantSpec.from_name("int4-g32-asym"))
    awq_scale = torch.rand(70) + 0.5  # an fp32 AWQ input scale: bf16 would round it to 8 bits
    module = QuantLinear(PackedWeight.from_quantized(qt), torch.randn(24), input_scale=awq_scale)
    weight = module.dequantized_weight()
    cast(module)
    assert (module.scales.dtype, module.zeros.dtype, module.input_scale.dtype) == (torch.float16, torch.float16, torch.float32)
    assert torch.equal(module.input_scale, awq_scale)
    assert torch.equal(module.dequantized_weight(), weight)  # bf16 scales moved it by up to 0.4% of its largest weight
    dtype = module.bias.dtype
    assert dtype != torch.float32 or cast is torch.nn.Module.float
    with torch.inference_mode():
        assert module(torch.randn(3, 70).to(dtype)).dtype == dtype


@pytest.mark.parametrize("act", ["a8-tensor", "a8-token"])
def test_w8a8_kernel_path_matches_the_simulated_torch_path(act):
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    torch.manual_seed(0)
    qt = quantize(torch.randn(24, 70), QuantSpec.from_name("int8-ch-sym"))
    x = torch.randn(3, 70) * torch.linspace(0.5, 4.0, 70)  # channels of different ranges, as SmoothQuant sees them
    scale = torch.rand(70) + 0.5
    spec = ActSpec.from_name(act)
    rng = ActRange(float((x / scale).min()), float((x / scale).max())) if spec.static else None
    module = ActQuantLinear(PackedWeight.from_quantized(qt), spec, rng, torch.randn(24), input_scale=scale, backend="torch")
    with torch.inference_mode():
        from autoq.quant.activation import fake_quantize_activation

        expected = fake_quantize_activation(x / scale, spec, rng) @ qt.dequantize().T + module.bias
        assert torch.allclose(module(x), expected, rtol=0, atol=1e-5)  # the torch path is the search's simulation
        reference = module(x.half()).float()
        module.backend = "triton"  # int8 activation codes and the int8 GEMM, on Triton's interpreter here
        got = module(x.half()).float()
    assert float((got - reference).abs().max() / reference.abs().max()) < 1e-2  # fp16 operands


def test_weight_reads_as_the_dequantized_weight_in_the_compute_dtype():
    module, w = layer("int4-g32-asym")
    assert torch.equal(module.weight, w) and module.weight.dtype == torch.float32
    module.half()
    assert module.weight.dtype == torch.float16 and torch.equal(module.weight, w.half())
    assert "weight" not in module.state_dict()  # read-only view, never stored


@pytest.mark.parametrize("act", ["a8-tensor", "a8-token"])
def test_loading_another_layers_state_moves_its_range_and_its_int8_codes(act):
    """The static range is in the state dict, and the W8A8 kernel's int8 layout is rebuilt after a load."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    spec = ActSpec.from_name(act)

    def make(seed: int, hi: float) -> ActQuantLinear:
        torch.manual_seed(seed)
        qt = quantize(torch.randn(8, 16), QuantSpec.from_name("int8-ch-sym"))
        return ActQuantLinear(PackedWeight.from_quantized(qt), spec, ActRange(-hi, hi) if spec.static else None, torch.randn(8), backend="triton")

    a, b = make(0, 1.0), make(1, 20.0)
    x = (torch.randn(3, 16) * 4).half()
    with torch.inference_mode():
        a(x)  # builds a's int8 layout
        a.load_state_dict(b.state_dict())
        assert torch.equal(a(x), b(x))
    assert a.act_range == b.act_range and ("act_lo_hi" in a.state_dict()) == spec.static


def test_an_awq_layers_input_scale_is_held_in_fp32_and_its_weight_is_what_forward_multiplies_by():
    """An fp16 AWQ scale is an fp32 buffer and state-dict entry; ``weight`` is in the layer's own input coordinates, so
    ``linear(x, weight, bias)`` is its output."""
    module = QuantLinear(packed("int4-g32-asym"), torch.randn(8), input_scale=(torch.rand(32) + 0.5).half(), backend="torch")
    assert module.input_scale.dtype == torch.float32 and module.state_dict()["input_scale"].dtype == torch.float32
    x = torch.randn(3, 32)
    with torch.inference_mode():
        assert torch.allclose(torch.nn.functional.linear(x, module.weight, module.bias), module(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("act", [None, "a8-token", "a4-token"])
def test_an_fp32_layers_output_on_an_fp16_input_is_fp16(act):
    """The bias is added in the input's dtype, weight-only or fake-quantized activations (which compute in fp32)."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActSpec

    torch.manual_seed(2)
    weight = packed("int4-g32-asym" if act is None else "int8-ch-sym")
    module = (QuantLinear(weight, torch.randn(8), backend="torch") if act is None
              else ActQuantLinear(weight, ActSpec.from_name(act), None, torch.randn(8), backend="torch"))
    with torch.inference_mode():
        assert module(torch.randn(3, 32).half()).dtype == torch.float16


def test_the_static_range_survives_a_state_dict_round_trip_exactly():
    """The range is stored as float64: loading a layer's own state gives back exactly the floats exported."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    rng = ActRange(-0.1, 0.3)  # neither is a float32 value
    module = ActQuantLinear(packed("int8-ch-sym"), ActSpec.from_name("a8-tensor"), rng, torch.zeros(8), backend="torch")
    state = module.state_dict()
    assert state["act_lo_hi"].dtype == torch.float64
    module.load_state_dict(state)
    assert module.act_range == rng


def test_the_triton_backend_runs_the_int8_kernels_for_symmetric_activations_only(monkeypatch):
    """backend="triton" runs autoq's W8A8 kernels (on Triton's interpreter here) for a symmetric a8 format, not the
    fake-quantized fallback; an asymmetric one, which the symmetric int8 kernel cannot compute, keeps the simulated path."""
    import autoq.kernels.ops as ops
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    calls = []
    real = ops.int8_matmul
    monkeypatch.setattr(ops, "int8_matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    module = ActQuantLinear(packed("int8-ch-sym"), ActSpec.from_name("a8-token"), None, torch.zeros(8), backend="triton")
    with torch.inference_mode():
        module(torch.randn(3, 32).half())
    assert calls
    torch.manual_seed(4)
    x = torch.rand(3, 32) * 3 + 1.0  # all positive: asymmetric and symmetric codes differ a lot
    rng = ActRange(float(x.min()), float(x.max()))
    module = ActQuantLinear(packed("int8-ch-sym"), ActSpec.from_name("a8-tensor-asym"), rng, torch.zeros(8), backend="torch")
    with torch.inference_mode():
        reference = module(x.half())
        module.backend = "triton"
        assert torch.equal(module(x.half()), reference)
    assert len(calls) == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, at a NaN or inf row
def test_a_static_w8a8_row_holding_nan_is_nan_on_the_kernel_path_and_inf_clamps_as_simulated():
    """The static path cast round(NaN) to int8 (undefined: 0 on x86), so a NaN row came out finite."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec, fake_quantize_activation

    torch.manual_seed(1)
    qt = quantize(torch.randn(24, 70), QuantSpec.from_name("int8-ch-sym"))
    spec, rng = ActSpec.from_name("a8-tensor"), ActRange(-3.0, 3.0)
    x = torch.randn(3, 70)
    x[0, 5], x[2, 9] = float("nan"), float("inf")
    module = ActQuantLinear(PackedWeight.from_quantized(qt), spec, rng, None, backend="triton")
    with torch.inference_mode():
        got = module(x.half()).float()
        simulated = fake_quantize_activation(x, spec, rng) @ qt.dequantize().T
    assert got[0].isnan().all() and simulated[0].isnan().all()
    assert got[1:].isfinite().all() and torch.allclose(got[1:], simulated[1:], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("act", [None, "a8-token"])
def test_an_input_of_the_wrong_width_is_refused_by_name_with_an_input_scale_too(act):
    """With an AWQ or SmoothQuant input scale the division came first and failed with torch's broadcasting error."""
    from autoq.errors import AutoqError
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActSpec

    qt = quantize(torch.randn(24, 40), QuantSpec.from_name("int8-ch-sym"))
    scale = torch.rand(40) + 0.5
    if act is None:
        module = QuantLinear(PackedWeight.from_quantized(qt), None, input_scale=scale, backend="torch")
    else:
        module = ActQuantLinear(PackedWeight.from_quantized(qt), ActSpec.from_name(act), None, None, input_scale=scale, backend="torch")
    with pytest.raises(AutoqError, match="activations have 41 features but the weight expects 40"):
        module(torch.randn(3, 41))


@pytest.mark.parametrize("act", [None, "a8-tensor"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_an_input_that_is_not_floating_point_is_refused_as_nn_linear_refuses_it(act, dtype):
    """int64 input (torch.tensor([[0, 1, 2]]), a common slip) was multiplied in fp32 and cast back to int64: a loaded model
    answered tensor([[0, 0, 0, 0]]) where the float model raised torch's dtype error."""
    from autoq.errors import AutoqError
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    qt = quantize(torch.randn(24, 40), QuantSpec.from_name("int8-ch-sym"))
    packed, scale = PackedWeight.from_quantized(qt), torch.rand(40) + 0.5
    if act is None:
        module = QuantLinear(packed, torch.randn(24), input_scale=scale)
    else:
        module = ActQuantLinear(packed, ActSpec.from_name(act), ActRange(-3.0, 3.0), torch.randn(24), input_scale=scale)
    with pytest.raises(AutoqError, match=rf"^a quantized layer takes floating-point activations, got {dtype} \(as nn.Linear refuses them\)"):
        module(torch.ones(3, 40, dtype=dtype))


def _input_gradient(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    module(x).float().square().sum().backward()
    return x.grad.float()


@pytest.mark.parametrize("act", ["a8-tensor", "a8-token", "a4-token-asym"])
def test_a_w8a8_layer_passes_the_straight_through_gradient_to_its_input(act):
    """round() has a zero gradient: a loaded static W8A8 layer gave everything before it exactly zero, so fine-tuning
    those layers silently did nothing. Now the gradient is x @ W.T's (straight through the rounding), zero where the
    static range clips, on the torch path and (its kernels having no backward) on the kernel path alike."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    torch.manual_seed(0)
    qt = quantize(torch.randn(24, 70), QuantSpec.from_name("int8-ch-sym"))
    w = qt.dequantize()
    spec = ActSpec.from_name(act)
    x = torch.randn(4, 70)
    x[0, :5] = 9.0  # outside the static range below: clipped, so no gradient there
    x[0, 5] = 3.01  # past the range's edge by less than half a step: code 127, not clipped
    x[0, 6] = 3.03  # 3.03 / (3 / 127) = 128.3: code 128, past 127, so clipped
    module = ActQuantLinear(PackedWeight.from_quantized(qt), spec, ActRange(-3.0, 3.0) if spec.static else None, torch.zeros(24),
                            backend="torch")
    with torch.no_grad():
        before = module(x)
    got = _input_gradient(module, x)
    assert torch.equal(module(x).detach(), before)  # the same values: only the gradient changed
    expected = (2 * before) @ w  # d/dx sum(y^2) with dy/dx = W, straight through the rounding
    if spec.static:
        expected[0, :5] = expected[0, 6] = 0.0
        assert torch.equal(got[0, :5], torch.zeros(5)) and got[0, 6] == 0
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    else:  # per-token: the scale follows the row's range, which adds a small term of its own
        assert float(torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)) > 0.99
    if act == "a8-tensor":
        module.backend = "triton"  # the int8 kernels on Triton's interpreter: no backward of their own
        kernel = _input_gradient(module, x.half())
        assert torch.equal(kernel[0, :5], torch.zeros(5)) and kernel[0, 6] == 0  # clipped where the torch path clips
        assert kernel[0, 5] != 0 != got[0, 5]
        assert float((kernel - got).abs().max() / got.abs().max()) < 2e-2  # fp16 operands


def test_the_weight_only_kernel_path_passes_the_gradient_to_its_input():
    """The Triton GEMV and GEMM ran outside autograd: on a GPU, nothing before a quantized layer got a gradient."""
    module, w = layer("int4-g32-asym")
    for batch in (1, 3):  # the GEMV, then the GEMM
        x = torch.randn(batch, 70)
        module.backend = "torch"
        reference = _input_gradient(module, x)
        assert torch.allclose(reference, (2 * (x @ w.T + module.bias)) @ w, rtol=1e-4, atol=1e-4)
        module.backend = "triton"
        got = _input_gradient(module, x.half())
        assert float((got - reference).abs().max() / reference.abs().max()) < 2e-2  # fp16 operands


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the trace's own notes on the layers' range checks
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")  # deprecated in torch 2.13, still in use
def test_a_loaded_stack_still_traces_and_exports_with_gradients_recorded():
    """The straight-through gradient is a Python autograd function: torch.jit.trace's check found its graph different
    at each run and refused the trace of a model called with gradients on (its trainable biases made every activation
    after the first layer record one). Traced and exported, the values are the eager ones."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActRange, ActSpec

    torch.manual_seed(0)
    first = ActQuantLinear(PackedWeight.from_quantized(quantize(torch.randn(24, 40), QuantSpec.from_name("int8-ch-sym"))),
                           ActSpec.from_name("a8-tensor"), ActRange(-3.0, 3.0), torch.randn(24, requires_grad=True), backend="torch")
    second = ActQuantLinear(PackedWeight.from_quantized(quantize(torch.randn(8, 24), QuantSpec.from_name("int8-ch-sym"))),
                            ActSpec.from_name("a8-token"), None, torch.randn(8), backend="torch")
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    x = torch.randn(5, 40)
    eager = model(x)
    assert eager.requires_grad  # the second layer's input records a gradient: the straight-through path runs
    traced = torch.jit.trace(model, (x,))
    assert torch.equal(traced(x), eager)
    assert torch.equal(torch.export.export(model, (x,)).module()(x), eager)


def test_torch_func_transforms_differentiate_through_a_w8a8_layer():
    """The straight-through rounding lacked setup_context: torch.func.grad, jacrev and per-sample gradients (vmap of
    grad) raised on a loaded activation-quantized layer, where they had run (with a zero gradient) before."""
    from autoq.export import ActQuantLinear
    from autoq.quant.activation import ActSpec

    torch.manual_seed(0)
    quantized = ActQuantLinear(PackedWeight.from_quantized(quantize(torch.randn(8, 32), QuantSpec.from_name("int8-ch-sym"))),
                               ActSpec.from_name("a8-token"), None, torch.zeros(8), backend="torch")
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), quantized)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, x):
        return torch.func.functional_call(model, p, (x,)).square().sum()

    x = torch.randn(4, 16)
    grads = torch.func.grad(loss)(params, x)
    model.zero_grad()
    loss(dict(model.named_parameters()), x).backward()
    assert float(grads["0.weight"].abs().sum()) > 0 and torch.allclose(grads["0.weight"], model[0].weight.grad, rtol=1e-5, atol=1e-5)
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x.unsqueeze(1))
    assert per_sample["0.weight"].shape == (4, 32, 16)
    assert torch.allclose(per_sample["0.weight"].sum(0), grads["0.weight"], rtol=1e-4, atol=1e-4)
