"""Batch-norm folding and cross-layer equalization (Nagel et al. 2019): model transforms for CNNs.

These act on pairs of layers, not on one weight, so they are not registry
methods: apply them to the float model before a search (both leave its float
output unchanged). ``fold_batch_norms`` merges each ``Conv/Linear -> BatchNorm``
of an ``nn.Sequential`` into the layer. ``equalize`` rescales each pair
``layer1 -> (ReLU | pooling | flatten | dropout)* -> layer2`` (no pooling or flatten after a
Linear, whose channels are last; a convolution meets a Linear only through a Flatten; either layer
may be a grouped or depthwise convolution, the case of MobileNets that Nagel et al. designed it for) so output channel
``i`` of layer1 and input channel ``i`` of layer2 have the same range:
``W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i`` with ``s_i = sqrt(r1_i / r2_i)``,
exact because ReLU and max/avg pooling commute with positive per-channel scales.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.evaluate.fidelity import call_model
from autoq.messages import note

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
# pooling and Flatten keep channels apart only where they are dim 1 (a convolution's output); a Linear's are last
_PASS_THROUGH = (*_ELEMENTWISE, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)  # each commutes with a positive scale per channel
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (which directly follows ``layer``) into ``layer``'s weight and bias, in place."""
    if not isinstance(layer, _LAYERS) or not isinstance(bn, _BN):
        raise AutoqError("fold_batch_norm takes a Linear, Conv1d or Conv2d layer and the BatchNorm1d/2d that follows it, "
                         f"got {type(layer).__name__} and {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise AutoqError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    factor = gamma / std
    layer.weight.mul_(factor.reshape(-1, *([1] * (layer.weight.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(std)
    new_bias = (bias - bn.running_mean) * factor + beta
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def fold_batch_norms(model: nn.Module, example_input: Any = None) -> int:
    """Fold every ``layer -> BatchNorm`` pair inside ``nn.Sequential`` containers; returns how many.

    A ``BatchNorm1d`` after a ``Linear`` normalises dim 1: the Linear's features on ``(N, C)`` input, but its tokens on
    ``(N, T, C)``, where a fold changed the output unsaid whenever T equalled C. Such pairs are folded only where
    ``example_input`` (a batch the model is called with: a tensor, a tuple of inputs or a mapping of keyword inputs)
    shows the BatchNorm a 2-D input; without one they are left as they are, and a note says so."""
    pairs = [(seq, a, b) for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]
             for a, b in zip(list(seq._modules), list(seq._modules)[1:])
             if isinstance(seq._modules[a], _LAYERS) and isinstance(seq._modules[b], _BN)]
    ambiguous = [seq._modules[b] for seq, a, b in pairs if isinstance(seq._modules[a], nn.Linear)]
    two_d = _sees_2d(model, ambiguous, example_input) if ambiguous and example_input is not None else set()
    count, left = 0, 0
    for seq, a, b in pairs:
        if isinstance(seq._modules[a], nn.Linear) and id(seq._modules[b]) not in two_d:
            left += 1
            continue
        fold_batch_norm(seq._modules[a], seq._modules[b])
        seq._modules[b] = nn.Identity()
        count += 1
    if left:
        why = ("it saw input of more than 2 dims, where it normalises dim 1, not the Linear's features" if example_input is not None
               else "pass example_input=<a batch> to confirm it sees (N, C) input, where a fold is exact")
        note(f"fold_batch_norms left {left} Linear -> BatchNorm1d pair(s) unfolded: {why}")
    return count


def _sees_2d(model: nn.Module, norms: list[nn.Module], example_input: Any) -> set[int]:
    """The ids of ``norms`` that one forward pass on ``example_input`` calls with 2-D input (and never other input)."""
    seen: dict[int, set[int]] = {}
    hooks = [bn.register_forward_pre_hook(lambda m, args: seen.setdefault(id(m), set()).add(args[0].dim())) for bn in norms]
    try:
        with torch.no_grad():
            call_model(model, example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return {key for key, dims in seen.items() if dims == {2}}


def equalization_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Consecutive layer pairs inside ``nn.Sequential`` joined only by scale-commuting modules: elementwise ones after
    a Linear (whose input may be ``(batch, tokens, features)``: pooling or flattening it mixes or interleaves its
    channels), pooling and Flatten too after a convolution."""
    pairs = []
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.children())
        for i, first in enumerate(children):
            if not isinstance(first, _LAYERS):
                continue
            between = _ELEMENTWISE if isinstance(first, nn.Linear) else _PASS_THROUGH
            j = i + 1
            while j < len(children) and isinstance(children[j], between):
                j += 1
            if j < len(children) and _channels_meet(first, children[i + 1:j], children[j]):
                pairs.append((first, children[j]))
    return pairs


def _channels_meet(first: nn.Module, between: list[nn.Module], second: nn.Module) -> bool:
    """Whether ``second``'s input channels are ``first``'s output channels: a Linear's (last axis) feed a Linear; a
    convolution's (dim 1) feed a convolution of its kind, or a Linear only through a ``Flatten`` of every dim after the
    batch (without one, the Linear would act on the length or width axis, and the rescaling would change the output)."""
    if isinstance(first, nn.Linear):
        return isinstance(second, nn.Linear)
    flattens = [m for m in between if isinstance(m, nn.Flatten)]
    if isinstance(second, nn.Linear):
        return len(flattens) == 1 and flattens[0].start_dim == 1 and flattens[0].end_dim == -1
    return type(second) is type(first) and not flattens


def _by_input_channel(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """``second``'s weight as ``(groups, outputs per group, inputs per group, rest)``, so that ``[g, :, j]`` holds every
    weight that ``first``'s output channel ``g * inputs per group + j`` meets: one group for a Linear (several inputs
    per channel after a Flatten) or an ungrouped convolution; a grouped or depthwise convolution meets each channel
    in its own group only."""
    c, w2 = first.weight.shape[0], second.weight
    groups = 1 if isinstance(second, nn.Linear) else second.groups
    per_group = w2.shape[1] if groups > 1 else c
    if groups == 1 and w2.shape[1] % c or groups > 1 and per_group * groups != c:
        raise AutoqError(f"cannot equalize: {c} output channels do not match the next layer's {w2.shape[1] * groups} inputs")
    return w2.reshape(groups, w2.shape[0] // groups, per_group, -1)


@torch.no_grad()
def equalize_pair(first: nn.Module, second: nn.Module) -> None:
    """Equalize the ranges of ``first``'s output channels and ``second``'s matching input channels (either may be a
    grouped or depthwise convolution: output channel ``i``'s weights are ``W1[i]`` whatever the groups)."""
    c = first.weight.shape[0]
    w2 = _by_input_channel(first, second)
    r1 = first.weight.reshape(c, -1).abs().amax(dim=1)
    r2 = w2.abs().amax(dim=(1, 3)).reshape(c)
    s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp_min(1e-12)).sqrt(), torch.ones_like(r1))
    first.weight.div_(s.reshape(-1, *([1] * (first.weight.dim() - 1))))
    if first.bias is not None:
        first.bias.div_(s)
    second.weight.copy_((w2 * s.reshape(w2.shape[0], 1, w2.shape[2], 1)).reshape(second.weight.shape))


def equalize(model: nn.Module, rounds: int = 4) -> int:
    """Cross-layer equalization of every detected pair, ``rounds`` sweeps (chains converge); returns the pair count."""
    pairs = equalization_pairs(model)
    for _ in range(rounds):
        for first, second in pairs:
            equalize_pair(first, second)
    return len(pairs)
