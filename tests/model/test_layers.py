"""find_layers, weight views and module lookup."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from autoq.errors import AutoqError
from autoq.model import (
    LayerInfo,
    check_finite_stored,
    check_finite_weights,
    compiled_inside,
    find_layers,
    get_module,
    left_out_note,
    name_examples,
    searched_tied,
    tied_weights,
    to_native,
    uncompiled,
    weight_2d,
)
from autoq.model.layers import unsearched_weights


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Conv1D(12, 6)  # transformers: weight is (in=6, out=12)
        self.mlp = nn.Linear(12, 10)
        self.norm = nn.LayerNorm(10)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 6, kernel_size=3)
        self.conv2d = nn.Conv2d(4, 8, kernel_size=(3, 2), groups=2)
        self.embed = nn.Embedding(20, 6)
        self.block = Block()
        self.head = nn.Linear(10, 3, bias=False)


def net() -> Net:
    torch.manual_seed(0)
    return Net()


def test_finds_every_kind_with_shapes():
    layers = find_layers(net())
    assert layers == [
        LayerInfo("conv1d", "conv1d", 6, 4 * 3),
        LayerInfo("conv2d", "conv2d", 8, (4 // 2) * 3 * 2),
        LayerInfo("block.attn", "hf_conv1d", 12, 6),
        LayerInfo("block.mlp", "linear", 10, 12),
        LayerInfo("head", "linear", 3, 10),
    ]
    for layer in layers:
        assert layer.n_weights == layer.out_features * layer.in_features


def test_n_weights_matches_parameter_count():
    model = net()
    for layer in find_layers(model):
        assert layer.n_weights == get_module(model, layer.name).weight.numel()


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "block.attn", "block.mlp", "head"])
def test_weight_2d_round_trip(name):
    model = net()
    module = get_module(model, name)
    layer = next(layer for layer in find_layers(model) if layer.name == name)
    w2d = weight_2d(module)
    assert w2d.shape == (layer.out_features, layer.in_features)
    assert w2d.dtype == torch.float32
    back = to_native(module, w2d)
    assert back.shape == module.weight.shape
    assert back.dtype == module.weight.dtype
    assert torch.equal(back, module.weight.detach())


def test_hf_conv1d_is_transposed():
    module = net().block.attn
    assert module.weight.shape == (6, 12)
    assert torch.equal(weight_2d(module), module.weight.detach().t())
    # row i of the (out, in) view holds the weights of output i
    x = torch.randn(2, 6)
    assert torch.allclose(module(x), x @ weight_2d(module).t() + module.bias, atol=1e-6)


def test_conv_rows_are_output_channels():
    module = net().conv2d
    w2d = weight_2d(module)
    for o in range(module.out_channels):
        assert torch.equal(w2d[o], module.weight.detach()[o].flatten())


def test_weight_2d_is_a_copy():
    module = net().head
    before = module.weight.detach().clone()
    w2d = weight_2d(module)
    w2d.add_(1.0)
    assert torch.equal(module.weight.detach(), before)


def test_to_native_restores_half_dtype():
    torch.manual_seed(0)
    module = nn.Linear(8, 4).half()
    w2d = weight_2d(module)
    assert w2d.dtype == torch.float32
    back = to_native(module, w2d)
    assert back.dtype == torch.float16
    assert torch.equal(back, module.weight.detach())


def test_to_native_keeps_the_weights_memory_format():
    """result.apply and autoq.load gave a channels_last convolution contiguous (NCHW) weights, unsaid."""
    conv = nn.Conv2d(3, 16, 3).to(memory_format=torch.channels_last)
    back = to_native(conv, weight_2d(conv))
    assert back.stride() == conv.weight.stride() and torch.equal(back, conv.weight.detach())
    linear = nn.Linear(6, 4)
    linear.weight = nn.Parameter(torch.randn(6, 4).t())  # a transposed view: its strides kept too
    back = to_native(linear, weight_2d(linear) + 1)
    assert back.stride() == (1, 4) and torch.equal(back, linear.weight.detach() + 1)
    plain = nn.Conv2d(3, 16, 3)
    assert to_native(plain, weight_2d(plain)).is_contiguous()


def test_to_native_hf_conv1d_layout_from_modified_view():
    module = net().block.attn
    w2d = torch.arange(12 * 6, dtype=torch.float32).reshape(12, 6)
    native = to_native(module, w2d)
    assert native.shape == (6, 12)
    assert native.is_contiguous()
    assert torch.equal(native, w2d.t())


def test_skip_removes_matching_layers():
    names = [layer.name for layer in find_layers(net(), skip=["^head$", "attn"])]
    assert names == ["conv1d", "conv2d", "block.mlp"]


def test_skip_uses_search_semantics():
    names = [layer.name for layer in find_layers(net(), skip=["conv"])]
    assert names == ["block.attn", "block.mlp", "head"]


def test_skip_matching_nothing_raises():
    with pytest.raises(AutoqError, match="lm_head"):
        find_layers(net(), skip=["head", "lm_head"])


def test_skip_matching_non_quantizable_module_only_raises():
    with pytest.raises(AutoqError, match="embed"):
        find_layers(net(), skip=["embed"])


def test_no_quantizable_layer_raises():
    with pytest.raises(AutoqError, match=r"nn\.Linear"):
        find_layers(nn.Sequential(nn.ReLU()))


def test_embedding_and_norm_only_model_raises():
    with pytest.raises(AutoqError, match="no quantizable layer"):
        find_layers(nn.Sequential(nn.Embedding(5, 3), nn.LayerNorm(3)))


def test_skipping_everything_raises():
    names = [layer.name for layer in find_layers(net())]
    with pytest.raises(AutoqError, match=rf"no quantizable layer after the skip rules: \['\.\*', 'head'\] skip {len(names)} of its {len(names)} \(the model's "
                                         rf"{len(names)} quantizable layer\(s\) are named like '{names[0]}'.*\); skip fewer"):
        find_layers(net(), skip=[".*", "head"])  # which patterns, and what they matched: nothing said either


def test_invalid_regex_raises():
    with pytest.raises(AutoqError, match="invalid skip pattern"):
        find_layers(net(), skip=["("])


def test_a_skip_pattern_that_matches_nothing_shows_what_names_look_like():
    with pytest.raises(AutoqError, match=r"\['\^attn'\] match no quantizable layer; the model's 5 quantizable layer\(s\) are "
                                         r"named like 'conv1d', 'conv2d', 'block.attn', \.\.\., 'head'"):
        find_layers(net(), skip=["^attn"])


@pytest.mark.parametrize(("names", "expected"), [
    (["a"], "1 quantizable layer(s) are named like 'a'"),
    (["a", "b", "c", "d"], "4 quantizable layer(s) are named like 'a', 'b', 'c', 'd'"),
    (["a", "b", "c", "d", "e"], "5 quantizable layer(s) are named like 'a', 'b', 'c', ..., 'e'"),
])
def test_name_examples_shows_the_first_names_and_the_last(names, expected):
    assert name_examples(names).endswith(expected)


class TiedLM(nn.Module):
    """A language model in miniature whose output layer shares the token embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 20, bias=False)
        self.head.weight = self.embed.weight


def test_a_tied_layer_is_found_and_left_out_unless_asked_for():
    model = TiedLM()
    assert tied_weights(model) == {"head": ["embed.weight"]}
    assert [layer.name for layer in find_layers(model)] == ["body"]
    assert [layer.name for layer in find_layers(model, include_tied=True)] == ["body", "head"]
    assert tied_weights(net()) == {}


def test_a_module_used_twice_has_a_tied_weight():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert tied_weights(model) == {"0": ["2.weight"]}
    with pytest.raises(AutoqError, match=r"no quantizable layer .*1 layer\(s\) with tied weights .*'0' \(shared with '2.weight'\)"):
        find_layers(model)


def test_searched_tied_leaves_out_what_skip_names_and_refuses_a_pin_of_a_tied_layer_only():
    model = TiedLM()
    layers = find_layers(model)
    assert searched_tied(model, (), (), layers) == {"head": ["embed.weight"]}
    assert searched_tied(model, ("^head$",), (), layers) == {}
    assert searched_tied(model, (), ("body|head",), layers) == {"head": ["embed.weight"]}  # it pins body too
    with pytest.raises(AutoqError, match="pin pattern 'head' matches only 'head', whose weight is tied to 'embed.weight'"):
        searched_tied(model, (), ("head",), layers)


def _normed() -> nn.Module:
    from torch.nn.utils import parametrizations

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    parametrizations.weight_norm(model[0])
    parametrizations.spectral_norm(model[2])
    with pytest.warns(FutureWarning):  # the older hook form, deprecated but still common in loaded models
        nn.utils.weight_norm(model[4])
    return model


def test_a_layer_whose_weight_a_parametrization_computes_is_left_out_with_a_note():
    """Writing a quantized weight into a weight-normed layer changed nothing: its forward computes the weight again,
    so every trial scored that layer in float."""
    model = _normed()
    assert [layer.name for layer in find_layers(model)] == ["6"]
    note = left_out_note(model, (), {})
    assert note.startswith("3 layer(s) whose weight a parametrization computes") and "'0', '2', '4'" in note
    assert "remove_parametrizations" in note
    assert left_out_note(model, ("^[024]$",), {}) is None
    nn.utils.parametrize.remove_parametrizations(model[0], "weight")
    assert [layer.name for layer in find_layers(model)] == ["0", "6"]
    with pytest.raises(AutoqError, match=r"no quantizable layer .*1 layer\(s\) whose weight a parametrization computes .*'0'"):
        find_layers(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))))


def test_a_pruned_layer_is_told_to_make_its_pruning_permanent():
    """A pruned layer was told to remove a weight_norm parametrization it does not have: both fixes named raised."""
    from torch.nn.utils import prune

    model = _normed()
    prune.l1_unstructured(model[6], "weight", amount=0.5)
    note = left_out_note(model, (), {})
    assert note.startswith("3 layer(s) whose weight a parametrization computes") and "'0', '2', '4';" in note
    assert "1 pruned layer(s) (torch.nn.utils.prune" in note and "prune.remove(module, 'weight')" in note
    with pytest.raises(AutoqError, match=r"no quantizable layer .*; 1 pruned layer\(s\) .* '6'; make the pruning permanent") as info:
        find_layers(model)
    assert str(info.value).count("pruned") == 1  # the parametrized layers are not called pruned
    prune.remove(model[6], "weight")  # what the note says, which works
    assert [layer.name for layer in find_layers(model)] == ["6"]
    prune.l1_unstructured(model[0], "bias", amount=0.5)  # a pruned bias beside a weight_norm: the weight_norm's note
    assert "pruned" not in left_out_note(model, (), {})


def test_get_module():
    model = net()
    assert get_module(model, "block.mlp") is model.block.mlp
    with pytest.raises(AutoqError, match="block.nope"):
        get_module(model, "block.nope")


def test_check_finite_weights_passes_on_clean_model():
    model = net()
    check_finite_weights(model, find_layers(model))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_weights_names_the_layer(bad):
    model = net()
    with torch.no_grad():
        model.block.mlp.weight[3, 1] = bad
    with pytest.raises(AutoqError, match="'block.mlp'"):
        check_finite_weights(model, find_layers(model))


def test_weights_up_to_fp16s_largest_value_are_accepted_and_beyond_it_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = 65504.0  # fp16 holds it exactly
    check_finite_weights(model, find_layers(model))
    with torch.no_grad():
        model[0].weight[0, 0] = 65520.0  # rounds to inf in fp16
    with pytest.raises(AutoqError, match=r"layer '0' has weights up to 6.552e\+04, beyond fp16's 65504"):
        check_finite_weights(model, find_layers(model))


@pytest.mark.parametrize(("conv", "why"), [
    (nn.Conv2d(4, 4, 3, groups=2), "a grouped convolution (groups=2)"),
    (nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), "padding=(1, 1) and padding_mode='reflect'"),
    (nn.Conv1d(2, 4, 3, padding=1, padding_mode="circular"), "padding=(1,) and padding_mode='circular'"),
    (nn.Conv2d(2, 4, 3, padding=1), ""),
    (nn.Conv2d(2, 4, 3, padding="valid"), ""),
])
def test_a_convolution_whose_input_is_not_rows_of_zero_padded_patches_is_marked(conv, why):
    """Data-driven methods read a convolution's input as rows of zero-padded patches against its weight's columns: two
    groups, or reflected or circular padding, are not that (their rows would have been the wrong inputs)."""
    (layer,) = find_layers(nn.Sequential(conv))
    assert why in layer.no_rows and bool(layer.no_rows) == bool(why)


def test_check_finite_weights_ignores_layers_not_listed():
    model = net()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    check_finite_weights(model, find_layers(model, skip=["head"]))


def test_check_finite_stored_names_searched_layers_as_layers_and_the_rest_as_parameters():
    """One read of each tensor: a searched layer's NaN or fp16 overflow names the layer; any other parameter by name."""
    model = net()
    layers = find_layers(model, skip=["head"])
    check_finite_stored(model, layers)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(AutoqError, match=r"the model's 'head.weight' holds NaN"):
        check_finite_stored(model, layers)
    with torch.no_grad():
        model.head.weight[0, 0] = 0.0
        model.block.mlp.weight[0, 0] = 1e6
    with pytest.raises(AutoqError, match=r"layer 'block.mlp' has weights up to 1e\+06, beyond fp16"):
        check_finite_stored(model, layers)
    with torch.no_grad():
        model.block.mlp.weight[0, 0] = float("nan")
    with pytest.raises(AutoqError, match=r"layer 'block.mlp' has NaN or Inf weights"):
        check_finite_stored(model, layers)


def test_float8_weights_are_checked_in_fp16():
    model = nn.Sequential(nn.Linear(4, 4))
    model[0].weight.data = model[0].weight.data.to(torch.float8_e4m3fn)
    check_finite_weights(model, find_layers(model))
    model[0].weight.data[1, 1] = float("nan")
    with pytest.raises(AutoqError, match="NaN or Inf"):
        check_finite_weights(model, find_layers(model))


def test_compiled_submodules_are_found_by_name_and_unwrapped():
    inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model = nn.Sequential(torch.compile(inner), nn.Linear(4, 2))
    assert compiled_inside(model) == ["0"]
    assert compiled_inside(torch.compile(model)) == ["", "_orig_mod.0"]
    assert uncompiled(torch.compile(model)) is model
    assert uncompiled(model) is model and compiled_inside(inner) == []


def test_weights_in_modules_autoq_does_not_quantize_get_a_note():
    """An encoder's out_proj was searched while its packed q/k/v stayed fp16 (37.5% of its matrix weights), unsaid."""
    encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.Sequential(encoder, nn.Unflatten(-1, (1, 4, 4)), nn.ConvTranspose2d(1, 2, 3))
    note = left_out_note(model, (), {})
    assert note.startswith("2 weight matri(ces) in modules autoq does not quantize stay fp16: ")
    assert "'0.self_attn.in_proj_weight' (MultiheadAttention's packed q/k/v projection, 768 weights)" in note
    assert "'2.weight' (ConvTranspose2d, 18 weights)" in note
    assert left_out_note(model, ("in_proj", "^2"), {}) is None  # what a skip names is not news
    assert "0.self_attn.out_proj" in [layer.name for layer in find_layers(model)]
    other_dims = left_out_note(nn.Sequential(nn.MultiheadAttention(8, 2, kdim=4, vdim=4)), (), {})  # q/k/v kept apart
    assert other_dims.startswith("3 weight matri(ces)") and "'0.k_proj_weight' (MultiheadAttention's k projection, 32 weights)" in other_dims


def test_recurrent_and_bilinear_weights_get_the_note_too():
    """An LSTM's 24,576 weights stayed fp16 unsaid while the README said such weights are named."""
    model = nn.Sequential(nn.Linear(8, 16), nn.LSTM(16, 4, num_layers=1, bidirectional=True), nn.GRUCell(4, 4), nn.Bilinear(4, 4, 2))
    note = left_out_note(model, (), {})
    assert note.startswith("7 weight matri(ces) in modules autoq does not quantize stay fp16: ")
    assert "'1.weight_ih_l0' (LSTM, 256 weights)" in note and "and 4 more" in note
    names = [name for name, _, _ in unsearched_weights(model)]
    assert names == ["1.weight_ih_l0", "1.weight_hh_l0", "1.weight_ih_l0_reverse", "1.weight_hh_l0_reverse", "2.weight_ih", "2.weight_hh",
                     "3.weight"]


def test_a_lazy_layer_before_its_first_forward_is_refused_with_the_fix():
    """autoq.load(folder, model=Fresh()) on a model of lazy layers read an uninitialized weight's shape: torch's
    "Can't access the shape of an uninitialized parameter". After one forward the layer is an ordinary Linear."""
    model = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(AutoqError, match=r"layer '0' \(LazyLinear\) has no weight shape yet: .*run the model once on an example batch"):
        find_layers(model)
    model(torch.randn(2, 12))
    assert [(layer.name, layer.in_features) for layer in find_layers(model)] == [("0", 12), ("2", 16)]


@pytest.mark.parametrize("layer", [nn.Linear(4, 4), nn.Conv2d(3, 4, 3), Conv1D(4, 4)], ids=["linear", "conv2d", "hf_conv1d"])
def test_a_model_that_is_itself_one_layer_is_told_to_wrap_it(layer):
    """Its own weight was taken for a tied alias ('' shared with 'weight'), the model refused as having no quantizable
    layer and told to untie weights; searched, its export loaded back unquantized (a layer named '' replaced nothing)."""
    with pytest.raises(AutoqError, match=r"the model is itself one layer \(\w+\).*nn.Sequential\(layer\)"):
        find_layers(layer)
    assert [info.name for info in find_layers(nn.Sequential(layer))] == ["0"]


def test_a_model_on_the_meta_device_is_refused_with_what_to_do(tmp_path):
    """torch's 'Tensor.item() cannot be called on meta tensors' came from deep in a check; a model whose weights accelerate
    offloaded to disk runs, but autoq cannot read them: loading it whole is the way, not loading its weights again."""
    from accelerate import disk_offload

    from autoq.model import check_has_values

    with torch.device("meta"):
        empty = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(AutoqError, match=r"^the model's '0.weight' is on the 'meta' device, which holds shapes but no values; load"):
        check_has_values(empty)
    offloaded = disk_offload(nn.Sequential(nn.Linear(4, 4)), str(tmp_path / "offload"), execution_device="cpu")
    assert offloaded(torch.ones(1, 4)).shape == (1, 4)  # it runs, from the weights on disk
    with pytest.raises(AutoqError, match=r"is on the 'meta' device: accelerate offloaded it .*load the model whole on one device"):
        check_has_values(offloaded)
    check_has_values(nn.Sequential(nn.Linear(4, 4)))  # weights in memory: nothing to say
