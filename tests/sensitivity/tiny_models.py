"""Tiny seeded models and data for the sensitivity tests (small enough to form exact Hessians)."""

from __future__ import annotations

import torch
from torch import nn

from autoq.model import find_layers
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace

ALL_ROWS = {"n_samples": None, "rows_per_batch": None}  # a metric's settings that score every row of every batch


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 4)).eval()


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).eval()


def labelled(shape: tuple[int, ...], classes: int, n_batches: int = 2, rows: int = 24, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn((rows, *shape), generator=gen), torch.randint(0, classes, (rows,), generator=gen)) for _ in range(n_batches)]


def space_for(model: nn.Module) -> SearchSpace:
    return SearchSpace.build(load_preset("default"), find_layers(model))


def task_loss(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of ``labelled`` batches: the loss the gradient metrics take in place of their own."""
    return nn.functional.cross_entropy(output, batch[1])
