"""Find the quantizable layers of any ``nn.Module`` and read/write their weights as ``(out, in)``.

Quantizable: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and transformers' ``Conv1D``
(whose weight is stored transposed, ``(in, out)``). Convolution weights are
viewed as ``(out_channels, in_channels/groups * prod(kernel))`` so groups run
along the flattened input dimension, like a GEMM after im2col.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from autoq.errors import AutoqError


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # transformers is optional for plain torch models
        return None
    return Conv1D


LINEAR_KINDS = ("linear", "hf_conv1d")  # features last: activation formats run on these, not on convolutions


@dataclass(frozen=True)
class LayerInfo:
    """A quantizable layer: its qualified name, kind and 2-D weight shape."""

    name: str
    kind: str  # "linear" | "conv1d" | "conv2d" | "hf_conv1d" | "mha_out_proj" (an nn.MultiheadAttention reads its weight itself)
    out_features: int
    in_features: int
    no_rows: str = field(default="", compare=False)  # why data-driven methods cannot run on it (a grouped convolution, say); "" if they can

    @property
    def n_weights(self) -> int:
        return self.out_features * self.in_features

    @property
    def is_linear(self) -> bool:
        """``nn.Linear`` or transformers' ``Conv1D``: a GEMM on features-last inputs, which activation formats and
        the kernels serve; a torch convolution is not."""
        return self.kind in LINEAR_KINDS


def channels_first(module: nn.Module) -> bool:
    """A torch convolution, whose input has its channels in dim 1 (the ``conv1d`` and ``conv2d`` kinds); linear
    layers, transformers' ``Conv1D`` too, take them last."""
    return isinstance(module, nn.Conv1d | nn.Conv2d)


def _kind(module: nn.Module, hf_conv1d: type | None) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.Conv1d):
        return "conv1d"
    if hf_conv1d is not None and isinstance(module, hf_conv1d):
        return "hf_conv1d"
    return None


def rows_unsupported(module: nn.Module) -> str:
    """Why the layer's input cannot be laid out as rows against its weight's columns, which data-driven methods
    (GPTQ, AWQ, AdaRound, bias correction, SmoothQuant) work on; "" when it can."""
    if not channels_first(module):
        return ""
    if module.groups != 1:
        return f"a grouped convolution (groups={module.groups}), which has no single input per output channel"
    if (isinstance(module.padding, str) and module.padding != "valid") or module.padding_mode != "zeros":
        return f"a convolution with padding={module.padding!r} and padding_mode={module.padding_mode!r}"
    return ""


def zero_padding(module: nn.Module) -> tuple[int, ...]:
    """A convolution's zero padding per spatial side as integers: ``padding="valid"`` is none (``"same"`` is refused
    by :func:`rows_unsupported` first)."""
    return (0,) * len(module.kernel_size) if module.padding == "valid" else tuple(module.padding)


def layout_2d(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A tensor in the layer's weight layout (a weight, a gradient, a Fisher diagonal) as ``(out, in)``, in its own
    dtype: HF Conv1D stores ``(in, out)``, a convolution ``(out, in/groups, *kernel)``."""
    if _kind(module, _conv1d_type()) == "hf_conv1d":
        return t.t()
    return t.reshape(t.shape[0], -1)


def weight_2d(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an ``(out, in)`` float32 tensor (a copy)."""
    return layout_2d(module, module.weight.detach()).float().clone()


def to_native(module: nn.Module, w2d: torch.Tensor) -> torch.Tensor:
    """Turn an ``(out, in)`` tensor back into the layer's own weight layout, dtype and memory format (a
    ``channels_last`` convolution's, a transposed view's strides): ``result.apply`` and ``autoq.load`` gave a
    ``channels_last`` model contiguous weights, unsaid."""
    w = module.weight
    if _kind(module, _conv1d_type()) == "hf_conv1d":
        return w2d.t().contiguous().to(w.dtype)
    native = w2d.reshape(w.shape).to(w.dtype)
    if w.is_contiguous() or native.stride() == w.stride():
        return native
    return torch.empty_like(w, device=native.device).copy_(native)  # empty_like keeps a dense tensor's strides


def name_examples(names: list[str], k: int = 3) -> str:
    """A short list of layer names for an error message: the first ``k`` and the last, with the count.

    Patterns are matched with :func:`re.search` on exactly these names, so showing a few
    tells the user what a pattern has to look like."""
    shown = [repr(n) for n in names[:k]]
    if len(names) > k:
        shown += ["...", repr(names[-1])] if len(names) > k + 1 else [repr(names[-1])]
    return f"the model's {len(names)} quantizable layer(s) are named like {', '.join(shown)}"


def compile_patterns(patterns: Iterable[str], what: str) -> list[re.Pattern[str]]:
    """Compile user regexes, turning a bad one into an error that names it."""
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except (re.error, OverflowError, RecursionError) as exc:  # 'a{99999999999}' overflows, deep nesting recurses
            raise AutoqError(f"invalid {what} pattern {p!r}: {exc}") from None
    return compiled


def tied_weights(model: nn.Module) -> dict[str, list[str]]:
    """Quantizable layers whose weight is also another parameter: layer name -> the weight's other names.

    A tied ``lm_head`` shares its weight with the token embedding, and a module used at two places has one weight
    under two names. One tensor cannot be quantized for one use and kept for the other, so a search leaves these
    layers in half precision, as transformers' quantizers leave a tied ``lm_head``.
    """
    names: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(pname)
    hf_conv1d = _conv1d_type()
    tied = {}
    for name, module in model.named_modules():
        if _kind(module, hf_conv1d) is not None:
            own = f"{name}.weight" if name else "weight"  # the model itself a layer: its weight is 'weight', not '.weight'
            aliases = [n for n in names.get(id(module.weight), []) if n != own]
            if aliases:
                tied[name] = aliases
    return tied


def check_untied(model: nn.Module, quantized: Iterable[str], what: str) -> None:
    """Refuse to quantize a layer whose weight is tied to another parameter (`tied_weights`): ``what`` (an export,
    apply) would quantize both uses of the one tensor, or only one by writing two."""
    chosen = set(quantized)
    tied = [f"{name} (tied to {aliases[0]})" for name, aliases in tied_weights(model).items() if name in chosen]
    if tied:
        raise AutoqError(f"the point quantizes layer(s) whose weight is tied to another parameter: {tied[:3]}; {what} cannot "
                         "quantize one use of a weight and keep the other (a search leaves these layers out): keep them fp16")


def tied_note(tied: dict[str, list[str]]) -> str:
    """One line for the user: which layers a search leaves unquantized because their weight is tied."""
    shown = _shown([f"{name!r} (shared with {aliases[0]!r})" for name, aliases in tied.items()])
    return (f"{len(tied)} layer(s) with tied weights left unquantized, as transformers' quantizers leave a tied lm_head: "
            f"{shown}; untie them (e.g. tie_word_embeddings=False and a cloned weight) to search them")


def derived_weights(model: nn.Module) -> list[str]:
    """Quantizable layers whose ``weight`` is computed from other parameters on every forward, not a parameter:
    ``weight_norm`` and ``spectral_norm`` (as parametrizations or as the older hooks). Writing a quantized weight into
    such a layer changes nothing (the next forward computes it again), so a search leaves them out."""
    hf_conv1d = _conv1d_type()
    return [name for name, module in model.named_modules()
            if _kind(module, hf_conv1d) is not None and not isinstance(module.weight, nn.Parameter)]


def derived_note(model: nn.Module, names: list[str]) -> str:
    """One line for the user: which layers a search leaves unquantized because their weight is computed, and how to
    fold each kind: a pruned layer was told to remove a parametrization it does not have, which raised."""
    pruned = [name for name in names if _pruned(model.get_submodule(name))]
    computed = [name for name in names if name not in pruned]
    notes = []
    if computed:
        notes.append(f"{len(computed)} layer(s) whose weight a parametrization computes (weight_norm, spectral_norm) left "
                     f"unquantized: {_shown(list(map(repr, computed)))}; fold it into the weight first to search them "
                     "(torch.nn.utils.parametrize.remove_parametrizations(module, 'weight'), or torch.nn.utils.remove_weight_norm)")
    if pruned:
        notes.append(f"{len(pruned)} pruned layer(s) (torch.nn.utils.prune: weight = weight_orig * weight_mask, on every "
                     f"forward) left unquantized: {_shown(list(map(repr, pruned)))}; make the pruning permanent first to search them "
                     "(torch.nn.utils.prune.remove(module, 'weight'))")
    return "; ".join(notes)


def _pruned(module: nn.Module) -> bool:
    """Whether torch.nn.utils.prune computes the module's weight (its forward pre-hook), not a parametrization (a
    pruned bias beside a weight_norm is no pruned weight)."""
    from torch.nn.utils.prune import BasePruningMethod

    return any(isinstance(hook, BasePruningMethod) and getattr(hook, "_tensor_name", None) == "weight"
               for hook in module._forward_pre_hooks.values())


def _shown(items: Sequence[str], k: int = 3) -> str:
    """The first ``k`` of ``items`` (each already written as shown), and how many more: a note's list of layers."""
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return f"{', '.join(items[:k])}{more}"


# modules with weight matrices that no kernel or layer kind of autoq takes: (parameter, what it is)
_UNSEARCHED = {nn.MultiheadAttention: (("in_proj_weight", "MultiheadAttention's packed q/k/v projection"),
                                      ("q_proj_weight", "MultiheadAttention's q projection"),  # with kdim/vdim != embed_dim
                                      ("k_proj_weight", "MultiheadAttention's k projection"),
                                      ("v_proj_weight", "MultiheadAttention's v projection")),
               nn.ConvTranspose1d: (("weight", "ConvTranspose1d"),), nn.ConvTranspose2d: (("weight", "ConvTranspose2d"),),
               nn.ConvTranspose3d: (("weight", "ConvTranspose3d"),), nn.Conv3d: (("weight", "Conv3d"),),
               nn.Bilinear: (("weight", "Bilinear"),)}
_RECURRENT = (nn.RNNBase, nn.RNNCellBase)  # LSTM, GRU, RNN and their cells: weight_ih_l0, weight_hh_l0_reverse, ...


def skipped_names(model: nn.Module, skip: Sequence[str], layers: Sequence[LayerInfo]) -> list[str]:
    """The quantizable layers of ``model`` that ``skip`` left out of ``layers``, for a space to say a rule matching only
    them governs no layer because of the skip (``autoq sensitivity`` said "it matches no quantizable layer")."""
    if not skip:
        return []
    kept = {layer.name for layer in layers}
    return [layer.name for layer in find_layers(model) if layer.name not in kept]


def unsearched_weights(model: nn.Module) -> list[tuple[str, str, int]]:
    """Weight matrices in modules autoq does not quantize (``(parameter name, what it is, weights)``): they stay in half
    precision, and a user who sees the attention's ``out_proj`` searched would not guess that its q/k/v are not."""
    found = []
    for name, module in model.named_modules():
        params = [pair for kind, pairs in _UNSEARCHED.items() if isinstance(module, kind) for pair in pairs]
        if isinstance(module, _RECURRENT):
            params += [(param, type(module).__name__) for param, _ in module.named_parameters(recurse=False) if param.startswith("weight")]
        for param, what in params:
            weight = getattr(module, param, None)
            if isinstance(weight, torch.Tensor):
                found.append((f"{name}.{param}" if name else param, what, weight.numel()))
    return found


def unsearched_note(found: list[tuple[str, str, int]]) -> str:
    """One line for the user: the weights of :func:`unsearched_weights`."""
    shown = _shown([f"{name!r} ({what}, {n:,} weights)" for name, what, n in found])
    return f"{len(found)} weight matri(ces) in modules autoq does not quantize stay fp16: {shown}"


def left_out_note(model: nn.Module, skip: Iterable[str], tied: dict[str, list[str]]) -> str | None:
    """The note on weights a search leaves unquantized that ``skip`` does not already name: ``tied`` layers
    (:func:`searched_tied`), those whose weight is computed (:func:`derived_weights`) and modules autoq does not
    quantize (:func:`unsearched_weights`); ``None`` if none."""
    skip_res = compile_patterns(skip, "skip")
    derived = [name for name in derived_weights(model) if not any(r.search(name) for r in skip_res)]
    unsearched = [w for w in unsearched_weights(model) if not any(r.search(w[0]) for r in skip_res)]
    notes = (([tied_note(tied)] if tied else []) + ([derived_note(model, derived)] if derived else [])
             + ([unsearched_note(unsearched)] if unsearched else []))
    return "; ".join(notes) or None


NOT_REACHED = "a layer the model never calls on the calibration batches"


def mark_unreached(layers: Sequence[LayerInfo], names: Iterable[str]) -> list[LayerInfo]:
    """``layers`` with those ``names`` marked as layers data-driven methods cannot run on (``no_rows``): the model
    never called them on the calibration batches (:func:`autoq.model.capture.unreached`), so a space gives them
    data-free methods only."""
    marked = set(names)
    return [dataclasses.replace(layer, no_rows=NOT_REACHED) if layer.name in marked and not layer.no_rows else layer for layer in layers]


def unreached_note(names: Sequence[str]) -> str:
    """What a search or table says of layers the calibration batches never reach: what they get, and why a user may
    rather skip them."""
    shown = _shown(list(map(repr, names)), k=5)
    return (f"{len(names)} layer(s) the model never calls on the calibration batches ({shown}) take data-free methods only (where the evaluation data does not "
            "reach them either, the search sees no cost in quantizing them); skip them to keep them at full precision")


def searched_tied(model: nn.Module, skip: Iterable[str], pins: Iterable[str], layers: Iterable[LayerInfo]) -> dict[str, list[str]]:
    """The tied layers a search leaves out that ``skip`` does not already name (for a note to the user).

    A pin pattern that matches none of the searched ``layers`` but a tied one is refused here, saying why, where
    the space would only say that it matches no layer.
    """
    skip_res = compile_patterns(skip, "skip")
    tied = {name: aliases for name, aliases in tied_weights(model).items() if not any(r.search(name) for r in skip_res)}
    names = [layer.name for layer in layers]
    pins = list(pins)
    for pattern, regex in zip(pins, compile_patterns(pins, "pin")):
        hit = next((name for name in tied if regex.search(name)), None)
        if hit is not None and not any(regex.search(name) for name in names):
            raise AutoqError(f"pin pattern {pattern!r} matches only {hit!r}, whose weight is tied to {tied[hit][0]!r}: a search "
                             "leaves tied layers unquantized; untie the weight (e.g. tie_word_embeddings=False) to search it")
    return tied


def find_layers(model: nn.Module, skip: Iterable[str] = (), include_tied: bool = False) -> list[LayerInfo]:
    """All quantizable layers in module order, minus those whose name matches a ``skip`` regex.

    Patterns use :func:`re.search` semantics on the qualified module name. Layers with a tied weight
    (:func:`tied_weights`) are left out too unless ``include_tied``: the export reads them to refuse them by
    name; so are layers whose weight is computed (:func:`derived_weights`). Raises :class:`AutoqError` when
    nothing is left to quantize or a pattern matches nothing.
    """
    hf_conv1d = _conv1d_type()
    if _kind(model, hf_conv1d) is not None:  # its one layer's name is '': an export replaces layers inside a model, not it
        raise AutoqError(f"the model is itself one layer ({type(model).__name__}); autoq quantizes the layers inside a model "
                         "and exports them in place: wrap it, model = nn.Sequential(layer), and search that")
    skip_res = compile_patterns(skip, "skip")
    tied = {} if include_tied else tied_weights(model)
    derived = set(derived_weights(model))
    # nn.MultiheadAttention uses its out_proj's weight and bias without calling it: no input hook, activation format
    # or kernel reaches it, so it is searched weight-only and exported dequantized, like a convolution
    bypassed = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    found: list[LayerInfo] = []
    used = [False] * len(skip_res)
    names: list[str] = []
    skipped: list[str] = []
    for name, module in model.named_modules():
        kind = _kind(module, hf_conv1d)
        if kind is None:
            continue
        kind = "mha_out_proj" if id(module) in bypassed else kind
        names.append(name)
        hits = [i for i, r in enumerate(skip_res) if r.search(name)]
        for i in hits:
            used[i] = True
        if hits:
            skipped.append(name)
        if hits or name in tied or name in derived:
            continue
        w = module.weight
        if isinstance(w, nn.parameter.UninitializedParameter):  # a lazy module before its first forward: no shape yet
            raise AutoqError(f"layer {name!r} ({type(module).__name__}) has no weight shape yet: a lazy module takes it on the "
                             "model's first forward; run the model once on an example batch (model(batch)) first")
        out_f = w.shape[1] if kind == "hf_conv1d" else w.shape[0]
        no_rows = "a MultiheadAttention's out_proj, whose input the module never passes through it" if kind == "mha_out_proj" else rows_unsupported(module)
        found.append(LayerInfo(name, kind, int(out_f), int(w.numel() // out_f), no_rows))
    unused = [p.pattern for p, u in zip(skip_res, used) if not u]
    if unused:
        raise AutoqError(f"skip pattern(s) {unused} match no quantizable layer; {name_examples(names)} "
                         "(patterns are regular expressions searched in these names)")
    if not found:
        what = (f" after the skip rules: {[r.pattern for r in skip_res]} skip {len(skipped)} of its {len(names)} ({name_examples(names)}); "
                "skip fewer (a pattern is a regular expression searched in the name: '^head$' skips that layer alone)") if skipped else \
            " (autoq quantizes nn.Linear, nn.Conv1d, nn.Conv2d and transformers Conv1D weights)"
        left_out = (f"; {tied_note(tied)}" if tied else "") + (f"; {derived_note(model, sorted(derived))}" if derived else "")
        raise AutoqError(f"the model has no quantizable layer{what}{left_out}")
    return found


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` is a ``torch.compile`` wrapper (dynamo's OptimizedModule, holding the module as ``_orig_mod``):
    told by name, since importing ``torch._dynamo`` to ask ``isinstance`` costs seconds at every start."""
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def compiled_inside(model: nn.Module) -> list[str]:
    """The names of ``model``'s compiled submodules ("" for the model itself): compiled code runs no hooks and keeps
    calling the float layers it was traced with, whatever the module tree holds afterwards."""
    return [name for name, m in model.named_modules() if is_compiled(m)]


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (the same object, its weights shared), else ``model``: a search of
    the wrapper named every layer ``_orig_mod.*``, and its export then loaded into neither the model nor a compiled one."""
    while is_compiled(model):
        model = model._orig_mod
    return model


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise AutoqError(f"the model has no layer named {name!r}") from None


FP16_MAX = torch.finfo(torch.float16).max  # 65504


def meta_tensor(model: nn.Module) -> str | None:
    """The name of ``model``'s first parameter or buffer on the ``meta`` device (shapes, no values), else ``None``."""
    return next((n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta), None)


def check_has_values(model: nn.Module) -> None:
    """Refuse a model whose parameters or buffers are on the ``meta`` device (built under ``torch.device("meta")`` or
    accelerate's ``init_empty_weights``): they hold no values, and torch's own error came from deep in a check."""
    name = meta_tensor(model)
    if name is None:
        return
    if any(hasattr(m, "_hf_hook") for m in model.modules()):  # accelerate's offload: loaded, its weights held elsewhere
        raise AutoqError(f"the model's {name!r} is on the 'meta' device: accelerate offloaded it (a device_map with 'disk' or "
                         "'cpu' offload), and autoq quantizes weights it can read; load the model whole on one device "
                         "(device_map='cpu', or none)")
    raise AutoqError(f"the model's {name!r} is on the 'meta' device, which holds shapes but no values; load the weights "
                     "first (from_pretrained, or load_state_dict(state, assign=True)) or move it with model.to_empty() and fill it")


def check_finite_stored(model: nn.Module, layers: Iterable[LayerInfo] = ()) -> None:
    """Refuse a parameter holding NaN or Inf, or a buffer holding NaN, naming it: outside the searched layers too (a
    skipped head's NaN passed a search, whose reference scored NaN logits, and only its export said so). A buffer may
    hold -inf on purpose (an attention mask). The searched ``layers``' weights are checked as `check_finite_weights`
    does, fp16's range included, and read once."""
    check_has_values(model)
    layers = list(layers)
    check_finite_weights(model, layers)
    searched = {id(get_module(model, layer.name).weight) for layer in layers}
    for name, p in model.named_parameters():  # float8 has no isfinite: read in fp16, which holds every float8 value
        if p.is_floating_point() and id(p) not in searched and not torch.isfinite(readable_float(p)).all():
            raise AutoqError(f"the model's {name!r} holds NaN or Inf: its outputs would be NaN, and an export would store it; "
                             "fix the checkpoint first")
    for name, b in model.named_buffers():
        if b.is_floating_point() and torch.isnan(b).any():
            raise AutoqError(f"the model's buffer {name!r} holds NaN: its outputs would be NaN, and an export would store it; "
                             "fix the checkpoint first")


def check_finite_weights(model: nn.Module, layers: Iterable[LayerInfo]) -> None:
    """Refuse NaN or Inf weights before any work starts, naming the layer; and weights fp16 cannot hold (beyond 65504):
    scales are stored in fp16 and a layer kept unquantized is fp16, so every choice of such a layer would be NaN. One
    read of each weight: its largest magnitude, which is NaN or Inf where any entry is."""
    for layer in layers:
        w = get_module(model, layer.name).weight
        largest = float(readable_float(w).abs().amax()) if w.numel() else 0.0
        if not math.isfinite(largest):
            raise AutoqError(f"layer {layer.name!r} has NaN or Inf weights; fix the checkpoint first")
        if largest > FP16_MAX:
            raise AutoqError(f"layer {layer.name!r} has weights up to {largest:.4g}, beyond fp16's {FP16_MAX:g}: autoq stores scales and "
                             f"unquantized layers in fp16, where they overflow; leave the layer out (--skip, skip=[...]) or rescale it")


def readable_float(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, and in fp16 where it is a float8 (no NaN/Inf or abs kernel reads float8; fp16 holds each value):
    what the NaN checks of a model and of an export's file read."""
    return t.detach() if t.element_size() > 1 else t.detach().half()
