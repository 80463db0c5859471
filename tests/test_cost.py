"""CostModel: effective bits and bytes, checked against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.choice import Assignment, LayerChoice
from autoq.cost import Cost, CostModel
from autoq.model import find_layers
from autoq.quant import QuantSpec

FP16 = LayerChoice(QuantSpec.half())


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def wide_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 5))


def test_other_params_are_the_biases():
    model = mlp()
    cm = CostModel.for_model(model, find_layers(model))
    assert cm.other_params == 8 + 4
    assert cm.n_weights == 16 * 8 + 8 * 4


def test_mixed_assignment_small_mlp_hand_computed():
    model = mlp()
    cm = CostModel.for_model(model, find_layers(model))
    assignment = Assignment.from_dict({
        # a group of 128 covers all 16 inputs: one fp16 scale + one fp16 zero per row
        "0": LayerChoice(QuantSpec(4, "group", 128, symmetric=False), "rtn-mse"),
        "2": LayerChoice(QuantSpec(3, "channel", None, symmetric=True), "rtn-minmax"),
    })
    bits0 = 8 * 16 * 4 + 8 * 2 * 16  # 512 code bits + 8 rows x (scale + zero) = 768
    bits2 = 4 * 8 * 3 + 4 * 1 * 16  # 96 code bits + 4 scales = 160
    bytes0 = 8 * 16 * 4 // 8 + 8 * 2 * 2  # 64 + 32 = 96
    bytes2 = 4 * 8 * 3 // 8 + 4 * 2  # 12 + 8 = 20
    cost = cm.cost(assignment)
    assert cost.effective_bits == pytest.approx((bits0 + bits2) / 160)
    assert cost.effective_bits == pytest.approx(5.8)
    assert cost.size_bytes == bytes0 + bytes2 + 2 * 12
    assert cost.size_bytes == 140


def test_groups_split_wide_layer_hand_computed():
    model = wide_mlp()
    cm = CostModel.for_model(model, find_layers(model))
    assignment = Assignment.from_dict({
        "0": LayerChoice(QuantSpec(4, "group", 128, symmetric=False)),  # 2 groups per row
        "2": FP16,
    })
    bits0 = 8 * 256 * 4 + 8 * 2 * 2 * 16  # 8192 + 512
    bits2 = 5 * 8 * 16  # 640
    n = 8 * 256 + 5 * 8
    cost = cm.cost(assignment)
    assert cost.effective_bits == pytest.approx((bits0 + bits2) / n)
    bytes0 = 8 * 256 * 4 // 8 + 8 * 2 * 2 * 2  # 1024 + 64
    bytes2 = 5 * 8 * 2  # 80
    assert cost.size_bytes == bytes0 + bytes2 + 2 * (8 + 5)


def test_odd_bit_codes_are_packed_to_whole_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3, bias=False))
    cm = CostModel.for_model(model, find_layers(model))
    assert cm.other_params == 0
    cost = cm.cost({"0": LayerChoice(QuantSpec(3, "tensor", None, symmetric=True))})
    # 15 weights x 3 bits = 45 bits -> 6 bytes of codes, one fp16 scale
    assert cost.size_bytes == 6 + 2
    assert cost.effective_bits == pytest.approx((45 + 16) / 15)


def test_input_scaling_methods_count_their_fp32_scale():
    model = mlp()
    layers = find_layers(model)
    cm = CostModel.for_model(model, layers)
    spec = QuantSpec(4, "channel", None, symmetric=True)
    plain = cm.layer_bits(layers[0], LayerChoice(spec, "gptq"))
    assert plain == 8 * 16 * 4 + 8 * 16
    for method in ("awq", "smoothquant", "smoothquant-search"):  # + one fp32 scale per input (16 of them)
        assert cm.layer_bits(layers[0], LayerChoice(spec, method)) == plain + 16 * 32
        assert cm.layer_bytes(layers[0], LayerChoice(spec, method)) == plain // 8 + 16 * 4
    cost = cm.cost({"0": LayerChoice(spec, "awq"), "2": LayerChoice(spec, "rtn-mse")})
    assert cost.effective_bits == pytest.approx((plain + 16 * 32 + 4 * 8 * 4 + 4 * 16) / 160)


def test_all_fp16_is_sixteen_bits_and_two_bytes_per_parameter():
    model = mlp()
    cm = CostModel.for_model(model, find_layers(model))
    cost = cm.cost({"0": FP16, "2": FP16})
    assert cost.effective_bits == 16.0
    n_params = sum(p.numel() for p in model.parameters())
    assert cost.size_bytes == 2 * n_params


def test_fp16_layer_costs_sixteen_bits_per_weight():
    model = mlp()
    layers = find_layers(model)
    cm = CostModel.for_model(model, layers)
    assert cm.layer_bits(layers[1], FP16) == 16 * 32
    assert cm.layer_bytes(layers[1], FP16) == 2 * 32


def test_skipped_layer_counts_as_other_params():
    model = mlp()
    layers = find_layers(model, skip=["^2$"])
    cm = CostModel.for_model(model, layers)
    assert [layer.name for layer in layers] == ["0"]
    assert cm.other_params == 8 + (8 * 4 + 4)
    cost = cm.cost({"0": LayerChoice(QuantSpec(8, "channel"))})
    assert cost.effective_bits == pytest.approx((128 * 8 + 8 * 32) / 128)
    assert cost.size_bytes == 128 + 8 * 4 + 2 * (8 + 36)


def test_conv_model_hand_computed():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3),  # (4, 27)
        nn.ReLU(),
        nn.Conv2d(4, 8, kernel_size=3, groups=2, bias=False),  # (8, 2*9=18)
        nn.BatchNorm2d(8),
    )
    layers = find_layers(model)
    assert [(layer.out_features, layer.in_features) for layer in layers] == [(4, 27), (8, 18)]
    cm = CostModel.for_model(model, layers)
    assert cm.other_params == 4 + 2 * 8  # conv bias + batchnorm weight and bias
    cost = cm.cost({
        "0": LayerChoice(QuantSpec(2, "channel", None, symmetric=False)),
        "2": LayerChoice(QuantSpec(6, "group", 32, symmetric=True)),  # 32 >= 18: 1 group per row
    })
    bits0 = 4 * 27 * 2 + 4 * 32  # 216 + 128
    bits2 = 8 * 18 * 6 + 8 * 16  # 864 + 128
    assert cost.effective_bits == pytest.approx((bits0 + bits2) / (108 + 144))
    bytes0 = 27 + 4 * 4  # 216 bits = 27 bytes
    bytes2 = 108 + 8 * 2  # 864 bits = 108 bytes
    # the BatchNorm's buffers as the export stores them: running mean and variance in fp16, the int64 batch count
    assert cost.size_bytes == bytes0 + bytes2 + 2 * 20 + 2 * 16 + 8


def test_cheaper_format_costs_less():
    model = wide_mlp()
    cm = CostModel.for_model(model, find_layers(model))
    costs = [cm.cost({"0": LayerChoice(QuantSpec(b, "channel")), "2": LayerChoice(QuantSpec(b, "channel"))}) for b in (2, 3, 4, 8)]
    assert all(isinstance(c, Cost) for c in costs)
    bits = [c.effective_bits for c in costs]
    sizes = [c.size_bytes for c in costs]
    assert bits == sorted(bits) and len(set(bits)) == 4
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_missing_layer_in_assignment_is_a_key_error():
    model = mlp()
    cm = CostModel.for_model(model, find_layers(model))
    with pytest.raises(KeyError):
        cm.cost({"0": FP16})


def test_tied_weight_between_quantizable_layers_is_not_subtracted_twice():
    torch.manual_seed(0)
    first, second = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    second.weight = first.weight
    model = nn.Sequential(first, second)
    cm = CostModel.for_model(model, find_layers(model, include_tied=True))  # a search leaves them out; the export reads them
    assert cm.other_params == 0


def test_buffers_count_as_the_export_stores_them_persistent_only():
    """A buffer the model does not save (rotary inv_freq, a causal mask cache: persistent=False) is not in the export,
    and a persistent one is: priced at what its dtype stores."""
    model = mlp()
    plain = CostModel.for_model(model, find_layers(model)).other_bytes
    model.register_buffer("mask", torch.ones(256, 256), persistent=False)
    assert CostModel.for_model(model, find_layers(model)).other_bytes == plain
    model.register_buffer("steps", torch.zeros(10, dtype=torch.int64))
    assert CostModel.for_model(model, find_layers(model)).other_bytes == plain + 80


# ---------------------------------------------------------------- latency


def test_latency_is_the_sum_of_layer_latencies_with_its_source():
    from autoq.latency import RooflineLatency, roofline_us

    model = mlp()
    latency = RooflineLatency.named("a100", batch=4)
    cm = CostModel.for_model(model, find_layers(model), latency)
    int4 = QuantSpec(4, "channel")
    assignment = Assignment.from_dict({"0": LayerChoice(int4, "rtn-mse"), "2": FP16})
    expected = roofline_us(8, 16, int4, 4, latency.device) + roofline_us(4, 8, QuantSpec.half(), 4, latency.device)
    cost = cm.cost(assignment)
    assert cost.latency_us == pytest.approx(expected)
    assert cm.latency_source == "estimate:roofline:a100"
    assert cost.size_bytes == CostModel.for_model(model, find_layers(model)).cost(assignment).size_bytes


def test_no_device_no_latency():
    model = mlp()
    cm = CostModel.for_model(model, find_layers(model))
    assignment = Assignment.from_dict({"0": FP16, "2": FP16})
    assert cm.cost(assignment).latency_us is None and cm.latency_source is None
    with pytest.raises(ValueError, match="no latency source"):  # not an AttributeError on None
        cm.layer_amount(find_layers(model)[0], FP16, "latency_ms")


def test_a_layer_no_kernel_runs_costs_the_fp16_matmul_whatever_its_format():
    """A convolution is dequantized at export: its format changes its size, not its time; so is a linear layer with an
    activation format the W8A8 kernel does not run."""
    from autoq.latency import RooflineLatency, get_device, roofline_us

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    cm = CostModel.for_model(model, find_layers(model), RooflineLatency.named("h100", batch=1))
    conv, linear = find_layers(model)
    int2, half = LayerChoice(QuantSpec(2, "channel"), "rtn-mse"), FP16
    assert cm.layer_us(conv, int2) == cm.layer_us(conv, half)
    assert cm.layer_us(linear, int2) < cm.layer_us(linear, half)
    # an activation format runs a kernel only as W8A8 (symmetric int8 on an int8 weight the kernel reads); W4A8 or an
    # asymmetric a8 is dequantized and multiplied in torch, and was charged the weight-only kernel's time
    names = ("int4-g128-asym:rtn-mse+a8-token", "int8-ch-sym:rtn-minmax+a8-tensor-asym", "int4-ch-sym:rtn-minmax+a4-token",
             "int8-ch-sym:rtn-minmax+a4-token")  # W8A4 too: only 8-bit activations run the int8 GEMM
    for name in names:
        assert cm.layer_us(linear, LayerChoice.from_name(name)) == cm.layer_us(linear, half), name
    w8a8 = LayerChoice.from_name("int8-ch-sym:rtn-minmax+a8-token")  # the W8A8 kernels: two launches, at batch 1 over fp16's one
    assert cm.layer_us(linear, w8a8) == roofline_us(10, 128, w8a8.weight, 1, get_device("h100"), int8_activations=True) > cm.layer_us(linear, half)
