"""Second built-in: a small CNN on scikit-learn's 8x8 digits, trained once and cached.

Quality is classification accuracy on a fixed held-out quarter of the data set.
"""

from __future__ import annotations

import contextlib
import io
import math
import pickle
from pathlib import Path

import torch
from torch import nn

from autoq.builtin.workload import NoMetric, Workload, cache_dir, keep_in_cache
from autoq.errors import AutoqError
from autoq.files import folder_lock, write_atomic
from autoq.messages import note

RECIPE = "digits-cnn-v1"  # bump when the architecture or training changes


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def empty_digits_cnn() -> nn.Module:
    """The CNN's architecture with uninitialized CPU weights, built without data, training or random draws: for a
    loader that fills every weight from an export."""
    with torch.device("meta"):
        model = digits_cnn()
    return model.to_empty(device="cpu").eval()


def digits_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images scaled to [0, 1], a fixed 75/25 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AutoqError("the digits model needs scikit-learn: pip install 'autoq[demo]'") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train_digits_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int = 30, seed: int = 0) -> nn.Module:
    """The same weights for the same seed, without touching torch's global RNG: seeded and put back around the
    initialization (``fork_rng``), it was shared by threads, and two searches of an outer study's threads each
    trained another model (and put back the RNG under the other's feet)."""
    model = _initialized(torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)  # the batches' order, from a generator of its own as before
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _initialized(gen: torch.Generator) -> nn.Module:
    """The CNN initialized as torch's ``reset_parameters`` does, drawing from ``gen``, layer by layer in order: the
    weights ``torch.manual_seed(seed); digits_cnn()`` gives, from a generator of the caller's own."""
    with torch.device("meta"):
        model = digits_cnn()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
                bound = 1 / math.sqrt(layer.weight[0].numel())  # the fan-in
                nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
    return model


class Accuracy:
    """``evaluate(model) -> accuracy`` on fixed test tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __call__(self, model: nn.Module) -> float:
        with torch.inference_mode():
            return float((model(self.x).argmax(1) == self.y).float().mean())


def digits_workload(batch_size: int = 128, with_metric: bool = True) -> Workload:
    """The CNN (trained once, then cached) on scikit-learn's digits; ``with_metric=False``: no metric, as every
    built-in loaded so (accuracy needs no reference pass, but a workload that says it has no metric has none)."""
    x_train, y_train, x_test, y_test = digits_data()
    path = cache_dir() / f"{RECIPE}.pt"
    model = _cached(path)
    if model is None:
        model = _trained(path, x_train, y_train)
    model.eval()
    return Workload(
        name="digits-cnn",
        model=model,
        calibration=list(x_train.split(batch_size)),
        evaluate=Accuracy(x_test, y_test) if with_metric else NoMetric("digits-cnn"),
        metric=f"top-1 accuracy on {len(y_test)} held-out scikit-learn digits" if with_metric else "not loaded",
        data_fingerprint=RECIPE,
    )


def _trained(path: Path, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """The CNN trained and kept at ``path``, one process or thread at a time: a second one starting meanwhile waits and
    reads the first one's. Two trained at once (threads of an outer study, or processes at other thread counts) gave
    two models: one was kept, and the search run on the other could no longer be exported (its weights' hash)."""
    # a cache folder that could not be made is no one's to write: nothing to wait for
    with folder_lock(path.parent) if path.parent.is_dir() else contextlib.nullcontext():
        model = _cached(path)
        if model is not None:
            return model
        model = train_digits_cnn(x, y)
        data = io.BytesIO()  # saved in memory first: torch.save's own write to a full disk raised a RuntimeError
        torch.save(model.state_dict(), data)
        # another process starting now reads it whole or not at all
        keep_in_cache(path, lambda p: write_atomic(p, lambda tmp: tmp.write_bytes(data.getvalue())), "the trained digits-cnn", "trained")
    return model


def _cached(path: Path) -> nn.Module | None:
    """The CNN stored at ``path``, or ``None`` where there is none or it cannot be read (then trained again: a file cut
    short, by a kill or a full disk, failed every later run with torch's "failed finding central directory")."""
    if not path.is_file():
        return None
    with torch.device("meta"):  # no random initialization to overwrite (nor global RNG draws)
        model = digits_cnn()
    try:
        model.load_state_dict(torch.load(path, weights_only=True), assign=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        note(f"the cached digits-cnn at {path} cannot be read ({type(exc).__name__}); training it again")
        return None
    return model
