"""``autoq_config.json``: what an export holds, and which model it rebuilds on."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.files import parse_json

EXPORT_FORMAT = "autoq.export"
EXPORT_VERSION = 1
CONFIG_NAME = "autoq_config.json"
WEIGHTS_NAME = "model.safetensors"
PRODUCER = "autoq"  # the weights file's safetensors metadata: an export's own


def describe_base(model: nn.Module, builtin: str | None, stored_dtype: str | None = None) -> dict[str, Any]:
    """How to rebuild the architecture: a Hugging Face config and class, or a built-in's name (or both); the dtype of
    its floating-point parameters (``stored_dtype``, the checkpoint's, where the model was loaded in fp32 for the
    search's reference: a bf16 checkpoint comes back in bf16), and a generation config where the model has one (its
    stop tokens, sampling)."""
    base: dict[str, Any] = {"builtin": builtin, "class": type(model).__name__}
    hf_config = getattr(model, "config", None)
    if hf_config is not None and hasattr(hf_config, "to_dict"):
        base["hf_config"] = hf_config.to_dict()
        if stored_dtype and "dtype" in base["hf_config"]:
            base["hf_config"]["dtype"] = stored_dtype
    if stored_dtype:
        base["dtype"] = stored_dtype
    else:
        base.update(_float_dtypes(model))
    generation = getattr(model, "generation_config", None)
    if generation is not None and hasattr(generation, "to_dict"):
        base["generation_config"] = generation.to_dict()
    return base


def _float_dtypes(model: nn.Module) -> dict[str, Any]:
    """The model's floating-point dtype (the one most of its parameters' elements have) and the parameters of another:
    an fp16 T5 keeps its ``wo`` layers fp32, a bf16 model its norms fp32, say. A model of mixed dtypes was rebuilt
    all in fp32: twice its memory, and on CUDA no kernel (they take fp16 and bf16 activations)."""
    elements: Counter[torch.dtype] = Counter()
    for p in model.parameters():
        if p.is_floating_point():
            elements[p.dtype] += p.numel()
    if not elements:
        return {}
    main = max(elements, key=lambda dtype: elements[dtype])
    found: dict[str, Any] = {"dtype": _name(main)}
    others = {name: _name(p.dtype) for name, p in model.named_parameters() if p.is_floating_point() and p.dtype != main}
    if others:
        found["parameter_dtypes"] = others
    return found


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _with_parameter_dtypes(model: nn.Module, dtypes: Any) -> nn.Module:
    """``model`` with each parameter an export recorded in another dtype than the model's (`_float_dtypes`) cast to it,
    before the loader loads the stored values into it. A name the model lacks is left to the loader, which names it."""
    for name, dtype in (dtypes.items() if isinstance(dtypes, dict) else ()):
        wanted = float_dtype(dtype)
        try:
            param = model.get_parameter(name)
        except AttributeError:
            continue
        if wanted is not None and param.dtype != wanted:
            param.data = param.data.to(wanted)
    return model


def config_text(config: dict[str, Any]) -> str:
    """``autoq_config.json``'s text for ``config``. ``default=str``: a Hugging Face config may hold what JSON has no
    type for (a path), which its text rebuilds as well; it raised after the weights were written."""
    return json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, **config}, indent=1, default=str) + "\n"


def read_config(out_dir: Path) -> dict[str, Any]:
    path = out_dir / CONFIG_NAME
    if not out_dir.exists():
        raise AutoqError(f"{str(out_dir)!r} does not exist: pass the folder 'autoq export' (or autoq.export) wrote, or an MLflow URI "
                         "of one (runs:/<run id>/quantized_model)")
    if not path.is_file():
        raise AutoqError(f"{str(out_dir)!r} is not an autoq export: it has no {CONFIG_NAME} (write one with 'autoq export' or autoq.export)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AutoqError(f"{path} is not valid JSON: {exc}") from None
    data = parse_json(text, str(path))
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise AutoqError(f"{path} is not an autoq export config (missing 'format': '{EXPORT_FORMAT}')")
    version = data.get("version")
    if version != EXPORT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > EXPORT_VERSION
        hint = "a newer autoq wrote it: upgrade autoq to load it" if newer else "the file is damaged; export again"
        raise AutoqError(f"{path}: export version {version!r} is not supported (this autoq reads version {EXPORT_VERSION}); {hint}")
    layers = data.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(e, dict) and {"choice", "kind", "shape"} <= set(e) for e in layers.values()):
        raise AutoqError(f"{path} lacks its 'layers' (each with its choice, kind and shape): the file is damaged; export again")
    base = data.get("base", {})
    if not isinstance(base, dict) or not isinstance(base.get("hf_config") or {}, dict):  # a traceback of .get or dict() on a list
        raise AutoqError(f"{path}: its 'base' (and a Hugging Face model's 'hf_config' in it) must be a JSON object: the file is "
                         "damaged; export again")
    unlaid = [name for name, e in layers.items() if e["choice"] != "fp16" and "layout" not in e]
    if unlaid:  # read as unquantized, its packed tensors were then 'tensors the model does not have'
        raise AutoqError(f"{path}: layer {unlaid[0]!r} is quantized ({layers[unlaid[0]]['choice']}) but names no 'layout' of its "
                         "packed weight: the file is damaged; export again")
    return data


def rebuild_base(base: dict[str, Any], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A model of the exported architecture holding ``state`` (the export's tensors by parameter name; the loader then
    loads and checks them as for a model passed in). A Hugging Face model is built by ``from_pretrained(None, config=...,
    state_dict=..., dtype=...)``, as its checkpoint loads: in its dtype (built in fp32 and cast, a bf16 7B model took twice
    its memory on the way, and its rotary ``inv_freq``, fp32 in a loaded checkpoint, was rounded to bf16), without a
    random initialization of weights the export overwrites (its construction on the CPU took most of a load's time)."""
    if base.get("hf_config"):
        import transformers

        from autoq.builtin.huggingface import only_the_pooler
        from autoq.quiet import quiet_logs

        hf = dict(base["hf_config"])
        cls = hf_model_class(base.get("class"))
        if cls is None:
            raise AutoqError(f"transformers has no model class {base.get('class')!r}; pass model= to autoq.load")
        model_type = hf.pop("model_type", None)
        or_given = "or pass model= (an instance of the exported architecture) to autoq.load"
        if not isinstance(model_type, str):
            raise AutoqError(f"the export's Hugging Face config names no model_type: the file is damaged; export again, {or_given}")
        # fp32 where none is recorded: a model of mixed dtypes, exported by an autoq that recorded none, came back in fp32
        dtype = float_dtype(base.get("dtype")) or torch.float32
        with quiet_logs():
            try:
                config = transformers.AutoConfig.for_model(model_type, **hf)
            except ValueError:  # its 12 kB message lists every model type this transformers knows
                raise AutoqError(f"the export's model type {model_type!r} is unknown to transformers {transformers.__version__} (the "
                                 f"export was made with transformers {hf.get('transformers_version', 'of another version')}): "
                                 f"upgrade transformers, {or_given}") from None
            options = dict(config=config, state_dict=dict(state), dtype=dtype, output_loading_info=True)
            try:
                model, info = cls.from_pretrained(None, **options)
                if only_the_pooler(info.get("missing_keys")):  # searched without one, as autoq loads such a checkpoint
                    with contextlib.suppress(TypeError):  # a class that takes no such option: the loader names what is missing
                        model, info = cls.from_pretrained(None, add_pooling_layer=False, **options)
            except (RuntimeError, ValueError) as exc:  # a tensor of another shape than the config gives it
                detail = (next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
                          or _mismatched(cls, config, state) or str(exc).splitlines()[0])
                raise AutoqError(f"the export's tensors do not fit the model its config describes ({detail}): the export is "
                                 "damaged; write it again with 'autoq export' (or autoq.export)") from None
            except ImportError as exc:  # a config that asks for a library (a quantization_config's): not autoq's format
                raise AutoqError(f"the export's {model_type!r} config asks transformers for what it cannot load here "
                                 f"({str(exc).splitlines()[0] if str(exc) else 'ImportError'}): the export's config is damaged or "
                                 f"edited; export again, {or_given}") from None
            except (AttributeError, TypeError) as exc:  # a class the config does not fit: a BertModel of a GPT-2 config
                raise AutoqError(f"transformers' {cls.__name__} cannot be built from the export's {model_type!r} config "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): the export's class and config "
                                 f"do not belong together (edited or damaged); export again, {or_given}") from None
            if base.get("generation_config") and getattr(model, "generation_config", None) is not None:
                model.generation_config = transformers.GenerationConfig.from_dict(dict(base["generation_config"]))
        return _with_parameter_dtypes(model, base.get("parameter_dtypes")).eval()
    if base.get("builtin"):
        from autoq.builtin import builtin_architecture, load_workload

        model = builtin_architecture(base["builtin"])
        if model is None:
            model = load_workload(base["builtin"], with_metric=False).model
        return _with_parameter_dtypes(_in_dtype(model, base.get("dtype")), base.get("parameter_dtypes"))
    raise AutoqError("this export does not say how to rebuild its model; pass model= (an instance of the same architecture) to autoq.load")


def hf_model_class(name: Any) -> type | None:
    """transformers' model class ``name`` (a ``PreTrainedModel``), else None: any name the export's config gave was
    taken, and ``AutoTokenizer``'s ``from_pretrained(None)`` went to the Hugging Face Hub for minutes of retries."""
    import transformers

    cls = getattr(transformers, name, None) if isinstance(name, str) and name else None
    return cls if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel) else None


def _mismatched(cls: type, config: Any, state: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor of ``state`` whose shape the model ``config`` describes does not give it, said with both shapes:
    transformers 5 puts that in a log report (which autoq quiets), its error reading only "look at the above report".
    The model is built on the meta device, allocating nothing; None where it cannot be built so."""
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    except Exception:  # noqa: BLE001 - the detail is a courtesy: the error stands without it
        return None
    for name, tensor in state.items():
        if name in shapes and tuple(tensor.shape) != shapes[name]:
            return f"{name} is {tuple(tensor.shape)} in the file, {shapes[name]} in the model its config describes"
    return None


def unrebuildable(base: dict[str, Any]) -> str | None:
    """Why `rebuild_base` cannot build the model ``base`` describes (a model class of the user's own, or of a Hugging
    Face folder's own code), else ``None``: an MLflow model of such an export, which loads with ``autoq.load`` alone,
    was logged and registered, and failed in every ``mlflow.pyfunc.load_model``."""
    if base.get("hf_config"):
        name = base.get("class", "")
        return None if hf_model_class(name) is not None else f"its class {name!r} is not one of transformers' models"
    if base.get("builtin"):
        return None
    return f"it is a {base.get('class')}, neither a built-in model nor a Hugging Face one: the export holds its weights, not its code"


def float_dtype(name: Any) -> torch.dtype | None:
    """The floating-point dtype an export names (``bfloat16``), else ``None``."""
    wanted = getattr(torch, name, None) if isinstance(name, str) and name else None
    return wanted if isinstance(wanted, torch.dtype) and wanted.is_floating_point else None


def _in_dtype(model: nn.Module, dtype: str | None) -> nn.Module:
    """The rebuilt model in the dtype it was exported in (a bf16 model came back in fp32: twice the memory, and on CUDA
    no kernel, which takes fp16 and bf16 activations only)."""
    wanted = float_dtype(dtype)
    return model.to(wanted) if wanted is not None else model
