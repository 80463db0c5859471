"""Short hashes that say whether two models or two sets of calibration data are the same.

They key the sensitivity cache and are recorded with a search, so that a resume, an export or a stored table is
refused for other weights or other data rather than mixing them. Only torch, hashlib and `autoq.code_digest`: the
engine, export and the sensitivity metrics all import it, and it imports none of them.
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoq.code_digest import code_digest


def model_hash(model: nn.Module) -> str:
    """A short hash of the state dict: every parameter and persistent buffer (names, shapes, dtypes and bytes). A buffer
    registered with ``persistent=False`` is left out, as a checkpoint leaves it out (rebuilt by the model's code)."""
    h = hashlib.blake2b(digest_size=10)
    for name, t in sorted(model.state_dict(keep_vars=False).items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# libraries whose module classes are keyed by name alone: their code changes with their version, not with the user's
_LIBRARIES = frozenset({"torch", "transformers", "builtins"})


def structure_digest(model: nn.Module) -> str:
    """A short hash of what the weights do not say: the model's class, its modules and their settings (``repr``: an
    activation, a norm's eps), a Hugging Face model's config, and the code of the user's own module classes (every
    method's, with the constants and helpers it reads: `autoq.code_digest`). A ``forward`` edited with the same
    weights and modules reused a table scored on the old code (300x off, for a scale inside ``forward``)."""
    config = getattr(model, "config", None)
    to_json = getattr(config, "to_json_string", None)
    text = f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n{to_json() if callable(to_json) else ''}"
    own = _own_code(model)  # none for torch's and transformers' modules alone: their digests as they always were
    return hashlib.blake2b((f"{text}\n{own}" if own else text).encode(), digest_size=8).hexdigest()


def _own_code(model: nn.Module) -> str:
    """The digests of the methods of the model's module classes (and their bases) outside torch and transformers."""
    classes = {c for m in model.modules() for c in type(m).__mro__ if c.__module__.split(".")[0] not in _LIBRARIES}
    lines = []
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        methods = sorted((name, fn) for name, fn in vars(cls).items() if inspect.isfunction(fn))
        lines.append(f"{cls.__module__}.{cls.__qualname__}: " + " ".join(f"{name}={_digest_or_name(fn)}" for name, fn in methods))
    return "\n".join(lines)


def _digest_or_name(fn: Any) -> str:
    """``code_digest(fn)``; a method it cannot read is keyed by its name, as before, rather than failing the search."""
    try:
        return code_digest(fn)
    except Exception:  # noqa: BLE001 - any user code; the cache key then misses only that method's edits
        return "?"


def data_fingerprint(batches: Sequence[Any]) -> str:
    """A short hash of the calibration tensors and the plain values beside them (a number, a string: a keyword input's),
    used when a workload brings no fingerprint."""
    return _digest(batches, with_bytes=True, size=8)


def batch_shapes_digest(batches: Sequence[Any]) -> str:
    """A short hash of the batches' tensor shapes and dtypes, not their bytes (cheap on any data)."""
    return _digest(batches, with_bytes=False, size=6)


def _digest(batches: Sequence[Any], with_bytes: bool, size: int) -> str:
    h = hashlib.blake2b(digest_size=size)

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(f"{tuple(x.shape)}:{x.dtype};".encode())
            if with_bytes and x.numel():
                h.update(x.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, Mapping):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                feed(v)
        elif with_bytes and (x is None or isinstance(x, (bool, numbers.Number, str))):  # a keyword's value: temperature=0.05
            h.update(f"{type(x).__name__}={x!r};".encode())

    for b in batches:
        feed(b)
    return h.hexdigest()
