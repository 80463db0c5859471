"""Compute a metric's `SensitivityTable` for a workload's search space, through an on-disk cache.

The cache lives in ``autoq.builtin.cache_dir() / "sensitivity"``, one JSON file per
key; the key hashes the model weights, the calibration data's fingerprint and batch
shapes, the metric, its settings and the (layer, options) it covers, so any change in any of
them computes a new table and an unchanged search reuses the old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoq.builtin.workload import Workload, cache_dir, keep_in_cache
from autoq.choice import LayerChoice
from autoq.code_digest import code_digest
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache, check_finite_batches
from autoq.evaluate.cache import needs_stats
from autoq.evaluate.fidelity import call_on_user_batch
from autoq.fingerprints import batch_shapes_digest, data_fingerprint, model_hash, structure_digest
from autoq.messages import note
from autoq.model import LayerInfo, check_finite_weights
from autoq.model.capture import DEFAULT_MAX_SAMPLES, CalibrationStats
from autoq.model.modes import eval_mode
from autoq.progress import progress_bar
from autoq.ptq import method_info
from autoq.quiet import quiet_logs
from autoq.sensitivity.inputs import Inputs, map_tensors
from autoq.sensitivity.registry import MetricOutput, get_metric, resolve_settings
from autoq.sensitivity.table import Entry, SensitivityTable

# Raised when what a table's scores mean changes, so that no table cached before is read as one of now.
# 2: the forward metrics score an option's bias, input scale and activation format too, not its weight alone.
# 3: rtn-percentile interpolates its quantiles (in groups under 500 weights it was rtn-minmax); a negative Hessian trace
#    estimate scores 0; a one-column output is read as a regression, not a one-class softmax (every score was 0); the
#    forward metrics score layers whose input holds the batch on another axis, and those the model calls without forward.
# 4: fisher draws its logits' residuals with the softmax's covariance instead of sampling labels; rtn-percentile takes a
#    ragged last group's quantiles over its real weights.
# 5: a one-column `logits` field (a Hugging Face num_labels=1 head) is a regression too; fisher scores an fp16 model's
#    diagonal in float64 (small entries flushed to 0); a class masked with a -inf logit adds 0 to kl, not NaN; a
#    sequence-first model with one calibration batch is scored one option per pass (its copies attended each other).
# 6: AWQ's and AdaRound's low-rank output error on layers wider than their factor counts its isotropic tail outside the
#    factor's span only (it was added over all directions, counting the sketched ones twice).
# 7: the smallest scale is fp16's smallest value (2**-24), not 1e-6: rows of weights below about 1e-4 used few codes.
# 8: sqnr leaves a masked position's infinite reference (a -inf logit) out of the signal: it scored every option 0.
# 9: the forward metrics check that a layer's stacked copies are the same input before giving each its option (a
#    sequence-major (T*B, F) view interleaved them, mixing options); a (1, T) tensor broadcast over the rows is kept
#    whole when batches are re-cut or stacked.
# 10: n_samples rows in all, spread over the batches: more one-row batches than n_samples gave a row each, all of them.
SCORING_VERSION = 10


def cache_key(model_digest: str, data_digest: str, metric: str, settings: Mapping[str, Any], layers: Sequence[LayerInfo], options: Sequence[Sequence[LayerChoice]]) -> str:
    """What a cached table is found by: everything its scores depend on, including the code of the metric and of each
    PTQ method it quantizes with (``SCORING_VERSION`` covers autoq's own helpers; a plug-in edited between runs must
    not get the table of its old version)."""
    methods = sorted({c.method for opts in options for c in opts if not c.weight.is_half})
    blob = json.dumps(
        {"scoring": SCORING_VERSION, "model": model_digest, "data": data_digest, "metric": metric,
         "settings": {k: repr(v) for k, v in sorted(settings.items())},
         "options": [[layer.name, [c.name for c in opts]] for layer, opts in zip(layers, options)],
         "code": [code_digest(get_metric(metric).fn), *(method_info(m).code for m in methods)]},
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def cache_path(metric: str, key: str) -> Path:
    return cache_dir() / "sensitivity" / f"{metric}-{key}.json"


def compute_table(
    model: nn.Module,
    batches: Iterable[Any],
    layers: Sequence[LayerInfo],
    options: Sequence[Sequence[LayerChoice]],
    metric: str,
    settings: Mapping[str, Any] | None = None,
    *,
    model_name: str = "",
    fingerprint: str = "",
    loss: Callable[[Any, Any], torch.Tensor] | None = None,
    use_cache: bool = True,
    refresh: bool = False,
    progress: bool = True,
    weights: QuantCache | None = None,
    wider: Sequence[Sequence[LayerChoice]] | None = None,
    announce: str = "",
    seeding: bool = False,
) -> SensitivityTable:
    """The ``metric`` table over ``layers`` x ``options``, from the cache when an identical one was computed.

    ``batches``: a sequence, or any iterable of batches (a DataLoader, a generator), read once into a list.
    ``loss(output, batch)`` makes the ``hessian`` metric use a task loss on ``(inputs, labels)`` batches (``fisher``
    draws from the model's own output distribution and takes none); tables computed with a custom loss are not cached.
    ``refresh`` recomputes and overwrites a cached table; ``use_cache=False`` neither reads nor writes.
    ``weights`` shares quantized weights between metrics (and with a search).
    ``wider``: options per layer that include ``options`` (a pinned search's space without its pins): a table of them
    in the cache is read first, where one is, since it scores every pair asked for; it is never computed.
    ``announce``: a line that names the step (a search's seeding), printed on stderr with ``progress`` once it is known
    whether the table comes from the cache (it said "cached after the first run" on every run, the cached ones too).
    ``seeding``: the table seeds a search, which takes the metric's default settings: a note's ``--set`` advice says
    where to give them (it named an option of ``autoq sensitivity`` that ``autoq search`` refused).
    """
    if not isinstance(batches, Sequence):  # a DataLoader or a generator, as autoq.search takes: batches[0] was a TypeError
        batches = list(batches)
    if len(layers) != len(options):  # zip() kept the shorter: the layers past it were left out of the table, unsaid
        raise AutoqError(f"compute_table takes one list of options per layer: got {len(layers)} layers and {len(options)} option lists")
    info = get_metric(metric)
    resolved = resolve_settings(info, settings)
    digest = model_hash(model)
    data_digest = fingerprint or data_fingerprint(batches)
    cacheable = use_cache and loss is None and not _own_statistics(weights, batches, layers, options)
    keys = _cache_keys(model, digest, batches, fingerprint, data_digest) if cacheable else None  # once: the model's code is read
    path = _cache_file(keys, metric, resolved, layers, options) if keys else None
    wide = _cache_file(keys, metric, resolved, layers, wider) if keys and wider else None
    for cached in (path, wide):
        table = None if cached is None or refresh else _cached_table(cached, seeding)
        if table is not None:
            _say(announce and progress, f"{announce}: read from the cache")
            return table
    _say(announce and progress, f"{announce} (kept in the cache for the next run) ..." if path else f"{announce} ...")
    check_finite_batches(batches)  # as a search does: every score was NaN, refused after the whole metric ran
    check_finite_weights(model, layers)
    if any(p.is_inference() for p in model.parameters()):  # a RuntimeError from deep in a metric, or seeding fell back unexplained
        raise AutoqError("the model's weights are inference tensors (the model was built or loaded under torch.inference_mode), "
                         "which no sensitivity metric can score: build or load it outside torch.inference_mode (torch.no_grad() "
                         "serves as well), or seed from none")
    if loss is None and batches:  # a batch the model cannot take ((inputs, labels) pairs) failed deep in a metric, unexplained
        with torch.no_grad(), eval_mode(model):  # not inference_mode: a tensor a model caches at its first call (rotary
            # tables) would be an inference tensor, which the gradient metrics' backward cannot save
            call_on_user_batch(model, batches[0], f"calibration batch 0 of {len(batches)}")
    inputs = Inputs(model, tuple(_normal_tensors(b) for b in batches), tuple(layers), tuple(tuple(o) for o in options), loss, weights)
    start = time.perf_counter()
    bar = progress_bar(total=info.n_steps(inputs, resolved), desc=f"autoq sensitivity {metric}", disable=not progress, dynamic_ncols=True)
    try:
        # out of the caller's torch.inference_mode, if any: the gradient metrics failed under it (enable_grad does not
        # leave it, and their tensors were inference tensors), and a search seeded by default fell back to random mixes
        with quiet_logs(), eval_mode(model), torch.inference_mode(False):
            out = info.fn(inputs.with_stats(), resolved, bar)
    finally:
        bar.close()
    _check_output(metric, out, layers, options)
    table = SensitivityTable(
        metric=metric, model_hash=digest, data_fingerprint=data_digest, entries=out.entries, seconds=time.perf_counter() - start,
        model_name=model_name, params=tuple((k, repr(v)) for k, v in resolved.items()),
        layer_stats=tuple((layer, tuple((k, _stat(metric, layer, k, v)) for k, v in stats.items())) for layer, stats in out.layer_stats.items()),
        notes=tuple(out.notes),
    )
    if path is not None:  # one that cannot be kept is still used: a search seeded by default ran unseeded
        keep_in_cache(path, table.save, f"the {metric} sensitivity table", "computed")
    return show_notes(table, seeding)


def _normal_tensors(batch: Any) -> Any:
    """``batch`` with each inference tensor (made under ``torch.inference_mode``) cloned into a normal one, which
    autograd may save for the gradient metrics' backward; the batch itself where it holds none."""
    return map_tensors(batch, _normal)


def _normal(tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_inference():
        return tensor
    with torch.inference_mode(False):
        return tensor.clone()


def _say(show: Any, line: str) -> None:
    """Print ``line`` on stderr where ``show`` is true."""
    if show:
        print(line, file=sys.stderr, flush=True)


def show_notes(table: SensitivityTable, seeding: bool = False) -> SensitivityTable:
    """Print the table's notes on stderr, as computed or read back (from the cache, or a file a search is seeded from):
    a warning shown only when the numbers were computed was lost on every later read. ``seeding``: a search's table,
    whose notes' ``--set`` advice is for ``autoq sensitivity``, said so with how to seed from its table."""
    for said in table.notes:
        if seeding and "--set " in said:
            said += (f" (settings of 'autoq sensitivity --metric {table.metric} --set ...', run with this search's --model, "
                     "--space and --skip: it prints the search that seeds from its table, --seed-from DIR/<model>-<metric>.json)")
        note(said)
    return table


def _check_output(metric: str, out: Any, layers: Sequence[LayerInfo], options: Sequence[Sequence[LayerChoice]]) -> None:
    """Refuse, naming the metric, what no table may hold: a plug-in's NaN was cached and failed the seeding solver
    later in scipy's words; a wrong option name read as 'the same (layer, option) twice'."""
    def refuse(what: str) -> AutoqError:
        return AutoqError(f"sensitivity metric {metric!r} returned {what}")

    if not isinstance(out, MetricOutput):
        raise refuse(f"a {type(out).__name__}; a metric returns MetricOutput(entries) (autoq.sensitivity.registry)")
    names = {layer.name: {c.name for c in opts} for layer, opts in zip(layers, options)}
    seen: set[tuple[str, str]] = set()
    for entry in out.entries:
        if not isinstance(entry, Entry):
            raise refuse(f"an entry of type {type(entry).__name__}; each is an Entry(layer, option, score, stderr=None)")
        if entry.layer not in names:
            raise refuse(f"an entry for layer {entry.layer!r}, which it was not asked to score (an Entry's layer is the layer's name)")
        if entry.option not in names[entry.layer]:
            known = sorted(names[entry.layer])
            listed = ", ".join(known[:4]) + (", ..." if len(known) > 4 else "")
            raise refuse(f"an entry for option {entry.option!r} of layer {entry.layer!r}, not one of its options ({listed}): "
                         "an Entry's option is the choice's name (choice.name)")
        if (entry.layer, entry.option) in seen:
            raise refuse(f"two entries for ({entry.layer}, {entry.option}); score each (layer, option) once")
        seen.add((entry.layer, entry.option))
        if not isinstance(entry.score, numbers.Real) or not math.isfinite(entry.score):
            raise refuse(f"the score {entry.score!r} for ({entry.layer}, {entry.option}); a score is a finite number, higher meaning "
                         "more sensitive")
    if isinstance(out.notes, str) or not all(isinstance(note, str) for note in out.notes):
        raise refuse(f"notes {out.notes!r}; notes are a tuple of strings, one warning each")
    unscored = [(layer, option) for layer, opts in names.items() for option in sorted(opts) if (layer, option) not in seen]
    if unscored:  # a table without them failed only when it seeded a search ('no score for layer ...')
        raise refuse(f"no entry for {len(unscored)} (layer, option) pair(s) it was asked to score, such as {unscored[0]}; score each once")


def _stat(metric: str, layer: str, key: str, value: Any) -> float:
    """A per-layer statistic as a Python float (a numpy scalar could not be written to JSON), or a clear refusal."""
    if not isinstance(value, numbers.Real):
        raise AutoqError(f"sensitivity metric {metric!r} returned the statistic {key!r} of layer {layer!r} as {value!r}; "
                         "a layer statistic is a number")
    return float(value)


def _own_statistics(weights: QuantCache | None, batches: Sequence[Any], layers: Sequence[LayerInfo],
                    options: Sequence[Sequence[LayerChoice]]) -> bool:
    """Shared weights whose data-driven options may differ from a fresh computation's (sequential capture, statistics
    given as a mapping, or captured from other batches, with other sampling, or over other layers: each layer's rows are
    sampled with the seed of its place in the list): a table computed through them is neither read from nor written to
    the cache, whose key says nothing of them."""
    if weights is None or weights.stats is None:
        return False
    stats = weights.stats
    if not isinstance(stats, CalibrationStats) or stats.sequential:
        return True
    if (any(needs_stats(c) for opts in options for c in opts)
            and [layer.name for layer in stats.layers] != [layer.name for layer in layers if not layer.no_rows]):
        return True
    same_batches = (len(stats.batches) == len(batches) and all(a is b for a, b in zip(stats.batches, batches))
                    or data_fingerprint(stats.batches) == data_fingerprint(batches))
    return not same_batches or stats.max_samples != DEFAULT_MAX_SAMPLES or stats.seed != 0


def _cache_keys(model: nn.Module, digest: str, batches: Sequence[Any], fingerprint: str, data_digest: str) -> tuple[str, str]:
    """The model's and the data's parts of a cache key (``digest``: the model's weights hash; ``data_digest``: the
    fingerprint, else the batches' own)."""
    key_model = f"{digest}:{structure_digest(model)}"  # the same weights in another architecture score otherwise
    # a workload's fingerprint names its data recipe, not how it is batched (digits-cnn's batch_size): the key adds the shapes
    key_data = f"{fingerprint}:{batch_shapes_digest(batches)}" if fingerprint else data_digest
    return key_model, key_data


def _cache_file(keys: tuple[str, str], metric: str, resolved: Mapping[str, Any], layers: Sequence[LayerInfo],
                options: Sequence[Sequence[LayerChoice]]) -> Path:
    """Where the cache keeps the table of these inputs (``keys``: `_cache_keys`)."""
    return cache_path(metric, cache_key(*keys, metric, resolved, layers, options))


def _cached_table(path: Path, seeding: bool = False) -> SensitivityTable | None:
    """The table the cache holds at ``path``, its notes shown; ``None`` where there is none, or it is damaged (a copy
    cut short, an edit: computed again and written over)."""
    if not path.is_file():
        return None
    try:
        return show_notes(dataclasses.replace(SensitivityTable.load(path), from_cache=True), seeding)
    except AutoqError:
        return None


def workload_table(workload: Workload, layers: Sequence[LayerInfo], options: Sequence[Sequence[LayerChoice]], metric: str,
                   settings: Mapping[str, Any] | None = None, *, use_cache: bool = True, refresh: bool = False, progress: bool = True,
                   weights: QuantCache | None = None, wider: Sequence[Sequence[LayerChoice]] | None = None,
                   announce: str = "", seeding: bool = False) -> SensitivityTable:
    """`compute_table` on a workload's model and calibration batches. A built-in's (or a folder's) data is keyed by its
    recipe's fingerprint; a caller's own module's by its batches, as `compute_table` keys them: its fingerprint, made
    only for a search with a storage, also hashes the held-out batches, so the same model and data had one cached
    table with a storage and another without (or from `compute_table`), each computed again."""
    return compute_table(
        workload.model, workload.calibration, layers, options, metric, settings,
        model_name=workload.name, fingerprint=workload.data_fingerprint if workload.source else "", use_cache=use_cache, refresh=refresh, progress=progress, weights=weights,
        wider=wider, announce=announce, seeding=seeding,
    )
