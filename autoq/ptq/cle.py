"""Batch-norm folding and cross-layer equalization (Nagel et al. 2019): model transforms for CNNs.

These act on pairs of layers, not on one weight, so they are not registry
methods: apply them to the float model before a search (both leave its float
output unchanged). ``fold_batch_norms`` merges each ``Conv/Linear -> BatchNorm``
of an ``nn.Sequential`` into the layer. ``equalize`` rescales each pair
``layer1 -> (ReLU | pooling | flatten | dropout)* -> layer2`` (no pooling or flatten after a
Linear, whose channels are last) so output channel
``i`` of layer1 and input channel ``i`` of layer2 have the same range:
``W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i`` with ``s_i = sqrt(r1_i / r2_i)``,
exact because ReLU and max/avg pooling commute with positive per-channel scales.
"""

from __future__ import annotations

import torch
from torch import nn

from autoq.errors import AutoqError

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
# pooling and Flatten keep channels apart only where they are dim 1 (a convolution's output); a Linear's are last
_PASS_THROUGH = (*_ELEMENTWISE, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Flatten)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (which directly follows ``layer``) into ``layer``'s weight and bias, in place."""
    if not isinstance(layer, _LAYERS) or not isinstance(bn, _BN):
        raise AutoqError("fold_batch_norm takes a Linear/Conv layer and the BatchNorm that follows it")
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


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``layer -> BatchNorm`` pair inside ``nn.Sequential`` containers; returns how many."""
    count = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            if isinstance(seq._modules[a], _LAYERS) and isinstance(seq._modules[b], _BN):
                fold_batch_norm(seq._modules[a], seq._modules[b])
                seq._modules[b] = nn.Identity()
                count += 1
    return count


def equalization_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Consecutive layer pairs inside ``nn.Sequential`` joined only by scale-commuting modules: elementwise ones after
    a Linear (whose input may be ``(batch, tokens, features)``: pooling or flattening it mixes or interleaves its
    channels), pooling and Flatten too after a convolution."""
    pairs = []
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.children())
        for i, first in enumerate(children):
            if not isinstance(first, _LAYERS) or getattr(first, "groups", 1) != 1:
                continue
            between = _ELEMENTWISE if isinstance(first, nn.Linear) else _PASS_THROUGH
            j = i + 1
            while j < len(children) and isinstance(children[j], between):
                j += 1
            if j < len(children) and isinstance(children[j], _LAYERS) and getattr(children[j], "groups", 1) == 1:
                pairs.append((first, children[j]))
    return pairs


@torch.no_grad()
def equalize_pair(first: nn.Module, second: nn.Module) -> None:
    """Equalize the ranges of ``first``'s output channels and ``second``'s matching input channels."""
    c = first.weight.shape[0]
    w2 = second.weight
    fan = w2.shape[1] if w2.dim() == 2 else w2.shape[1]
    if fan % c:
        raise AutoqError(f"cannot equalize: {c} output channels do not divide the next layer's {fan} inputs")
    per = fan // c  # > 1 when a Flatten turns each channel into `per` inputs
    r1 = first.weight.reshape(c, -1).abs().amax(dim=1)
    w2_cols = w2.reshape(w2.shape[0], c, per, -1)
    r2 = w2_cols.abs().amax(dim=(0, 2, 3))
    s = torch.where((r1 > 0) & (r2 > 0), (r1 / r2.clamp_min(1e-12)).sqrt(), torch.ones_like(r1))
    first.weight.div_(s.reshape(-1, *([1] * (first.weight.dim() - 1))))
    if first.bias is not None:
        first.bias.div_(s)
    second.weight.copy_((w2_cols * s.reshape(1, c, 1, 1)).reshape(w2.shape))


def equalize(model: nn.Module, rounds: int = 4) -> int:
    """Cross-layer equalization of every detected pair, ``rounds`` sweeps (chains converge); returns the pair count."""
    pairs = equalization_pairs(model)
    for _ in range(rounds):
        for first, second in pairs:
            equalize_pair(first, second)
    return len(pairs)
