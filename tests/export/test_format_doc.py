"""docs/export_format.md as a contract: a numpy reader written from that page alone rebuilds every stored weight, the
activation quantization and the file's size, and must agree with ``autoq.load``. The round-trip tests cannot see a
change that packs and unpacks alike (another bit order, another group indexing); this test can."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

import autoq
from autoq.choice import Assignment, LayerChoice

CHOICE = re.compile(r"^int(\d)-(tensor|ch|g(\d+))-(sym|asym):([\w-]+)(?:\+a(\d)-(tensor|token)(-asym)?)?$")

POINT = {  # every bit-width, granularity, layout and input scale, with K that fits no word or group
    "conv": "int2-ch-asym:awq",  # K = 3*3*2 = 18: a bit stream; AWQ's scale per unfolded column, folded at load
    "fc1": "int4-tensor-sym:rtn-mse",  # K = 80: int32 words
    "fc2": "int3-g32-asym:rtn-mse",  # K = 37: a short last group
    "fc3": "int5-g64-sym:awq",  # K = 67: an input scale on a linear layer
    "fc4": "int6-g128-asym:rtn-mse",  # K = 130
    "fc5": "int8-ch-sym:smoothquant+a8-tensor",  # K = 24: int32 words, a static activation range
    "fc6": "fp16",
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, (3, 2))
        self.fc1, self.fc2, self.fc3 = nn.Linear(80, 37), nn.Linear(37, 67), nn.Linear(67, 130)
        self.fc4, self.fc5, self.fc6 = nn.Linear(130, 24), nn.Linear(24, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        for fc in (self.fc1, self.fc2, self.fc3, self.fc4, self.fc5):
            h = torch.relu(fc(h))
        return self.fc6(h)


def codes(qweight: np.ndarray, layout: str, bits: int, n: int, k: int) -> np.ndarray:
    """The page's two layouts, as it states them."""
    if layout == "int32-k":
        per_word = 32 // bits
        words = qweight.view(np.uint32)  # stored signed: reinterpret
        cols = np.arange(k)
        return (words[:, cols // per_word] >> ((cols % per_word) * bits).astype(np.uint32)) & ((1 << bits) - 1)
    assert layout == "bitstream" and qweight.dtype == np.uint8 and qweight.shape == ((n * k * bits + 7) // 8,)
    stream = np.unpackbits(qweight, bitorder="little")  # stream bit j = bit j % 8 of byte j // 8
    at = np.arange(n * k)[:, None] * bits + np.arange(bits)  # code i: stream bits i*b .. i*b + b - 1, LSB first
    return (stream[at].astype(np.int64) << np.arange(bits)).sum(1).reshape(n, k)


def per_weight(values: np.ndarray, granularity: str, group: str | None, n: int, k: int) -> np.ndarray:
    if granularity == "tensor":
        assert values.shape == (1, 1)
        return np.broadcast_to(values, (n, k))
    if granularity == "ch":
        assert values.shape == (n, 1)
        return np.broadcast_to(values, (n, k))
    g = int(group)
    assert values.shape == (n, -(-k // g))
    return values[:, np.arange(k) // g]


def dequantized(name: str, entry: dict, tensors: dict[str, np.ndarray]) -> np.ndarray:
    bits, granularity, group, sym, _method, *_ = CHOICE.match(entry["choice"]).groups()
    bits, (n, k) = int(bits), entry["shape"]
    q = codes(tensors[f"{name}.qweight"], entry["layout"], bits, n, k).astype(np.float32)
    assert q.max() <= (1 << bits) - 1
    scales = tensors[f"{name}.scales"]
    assert scales.dtype == np.float16
    if sym == "asym":
        zero = per_weight(tensors[f"{name}.zeros"].astype(np.float32), granularity, group, n, k)
    else:
        assert f"{name}.zeros" not in tensors
        zero = np.float32(1 << (bits - 1))
    return per_weight(scales.astype(np.float32), granularity, group, n, k) * (q - zero)


def fake_quant_static(u: np.ndarray, bits: int, lo: float, hi: float, symmetric: bool) -> np.ndarray:
    if symmetric:
        step = np.float32(max(np.float32(max(abs(lo), abs(hi))) / np.float32(2 ** (bits - 1) - 1), 1e-8))
        top = 2 ** (bits - 1) - 1
        return np.clip(np.round(u / step), -top, top) * step
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    step = np.float32(max(np.float32(hi - lo) / np.float32(2**bits - 1), 1e-8))
    zero = np.round(np.float32(-lo) / step)
    return (np.clip(np.round(u / step) + zero, 0, 2**bits - 1) - zero) * step


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model, batches = Net().eval(), [torch.randn(8, 3, 6, 5) for _ in range(2)]
    assignment = Assignment(tuple((name, LayerChoice.from_name(choice)) for name, choice in POINT.items()))
    out = autoq.export(model, assignment, tmp_path_factory.mktemp("fmt") / "q", calibration=batches, progress=False)
    return out, autoq.load(out, model=Net())


def test_a_reader_of_the_page_alone_rebuilds_every_weight_and_tensor(exported):
    out, loaded = exported
    config = json.loads((out / "autoq_config.json").read_text())
    tensors = load_file(str(out / "model.safetensors"))
    assert (config["format"], config["version"]) == ("autoq.export", 1) and set(config["layers"]) == set(POINT)
    layouts, read = set(), set()
    for name, entry in config["layers"].items():
        module = loaded.get_submodule(name)
        if entry["choice"] == "fp16":
            assert "layout" not in entry and tensors[f"{name}.weight"].dtype == np.float16
            np.testing.assert_array_equal(tensors[f"{name}.weight"].astype(np.float32), module.weight.detach().numpy())
            read.add(f"{name}.weight")
            continue
        w = dequantized(name, entry, tensors)
        if f"{name}.input_scale" in tensors:
            s = tensors[f"{name}.input_scale"]
            assert s.dtype == np.float32 and s.shape == (entry["shape"][1],)
            w = w / s[None, :]  # the equivalent float weight; a convolution's scale is folded in so
        got = module.weight.detach().numpy()
        assert list(got.shape) == entry["weight_shape"]
        np.testing.assert_allclose(w.reshape(entry["weight_shape"]), got, rtol=1e-6, atol=1e-7, err_msg=name)
        layouts.add(entry["layout"])
        read |= {key for key in tensors if key.rsplit(".", 1)[0] == name and not key.endswith(".bias")}
    assert layouts == {"int32-k", "bitstream"}
    state = loaded.state_dict()
    for key in set(tensors) - read:  # biases: fp16, as the module holds them
        assert tensors[key].dtype == np.float16, key
        np.testing.assert_array_equal(tensors[key].astype(np.float32), state[key].numpy(), err_msg=key)
    data_bytes = sum(t.nbytes for t in tensors.values())
    assert data_bytes == config["cost"]["size_bytes"]  # the header alone
    assert config["file_bytes"] == (out / "model.safetensors").stat().st_size > data_bytes


def test_the_activation_rule_of_the_page_gives_the_loaded_layer_output(exported):
    out, loaded = exported
    entry = json.loads((out / "autoq_config.json").read_text())["layers"]["fc5"]
    tensors = load_file(str(out / "model.safetensors"))
    *_, act_bits, act_gran, act_asym = CHOICE.match(entry["choice"]).groups()
    assert (entry["activation"], act_gran) == ("a8-tensor", "tensor")
    lo, hi = entry["act_range"]
    torch.manual_seed(1)
    x = torch.randn(6, 24) * 3  # beyond the calibrated range too: clamped
    u = x.numpy() / tensors["fc5.input_scale"]  # the range is that of x / s
    u_hat = fake_quant_static(u, int(act_bits), lo, hi, symmetric=act_asym is None)
    expected = u_hat @ dequantized("fc5", entry, tensors).T + tensors["fc5.bias"].astype(np.float32)
    with torch.no_grad():
        got = loaded.fc5(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, x.numpy() / tensors["fc5.input_scale"] @ dequantized("fc5", entry, tensors).T
                           + tensors["fc5.bias"].astype(np.float32), rtol=1e-4, atol=1e-4)  # the rounding is seen
