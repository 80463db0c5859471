"""``autoq.load(out_dir, model=None)``: rebuild an exported model with `QuantLinear` layers.

Linear layers (and transformers' ``Conv1D``) become `QuantLinear`, which keeps the
weight packed and runs the Triton kernel on CUDA (fp16/bf16 activations) or the
plain-torch dequantize-and-matmul path elsewhere; those with an activation format
(W8A8) become `ActQuantLinear`. Convolutions have no kernel:
their weights are dequantized into the ordinary module at load. Every other
parameter is loaded from its fp16 copy into the model's own dtype.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.errors import AutoqError
from autoq.export.act_modules import ActQuantLinear
from autoq.export.config import WEIGHTS_NAME, float_dtype, read_config, rebuild_base
from autoq.export.layout import from_tensors
from autoq.export.mlflow_store import ARTIFACT_PATH, downloaded, is_artifact_uri
from autoq.export.modules import QuantLinear
from autoq.files import file_crc32
from autoq.messages import warn
from autoq.model import LINEAR_KINDS, compiled_inside, find_layers, get_module, meta_tensor, readable_float, to_native
from autoq.quant.activation import ActRange, ActSpec


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _read_weights(path: Path, expected_bytes: int | None, expected_crc: str | None = None) -> dict[str, torch.Tensor]:
    """The export's tensors; a missing, cut-short or damaged file is an error that names it, not safetensors' own, and
    so is one changed in place (its CRC-32 another than the export recorded: a flipped byte loaded, and computed 11% off)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    again = "write it again with 'autoq export' (or autoq.export)"
    if not path.is_file():
        raise AutoqError(f"{path} is missing: the export is incomplete; {again}")
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        size = path.stat().st_size
        cut = f", and it is {size} bytes where the export wrote {expected_bytes}: cut short or changed since" if expected_bytes not in (None, size) else ""
        raise AutoqError(f"{path} is not a readable safetensors file ({exc}){cut}; {again}") from None
    if isinstance(expected_crc, str) and (crc := file_crc32(path)) != expected_crc:
        raise AutoqError(f"{path} has changed since the export wrote it (its CRC-32 is {crc}, the export's {expected_crc}): "
                         f"damaged or edited; {again}")
    # an export never writes NaN (it refuses such a model), nor Inf in a scale: the loaded model answered NaN, unsaid
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        values = readable_float(tensor)
        nan = _holds_nan(values)
        if nan or (name.endswith("scales") and not torch.isfinite(values).all()):
            raise AutoqError(f"{path}: tensor {name!r} holds {'NaN' if nan else 'Inf'}, which no export writes: "
                             f"the file was damaged or edited since; {again}")
    return tensors


def _holds_nan(t: torch.Tensor) -> bool:
    """Whether ``t`` holds a NaN. Its sum is NaN where it does (or where +Inf meets -Inf, which the exact test then
    tells apart): one reduction with nothing allocated, where ``isnan(t).any()`` makes a mask of each tensor
    (``benchmarks/load_time.py``, a 0.5B bf16 model: 2.53 s against 2.61 s)."""
    return bool(torch.isnan(t.sum())) and bool(torch.isnan(t).any())


def load(out_dir: str | Path, model: nn.Module | None = None, backend: str = "auto", tracking_uri: str | None = None) -> nn.Module:
    """The exported model, ready to run. ``model``: an instance of the same architecture to load into (modified in place).

    ``out_dir``: the export's folder, or the MLflow URI of one ``autoq export --log-to-run`` logged
    (``runs:/<run id>/quantized_model``, ``models:/<model id>``, ``models:/<registered name>/<version>``), downloaded
    from ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
    ``backend``: ``auto`` (Triton on CUDA for fp16/bf16, else torch), ``triton`` or ``torch`` (see `autoq.kernels.ops`)."""
    from autoq.kernels.ops import check_backend

    check_backend(backend)  # here, not at the first forward
    if backend == "triton":
        _check_triton_runs()
    if not isinstance(out_dir, (str, os.PathLike)):  # pathlib's TypeError named neither the argument nor what it takes
        raise AutoqError(f"out_dir must be the export's folder (a str or Path) or an MLflow model URI, got {type(out_dir).__name__} {out_dir!r}")
    if isinstance(model, (str, torch.device)) and _names_device(model):  # load(out, "cuda"): load has no device argument
        raise AutoqError(f"load's second argument is a model to load into, not a device ({str(model)!r}): the model is built on "
                         "the CPU; move it after loading, autoq.load(out).cuda() (its layers then run the Triton kernels for "
                         "fp16/bf16 activations)")
    if model is not None and not isinstance(model, nn.Module):
        raise AutoqError(f"model must be a torch.nn.Module of the export's architecture to load into (or None: rebuilt from the "
                         f"export), got {type(model).__name__}")
    meta = meta_tensor(model) if model is not None else None
    if meta is not None:  # loaded as a no-op into it (torch's UserWarnings), the packed codes moved to meta: a torch error at the first forward
        raise AutoqError(f"the model to load into holds {meta!r} on the 'meta' device (built under torch.device('meta') or "
                         "init_empty_weights), which load cannot fill: build it on the CPU, or leave model= out to rebuild the "
                         "exported model (a Hugging Face or built-in one)")
    if is_artifact_uri(out_dir):
        with downloaded(str(out_dir), tracking_uri) as local:
            return _load_folder(local, model, backend)
    if tracking_uri is not None:
        path = Path(out_dir)
        what = "a folder" if path.is_dir() else "a file" if path.exists() else "a path that does not exist"
        raise AutoqError(f"tracking_uri is for an MLflow artifact URI such as runs:/<run id>/{ARTIFACT_PATH}; {str(out_dir)!r} is {what}")
    return _load_folder(Path(out_dir), model, backend)


def _names_device(value: str | torch.device) -> bool:
    """Whether ``value`` is a torch device or a string that names one (``"cuda"``, ``"cuda:1"``, ``"cpu"``)."""
    try:
        torch.device(value)
    except (RuntimeError, TypeError):
        return False
    return True


def _check_triton_runs() -> None:
    """Refuse ``backend="triton"`` where no kernel can run: no Triton, or no CUDA GPU (unless ``TRITON_INTERPRET=1``
    runs them on the CPU). It loaded, and failed at the first forward."""
    from autoq.kernels.capability import interpreting, require_triton

    if not torch.cuda.is_available() and not interpreting():
        raise AutoqError("backend='triton' runs the Triton kernels on a CUDA GPU, and none is visible here (torch.cuda.is_available() "
                         "is False); load with backend='auto' (Triton on CUDA, torch elsewhere) or 'torch'")
    require_triton(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _check_not_compiled(model: nn.Module) -> None:
    """Refuse a ``torch.compile``d model or submodule: its compiled code is bound to the float layers, so layers swapped
    inside it are never run (the loaded model computed in float while its module tree showed `QuantLinear`)."""
    compiled = [name or "the model" for name in compiled_inside(model)]
    if compiled:
        where = ", ".join(repr(c) if c != "the model" else c for c in compiled[:3])
        raise AutoqError(f"{where} {'is' if len(compiled) == 1 else 'are'} torch.compile'd, and compiled code keeps running the float "
                         "layers that load would replace; load into the model before torch.compile (its ._orig_mod), then compile "
                         "the loaded model")


# config entries that say how a model is run or where it came from, not what it computes
_BOOKKEEPING = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "use_cache", "_attn_implementation",
                "_attn_implementation_autoset", "attn_implementation", "output_attentions", "output_hidden_states", "return_dict",
                "torchscript", "_commit_hash", "id2label", "label2id", "tokenizer_class", "transformers.js_config"}


def _warn_config_differs(model: nn.Module, base: dict) -> None:
    """Warn when a Hugging Face model given to load has settings other than the exported one's in its config (another
    ``rope_theta``, ``rms_norm_eps``, activation): the shapes match, so it loads, and computes otherwise."""
    exported, config = base.get("hf_config"), getattr(model, "config", None)
    if not exported or config is None or not hasattr(config, "to_dict"):
        return
    exported, here = _comparable(exported), _comparable(json.loads(json.dumps(config.to_dict(), default=str)))  # as the export stored it
    differ = sorted(k for k in set(exported) | set(here) if exported.get(k) != here.get(k))
    if differ:
        shown = ", ".join(f"{k} ({here.get(k)!r} here, {exported.get(k)!r} in the export)" for k in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        warn(f"the model's config differs from the exported model's in {shown}{more}: the weights load, but the model may "
             "compute otherwise than the one searched; leave model= out to rebuild the exported one", stacklevel=4)


def _comparable(config: Any) -> Any:
    """A config (a nested composite one's ``text_config``, ``vision_config`` too) without its bookkeeping entries."""
    if isinstance(config, dict):
        return {k: _comparable(v) for k, v in config.items() if k not in _BOOKKEEPING}
    return config


def _check_ties(model: nn.Module, state: dict) -> None:
    """Refuse an export holding two different tensors for parameters this model shares (an ``lm_head`` untied in memory
    from a model whose config still ties it): loading both into the one tensor kept the second, silently."""
    shared: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(name)
    for names in shared.values():
        held = [n for n in names if n in state]
        if len(held) > 1 and any(not torch.equal(state[held[0]], state[n]) for n in held[1:]):
            raise AutoqError(f"the export holds different tensors for {held[0]!r} and {held[1]!r}, which this model ties (one shared "
                             "tensor: its config has tie_word_embeddings=True, or the like); pass model= built untied, as the exported one was "
                             "(its config with tie_word_embeddings=False)")


def _load_folder(out: Path, model: nn.Module | None, backend: str) -> nn.Module:
    config = read_config(out)
    if model is not None:
        _check_not_compiled(model)
        _warn_config_differs(model, config.get("base", {}))
    tensors = _read_weights(out / _weights_name(config), config.get("file_bytes"), config.get("file_crc32"))
    quantized = {name: entry for name, entry in config["layers"].items() if "layout" in entry}
    quant_keys = {f"{name}.{part}" for name in quantized for part in ("qweight", "scales", "zeros", "input_scale")}
    state = {k: v for k, v in tensors.items() if k not in quant_keys}
    if model is None:
        base = config.get("base", {})
        model = rebuild_base(base, {**state, **_placeholders(quantized, base.get("dtype"))})
    _check_not_loaded(model, config["layers"])
    found = {layer.name: layer for layer in find_layers(model, include_tied=True)}
    for name, entry in config["layers"].items():
        layer = found.get(name)
        if layer is None or [layer.out_features, layer.in_features] != entry["shape"]:
            got = None if layer is None else [layer.out_features, layer.in_features]
            prefix = getattr(model, "base_model_prefix", "")
            inner = f" (the export holds the base model: pass model=yours.{prefix}, the {prefix} of the {type(model).__name__})" if (
                layer is None and prefix and f"{prefix}.{name}" in found) else ""
            outer, _, rest = name.partition(".")
            if layer is None and not inner and rest in found and outer == "_orig_mod":  # written by an autoq that kept the wrapper
                inner = (" (the export was written from a torch.compile'd model's wrapper, by an earlier autoq that kept its "
                         "'_orig_mod.' prefix: export it again from this autoq, which exports the model itself)")
            elif layer is None and not inner and rest in found:  # the reverse: the whole LM's export, its base model given
                inner = f" (the export holds the model whose '{outer}' this one is: pass that model, e.g. the causal LM, not its .{outer})"
            here = f"has no layer {name!r}" if layer is None else f"has layer {name!r} of shape {got}"
            raise AutoqError(f"the model does not match the export: it {here}, the export one of {entry['shape']}{inner}")
        native = list(get_module(model, name).weight.shape)
        if layer.kind != entry.get("kind", layer.kind) or native != entry.get("weight_shape", native):
            raise AutoqError(f"the model does not match the export: layer {name!r} is a {layer.kind} of weight {native} here, a "
                             f"{entry['kind']} of weight {entry.get('weight_shape', entry['shape'])} in the export; pass the model it was exported from")

    _check_ties(model, state)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape (an embedding of another vocabulary, say)
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0])
        raise AutoqError(f"the model does not match the export ({detail}); pass the model it was exported from") from None
    if result.unexpected_keys:
        raise AutoqError(f"the export holds tensors the model does not have: {result.unexpected_keys[:5]}; pass the model it was exported from")
    loaded_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in state}
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [k for k in result.missing_keys if k not in {f"{n}.weight" for n in quantized} and not (k in params and id(params[k]) in loaded_ids)]
    if missing:
        raise AutoqError(f"the export lacks parameters the model has: {missing[:5]}; it was exported from another model")

    for name, entry in quantized.items():
        spec = _choice(name, entry).weight
        packed = from_tensors(name, tensors, spec, tuple(entry["shape"]), entry["layout"])
        module = get_module(model, name)
        input_scale = _input_scale(name, tensors, packed.shape[1])
        if "activation" in entry:
            act = _activation(name, entry["activation"])
            if act.static and "act_range" not in entry:  # it loaded, then failed at the first forward without naming the layer
                raise AutoqError(f"the export's config gives layer {name!r} the static activation format {act.name} but no act_range "
                                 "(its calibrated input range): the file is damaged; export again")
            act_range = _act_range(name, entry["act_range"]) if "act_range" in entry else None
            layer = ActQuantLinear(packed.to(module.weight.device), act, act_range, module.bias,
                                   None if input_scale is None else input_scale.to(module.weight.device), backend, module.weight.dtype)
            _replace(model, name, layer)
        elif entry["kind"] in LINEAR_KINDS:
            _replace(model, name, QuantLinear(packed.to(module.weight.device), module.bias, backend, input_scale, module.weight.dtype))
        else:  # convolutions: no kernel, dequantize into the module (with AWQ's input scale folded in)
            weight = packed.dequantize() if input_scale is None else packed.dequantize() / input_scale[None, :]
            module.weight.data = to_native(module, weight).to(module.weight.device)
    return model.eval()


def _check_not_loaded(model: nn.Module, layers: dict[str, Any]) -> None:
    """Refuse a model an export was loaded into already: its layers are autoq's, which it was refused as lacking (or as
    having no quantizable layer at all)."""
    for name in layers:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, (QuantLinear, ActQuantLinear)):
            raise AutoqError(f"the model was loaded from an export already (its layer {name!r} is autoq's {type(module).__name__}): "
                             "pass a float model of the architecture to load into, or leave model= out to rebuild it")


def _weights_name(config: dict[str, Any]) -> str:
    """The config's ``weights`` file: a plain name in the export's own folder (a path read any file the config named,
    another folder's export or ``/etc/...``: an export downloaded from a store is not to be trusted so far)."""
    name = config.get("weights", WEIGHTS_NAME)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise AutoqError(f"the export's config names its weights {name!r}, not a file in the export's folder ({WEIGHTS_NAME!r}): "
                         "the file is damaged or edited; export again")
    return name


def _choice(name: str, entry: dict[str, Any]) -> LayerChoice:
    """A quantized layer's recorded choice, a damaged config said as such (an unknown one named only the format)."""
    try:
        return LayerChoice.from_name(entry["choice"])
    except (AutoqError, KeyError, TypeError) as exc:
        raise AutoqError(f"the export's config gives layer {name!r} the choice {entry.get('choice')!r}, which autoq cannot read ({exc}): "
                         "the file is damaged, or from a newer autoq") from None


def _activation(name: str, value: Any) -> ActSpec:
    """A layer's recorded activation format, a damaged config said as such."""
    try:
        return ActSpec.from_name(value)
    except (AutoqError, TypeError, AttributeError) as exc:
        raise AutoqError(f"the export's config gives layer {name!r} the activation format {value!r}, which autoq cannot read ({exc}): "
                         "the file is damaged, or from a newer autoq") from None


def _input_scale(name: str, tensors: dict[str, torch.Tensor], k: int) -> torch.Tensor | None:
    """A layer's stored input scale (AWQ, SmoothQuant), checked as the format gives it: fp32 ``(K,)``, finite and
    nonzero (the layer divides by it). One of another length loaded and failed at the first forward in torch's broadcasting words."""
    scale = tensors.get(f"{name}.input_scale")
    if scale is None:
        return None
    if scale.dtype != torch.float32 or tuple(scale.shape) != (k,) or not bool((torch.isfinite(scale) & (scale != 0)).all()):
        raise AutoqError(f"the export's {name}.input_scale is {scale.dtype} {tuple(scale.shape)}, where the format stores fp32 ({k},) of "
                         "finite nonzero values: the file is damaged or edited; export again")
    return scale


def _placeholders(quantized: dict[str, dict], dtype: str | None) -> dict[str, torch.Tensor]:
    """An uninitialized weight for each quantized layer, of its native shape: the rebuilt model's float weight, which
    `QuantLinear` replaces (or the dequantized weight overwrites) at once, need not be filled at random first."""
    wanted = float_dtype(dtype) or torch.float32
    out = {}
    for name, entry in quantized.items():
        if "weight_shape" not in entry:
            continue
        dims, matrix = entry["weight_shape"], entry["shape"]
        # a damaged or edited shape was a traceback from torch.empty (a negative size, a text), or an allocation of 400 TB
        if not (_sizes(dims, range(2, 6)) and _sizes(matrix, (2,)) and math.prod(dims) == math.prod(matrix)):
            raise AutoqError(f"the export's layer {name!r} has weight_shape {dims!r}, where the format stores the dimensions of the "
                             f"layer's weight: 2 to 5 positive integers whose product is its shape's {matrix!r}: the file is damaged "
                             "or edited; export again")
        try:
            out[f"{name}.weight"] = torch.empty(dims, dtype=wanted)
        except RuntimeError as exc:  # more memory than there is: the allocator's error, said for what it is
            raise AutoqError(f"the export's layer {name!r} declares a weight of {dims!r}, which this machine cannot hold "
                             f"({str(exc).splitlines()[0][:200]}): the file is damaged or edited, or the model too large here") from None
    return out


def _sizes(value: Any, lengths: Any) -> bool:
    """Whether ``value`` is a list of positive integers, as many as one of ``lengths``: a shape as the config records it."""
    return (isinstance(value, list) and len(value) in lengths
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value))


def _act_range(name: str, value: Any) -> ActRange:
    """A layer's recorded static input range, ``[lo, hi]``: anything else is a damaged config, said as such (it raised
    a bare ``TypeError`` from ``ActRange``)."""
    numbers = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or not all(map(math.isfinite, value)) or value[0] > value[1]:
        raise AutoqError(f"the export's config gives layer {name!r} the input range {value!r}, not [lo, hi] (two finite numbers, "
                         "lo <= hi): the file is damaged; export again")
    return ActRange(float(value[0]), float(value[1]))
