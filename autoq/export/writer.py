"""``autoq.export(model, point, out_dir)``: a chosen point as packed safetensors plus ``autoq_config.json``.

Quantized layers are re-quantized with their PTQ method exactly as the search's
cache did (same codes, same fp16 scales; data-driven methods from the same
calibration batches, see `autoq.export.quantize`), stored per `autoq.export.layout`.
AWQ's and SmoothQuant's per-input-channel scale is stored beside the codes (the
layer divides its input by it), bias correction's shifted bias replaces the layer's
bias, and a layer with an activation format records it (and, static, its calibrated
range) in the config, for `autoq.export.ActQuantLinear`.
Every other parameter (biases, embeddings, norms, skipped layers) and persistent
buffer is stored as `autoq.quant.stored` says, the form the cost model counts:
fp16, but an integer tensor and one fp16 cannot hold (beyond 65504, or lost to
underflow below 6e-5) keep their dtype, the latter with a note. So the file's size
is the cost model's ``size_bytes`` plus the safetensors header. A layer the point
keeps fp16 is stored in fp16 whatever its values: the search scored ``weight.half()``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.evaluate.fidelity import check_finite_batches, user_batches
from autoq.export.config import CONFIG_NAME, PRODUCER, WEIGHTS_NAME, config_text, describe_base, unrebuildable
from autoq.export.from_run import RunPoint, model_of, point_from_run
from autoq.export.layout import to_tensors
from autoq.export.mlflow_model import input_spec, output_spec
from autoq.export.mlflow_store import check_loggable, check_registered_name, log_export
from autoq.export.quantize import check_calibration, needs_calibration, quantize_point
from autoq.files import file_crc32, first_missing, make_folder, removed_if_empty, write_text_atomic
from autoq.fingerprints import model_hash
from autoq.messages import note, warn
from autoq.model import LayerInfo, check_finite_stored, check_has_values, check_untied, find_layers, get_module, uncompiled
from autoq.quant.stored import stored_dtype


def _check_plugin_code(point: Any, assignment: Assignment) -> None:
    """Refuse to export a point whose plug-in PTQ methods were edited since the search scored it: the export quantizes
    again, with the new code, and the file's quality would not be the point's."""
    from autoq.ptq import changed_code

    recorded = point.plugin_code if isinstance(point, RunPoint) else getattr(getattr(point, "searched", None), "plugin_code", ())
    edited = changed_code(dict(recorded), {c.method for c in assignment.values() if not c.weight.is_half})
    if edited:
        raise AutoqError(f"the code of plug-in PTQ method(s) {', '.join(edited)} is not what {_scorer(point)} scored with (edited since): the "
                         "export would quantize otherwise than the point's quality says; export with the plug-in as it was, or "
                         "pass the point's .assignment to quantize by the same choices with the new code, unscored")


def _scorer(point: Any) -> str:
    """What scored ``point``, for the errors that refuse its export: a run's point names itself, a result's its trial."""
    return point.what if isinstance(point, RunPoint) else f"trial {point.trial}'s search"


def _assignment_of(point: object) -> Assignment:
    assignment = getattr(point, "assignment", point)  # a Point, or an Assignment itself
    if not isinstance(assignment, Assignment):
        raise AutoqError(f"export needs an Assignment, a Point (e.g. result.best) or an MLflow run id (str), got {type(point).__name__}")
    return assignment


def _resolve_model(model: nn.Module | str, calibration: Sequence[Any] | None, data_fingerprint: str | None,
                   data_driven: list[str]) -> tuple[nn.Module, str | None, Sequence[Any] | None, str | None]:
    """(module, built-in name or None, calibration batches, the checkpoint's dtype where the module was loaded in
    another): a name brings its workload's calibration set."""
    if isinstance(model, nn.Module):
        return uncompiled(model), None, calibration, None  # as the search took it: its layer names
    from autoq.builtin import BUILTINS, load_workload

    workload = load_workload(model, with_metric=False)  # its model and calibration data: an export evaluates nothing
    if data_driven and calibration is None and data_fingerprint and workload.data_fingerprint not in ("", data_fingerprint):
        raise AutoqError(
            f"the search calibrated on other data (fingerprint {data_fingerprint}) than {model!r} gives here "
            f"({workload.data_fingerprint}), so its {', '.join(data_driven[:3])} layers cannot be reproduced; "
            "export with the model the search used"
        )
    return (workload.model, (model if model in BUILTINS else None), (workload.calibration if calibration is None else calibration),
            workload.stored_dtype)


def _stored(name: str, tensor: torch.Tensor, kept: list[str]) -> torch.Tensor:
    """What the export stores of a parameter or buffer outside the quantized weights: `stored_dtype`'s fp16 (what the
    cost model counts), or the tensor's own dtype where fp16 cannot hold it, noted in ``kept``."""
    dtype = stored_dtype(tensor)
    if tensor.is_floating_point() and dtype != torch.float16:
        kept.append(name)
    return tensor.to(dtype).contiguous().clone()


def _save_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    metadata = {"format": "pt", "producer": PRODUCER}
    save_file(tensors, str(path), metadata=metadata)
    _sort_metadata(path, metadata)


def _sort_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Put the header's metadata in key order, in place: safetensors writes it in its hash map's order, which changes
    from process to process, so that two exports of one point differed in their bytes (and their ``file_crc32``) and
    a content-addressed store (DVC, a registry's dedup) kept both. Every order has the same length; an order not found
    (another safetensors' layout) is left as it is."""
    import itertools
    import json

    def encoded(items: Sequence[tuple[str, str]]) -> bytes:
        return json.dumps(dict(items), separators=(",", ":"), ensure_ascii=False).encode()

    wanted = encoded(sorted(metadata.items()))
    with path.open("r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = f.read(size)
        for order in itertools.permutations(metadata.items()):
            at = header.find(b'"__metadata__":' + encoded(order))
            if at >= 0:
                f.seek(8 + at + len(b'"__metadata__":'))
                f.write(wanted)
                return


def _ours(path: Path) -> bool:
    """Whether the safetensors file at ``path`` is autoq's (an export cut short before its config, by a kill): it is
    replaced, where another's model's weights are refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("producer") == PRODUCER
    except Exception:  # unreadable: not known to be ours
        return False


def _write_files(out: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write the weights and their config, both or neither: the weights go to a temporary file that replaces
    ``model.safetensors`` only once the config's text is made, so a failure before that (a full disk, Ctrl-C, a config
    JSON cannot hold) leaves the export already in the folder as it was, and one after it removes both files (the
    weights alone were refused by every later export as 'a model that autoq did not export')."""
    weights, tmp = out / WEIGHTS_NAME, out / f".{WEIGHTS_NAME}.{os.getpid()}.tmp"
    try:
        with _write_errors(out):
            _write_weights_and_config(out, weights, tmp, tensors, config)
    finally:
        with contextlib.suppress(OSError):  # what is in its way (a folder of that name) must not hide the error
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _write_errors(out: Path) -> Iterator[None]:
    """A write the disk refused (full, read-only) as an `AutoqError` naming the export folder: safetensors' own error
    ("Error while serializing: I/O error: No space left on device") was a traceback, and a failed write() of the
    config named no file at all."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, SafetensorError) and "I/O error" not in str(exc):
            raise
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("I/O error: ")[-1]
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) if isinstance(exc, OSError) else "space" in why
        advice = "free space on its disk" if full else "check that it is writable"
        raise AutoqError(f"cannot write the export to {str(out)!r} ({why}); {advice}, or export to another folder") from None


def _write_weights_and_config(out: Path, weights: Path, tmp: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """`_write_files`' work: the weights to ``tmp``, renamed into place, then the config, or neither."""
    _save_weights(tensors, tmp)
    # the size and CRC-32 of the file as written, checked at load: a changed byte loaded, and computed otherwise
    text = config_text({**config, "file_bytes": tmp.stat().st_size, "file_crc32": file_crc32(tmp)})
    os.replace(tmp, weights)
    try:
        write_text_atomic(out / CONFIG_NAME, text)
        # safetensors 0.8 writes through a temporary file made 0600 and renames it (safetensors#782), so only the
        # exporting user could read the weights (a model baked into a container as root, a shared folder). They
        # get the mode of the config written beside them, which open() gave as for any new file: 0666 less the umask.
        weights.chmod(stat.S_IMODE((out / CONFIG_NAME).stat().st_mode))
    except BaseException:
        for path in (weights, out / CONFIG_NAME):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: 'a Point', 'an Assignment'."""
    return f"{'an' if noun[:1] in 'AEIOU' else 'a'} {noun}"


def export(model: nn.Module | str | os.PathLike[str] | None, point: object, out_dir: str | os.PathLike[str],
           calibration: Iterable[Any] | None = None,
           sequential: bool | None = None, data_fingerprint: str | None = None, tracking_uri: str | None = None,
           progress: bool = True, log_to_run: bool = False, registered_model_name: str | None = None) -> Path:
    """Write ``point`` of ``model`` (a module, a built-in name or an HF directory) to ``out_dir``.

    ``model=None`` takes the model the run's search loaded (a built-in name or a directory, logged as its
    ``model_source`` parameter) for a point given as an MLflow run id; a search of a module needs it passed.

    ``point``: a `Point`, an `Assignment`, or the id of an MLflow run in ``tracking_uri`` (default
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``): a trial run's assignment, or a search run's best frontier point, as
    ``autoq export --run-id`` takes it (or its `RunPoint`); ``sequential`` and ``data_fingerprint`` then default
    to the search's, as they do for a `Point` of a `SearchResult` (``result.best``), whose calibration batches are
    checked against the search's as ``result.apply`` checks them.
    ``calibration``: the batches the search calibrated on, needed when the point uses a data-driven method
    (GPTQ, AWQ, AdaRound, bias correction); a model given by name brings its own, checked against
    ``data_fingerprint`` (the search's, when known). ``sequential``: the search ran with ``sequential=True``.
    ``progress``: a bar over the layers being quantized (GPTQ and the like take a while on large models).
    ``log_to_run``: also log the export as an MLflow model from that run (``runs:/<run id>/quantized_model``, which
    ``autoq.load`` and ``mlflow.pyfunc.load_model`` take), for a point given as a run id; ``registered_model_name``
    (with it) adds a version of it to the Model Registry under that name (see `autoq.export.mlflow_store`).
    """
    model = _checked_arguments(model, out_dir, sequential, log_to_run, registered_model_name, progress)
    run_id = point if isinstance(point, str) else None
    if run_id is not None:
        from autoq.tracking import default_tracking_uri

        tracking_uri = tracking_uri or default_tracking_uri()
        point = point_from_run(tracking_uri, run_id)
        if log_to_run:
            check_loggable(tracking_uri, run_id)  # now, not after quantizing
    elif tracking_uri is not None or log_to_run:
        option = "tracking_uri" if tracking_uri is not None else "log_to_run"
        own = getattr(point, "run_id", None)  # a Point of a search that logged to MLflow: its trial run
        how = (f": pass its run id, autoq.export(model, point.run_id ({own!r}), out_dir, tracking_uri=result.tracking_uri, ...)" if own else
               " (a Point of a search without MLflow, tracking_uri=None, has no run)" if hasattr(point, "searched") else "")
        raise AutoqError(f"{option} is for a point given as an MLflow run id (a str); this point is {_a(type(point).__name__)}{how}")
    if isinstance(point, RunPoint):  # the search's settings, unless the caller overrides them
        sequential = point.sequential if sequential is None else sequential
        data_fingerprint = data_fingerprint or point.data_fingerprint or None
        model = model_of(point) if model is None else model
    elif model is None:
        raise AutoqError(f"model=None takes the model a run searched, for a point given as an MLflow run id; this point is "
                         f"{_a(type(point).__name__)}: pass the model")
    searched = getattr(point, "searched", None)  # a Point of a SearchResult: how its search quantized (engine needs optuna)
    if searched is not None:
        sequential = searched.sequential if sequential is None else sequential
    calibration = None if calibration is None else user_batches(calibration)  # an iterator (a DataLoader's) is read more than once
    assignment = _assignment_of(point)
    model, builtin, calibration, dtype = _resolve_model(model, calibration, data_fingerprint, needs_calibration(assignment))
    why = unrebuildable(describe_base(model, builtin, dtype)) if log_to_run else None
    if why:  # said now, not after quantizing: it was logged and registered as if pyfunc could serve it
        warn(f"the MLflow model log_to_run logs cannot be loaded by mlflow.pyfunc.load_model (nor served), which rebuilds "
             f"the model from the export alone ({why}); load it with autoq.load('runs:/<run id>/quantized_model', "
             "model=yours)", stacklevel=2)
    check_has_values(model)  # before the weights' hash, which read them
    _check_searched_weights(point, model)
    _check_plugin_code(point, assignment)
    layers = _exportable_layers(model, assignment)
    if calibration:
        check_finite_batches(calibration)
    recorded = point if isinstance(point, RunPoint) else searched  # where the search's calibration digest is kept
    if recorded is not None and calibration is not None and needs_calibration(assignment):
        check_calibration(list(calibration), recorded.calibration_digest, recorded.n_calibration)
    out = Path(out_dir)
    _check_out_folder(out)
    made_from = first_missing(out)
    make_folder(out, "export")  # now too: a folder that cannot be made fails before the quantization, not after
    if (out / CONFIG_NAME).is_file():  # as save_pretrained does, an export replaces one there: said, not silent
        note(f"replacing the autoq export already in {out}")
    with removed_if_empty(out, made_from):  # whatever fails, a folder made for the export is not left empty
        with torch.no_grad():
            tensors, meta = _packed_tensors(model, assignment, layers, calibration, bool(sequential), progress)
        cost = CostModel.for_model(model, layers).cost(assignment)
        inputs = input_spec(calibration[0], model) if calibration else None
        outputs = output_spec(calibration[0], model) if inputs else None
        _write_files(out, tensors, {
            "base": describe_base(model, builtin, dtype),
            "weights": WEIGHTS_NAME,
            "assignment": assignment.to_dict(),
            "layers": meta,
            "cost": {"effective_bits": cost.effective_bits, "size_bytes": cost.size_bytes},
            **({"inputs": inputs} if inputs else {}),  # the input's dtypes and shapes, for the MLflow model's signature
            **({"outputs": outputs} if outputs else {}),  # and what predict answers
        })
    if log_to_run:
        log_export(tracking_uri, run_id, out, registered_model_name, point.run_id)
    return out


def _checked_arguments(model: object, out_dir: object, sequential: object, log_to_run: bool,
                       registered_model_name: str | None, progress: object = True) -> nn.Module | str | None:
    """Refuse arguments of the wrong kind in words, before any work; the model, a path as its str."""
    if not isinstance(out_dir, (str, os.PathLike)):  # pathlib's TypeError named neither the argument nor what it takes
        raise AutoqError(f"out_dir must be the folder to write the export to (a str or Path), got {type(out_dir).__name__} {out_dir!r}")
    if isinstance(out_dir, str) and not out_dir.strip():  # an unset variable, most likely: Path('') is the working folder
        raise AutoqError(f"out_dir is {out_dir!r}: give the folder to write the export to ('.' for the working folder)")
    if isinstance(model, os.PathLike):  # a Hugging Face folder, as a str names it
        model = os.fspath(model)
    if model is not None and not isinstance(model, (nn.Module, str)):
        raise AutoqError(f"model must be a torch.nn.Module, a built-in name or a Hugging Face folder (or None: the run's), got "
                         f"{type(model).__name__} {model!r}")
    if sequential is not None and not isinstance(sequential, (bool, np.bool_)):  # bool('no') is True: it quantized sequentially
        raise AutoqError(f"sequential must be True, False or None (as the search ran), got {type(sequential).__name__} {sequential!r}")
    for name, value in (("log_to_run", log_to_run), ("progress", progress)):  # log_to_run='no' logged to a shared store
        if not isinstance(value, (bool, np.bool_)):
            raise AutoqError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    if registered_model_name is not None:
        if not log_to_run:
            raise AutoqError("registered_model_name registers the MLflow model that log_to_run=True logs; pass both")
        check_registered_name(registered_model_name)  # now, not after quantizing
    return model


def _check_searched_weights(point: object, model: nn.Module) -> None:
    """Refuse weights other than those the point's search scored (its recorded hash), where it recorded one."""
    searched_hash = point.model_hash if isinstance(point, RunPoint) else getattr(getattr(point, "searched", None), "model_hash", "")
    if not searched_hash:
        return
    now = model_hash(model)
    if now != searched_hash:
        source = point.model_source if isinstance(point, RunPoint) else ""
        searched_on = (f"; the search ran on {source!r}: export with it (on the command line, leave --model out)" if source else
                       "; export with the searched weights")
        raise AutoqError(f"the model's weights are not the ones {_scorer(point)} scored (hash {now}, the search's {searched_hash}): "
                         f"changed since, or another model{searched_on}, or quantize these weights by the same choices, unscored "
                         "(autoq.export(model, point.assignment, ...) in Python)")


def _exportable_layers(model: nn.Module, assignment: Assignment) -> list[LayerInfo]:
    """The assignment's layers in ``model``, refusing what an export cannot write: a layer the model lacks, an
    activation format on a convolution, a quantized tied weight, NaN or inf weights."""
    if not len(assignment):  # the cost's bits per weight divided by no weights (ZeroDivisionError), an empty folder left
        raise AutoqError("the assignment names no layer; give each layer to quantize a choice (Assignment.from_dict({name: "
                         "'int4-ch-asym:rtn-mse', ...})), or export a search's point")
    found = {layer.name: layer for layer in find_layers(model, include_tied=True)}
    unknown = [name for name in assignment if name not in found]
    if unknown:
        raise AutoqError(f"the assignment names layers the model does not have: {unknown[:5]}; export it with the model it was searched on")
    layers = [found[name] for name in assignment]
    quantized = {name: c for name, c in assignment.items() if not c.weight.is_half}
    act_convs = [f"{name} ({found[name].kind})" for name, c in quantized.items() if c.activation is not None and not found[name].is_linear]
    if act_convs:
        raise AutoqError(f"activation quantization is exported for linear layers only; {act_convs[:3]} are not (convolutions, or "
                         "a MultiheadAttention's out_proj, whose input the module never passes through it): choose a weight-only format for them")
    check_untied(model, quantized, "an export")
    check_finite_stored(model, layers)  # as the search does: NaN would quantize to codes without a warning
    return layers


def _check_out_folder(out: Path) -> None:
    """Refuse, before quantizing (GPTQ on a large model takes a while), a file or another model's folder as ``out``."""
    if out.exists() and not out.is_dir():
        raise AutoqError(f"{out} is a file; pass a folder (new or existing) to export into")
    if (out / "config.json").is_file() or ((out / WEIGHTS_NAME).is_file() and not (out / CONFIG_NAME).is_file() and not _ours(out / WEIGHTS_NAME)):
        raise AutoqError(f"{out} holds a model that autoq did not export (config.json or {WEIGHTS_NAME}): the export's "
                         f"{WEIGHTS_NAME} would overwrite its weights; export into another folder")


def _packed_tensors(model: nn.Module, assignment: Assignment, layers: list[LayerInfo], calibration: Sequence[Any] | None,
                    sequential: bool, progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """(every tensor the file holds, each layer's config entry): the quantized layers packed per `autoq.export.layout`,
    and every other parameter and persistent buffer as `autoq.quant.stored` says."""
    quantized = {name: c for name, c in assignment.items() if not c.weight.is_half}
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, dict] = {}
    biases: dict[str, torch.Tensor] = {}
    qts = quantize_point(model, assignment, layers, calibration, sequential, progress)
    for layer in layers:
        choice = assignment[layer.name]
        entry = {"choice": choice.name, "kind": layer.kind, "shape": [layer.out_features, layer.in_features],
                 "weight_shape": list(get_module(model, layer.name).weight.shape)}  # the native layout, checked at load
        if layer.name in quantized:
            part = qts[layer.name]
            layer_tensors, entry["layout"] = to_tensors(layer.name, part.tensor)
            tensors.update(layer_tensors)
            if choice.activation is not None:  # the exported layer quantizes its input (ActQuantLinear)
                entry["activation"] = choice.activation.name
                if part.act_range is not None:
                    entry["act_range"] = [part.act_range.lo, part.act_range.hi]
            if part.bias is not None:  # bias correction's shifted bias
                biases[f"{layer.name}.bias"] = part.bias
        meta[layer.name] = entry
    kept: list[str] = []
    weight_names = {f"{name}.weight" for name in quantized}
    half_weights = {f"{name}.weight" for name, c in assignment.items() if c.weight.is_half}
    for pname, p in model.named_parameters():
        if pname in half_weights:  # chosen fp16: what the search scored (weight.half()) and counted, tiny values or not
            tensors[pname] = p.detach().half().contiguous().clone()
        elif pname not in weight_names:
            tensors[pname] = _stored(pname, biases.get(pname, p).detach(), kept)
    param_names = {pname for pname, _ in model.named_parameters(remove_duplicate=False)}
    for bname, b in model.state_dict().items():
        if bname not in param_names and bname not in tensors:
            tensors[bname] = _stored(bname, b, kept)
    if kept:
        note(f"kept {len(kept)} tensor(s) in their own precision that fp16 would turn to inf (beyond 65504) or "
             f"lose to underflow (below 6e-5): {kept[:3]}")
    return tensors, meta
