"""Seeded layers with correlated, outlier-heavy inputs, and their captured statistics."""

from __future__ import annotations

import torch
from torch import nn

from autoq.model import find_layers
from autoq.model.capture import LayerStats, capture_stats


def correlated_inputs(n_in: int, n_rows: int = 1024, seed: int = 0) -> torch.Tensor:
    """Rows with correlated channels and a few large-magnitude channels, like transformer activations."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=gen) / n_in**0.5
    scale = torch.exp(torch.randn(n_in, generator=gen))
    return (torch.randn(n_rows, n_in, generator=gen) @ mix + 0.3 * torch.randn(n_in, generator=gen)) * scale


def stats_of(x: torch.Tensor, max_samples: int = 512) -> LayerStats:
    """A linear layer's statistics on the rows ``x`` (one batch), keeping up to ``max_samples`` of them."""
    model = nn.Sequential(nn.Linear(x.shape[1], 1))
    return capture_stats(model, find_layers(model), [x], max_samples)["0"]


def layer_and_stats(n_in: int = 96, n_out: int = 24, seed: int = 0) -> tuple[torch.Tensor, LayerStats]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, n_out))
    x = correlated_inputs(n_in, seed=seed)
    stats = capture_stats(model, find_layers(model), list(x.split(256)))["0"]
    return model[0].weight.detach().float().clone(), stats
