"""A stable hash of what a registered function computes: its source and the values it reads.

A plug-in's PTQ method or metric is keyed by it in the sensitivity cache, and a search records its PTQ methods'
digests so that an export or a resume after the plug-in was edited is refused rather than mixing two versions.
What it covers: the function's source (its bytecode where the source is gone, as for a notebook's cell), its default
arguments (``clip=CLIP``), the values its closure holds (``make_clip(0.9)``), the module globals it reads: constants
(``CLIP = 0.9``), the helpers and classes of its own module and their instances (a config object's attributes), a
``functools.partial``'s arguments and a callable object's class and attributes, helpers followed up to `_DEPTH` calls
deep, tensors and arrays at any depth by their bytes. It does not follow calls into other modules. The same function
gives the same digest in every process.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PLUGIN_FILE_PREFIX = "autoq_plugin_"  # the module name a plug-in file is imported under, before its stem
_DEPTH = 6  # how deep helpers and nested values are followed: a plug-in's own helpers and their config; never a cycle


@dataclass(frozen=True)
class _Walk:
    """One digest's walk: the objects described so far (never twice: a cycle), and whether module names are the
    legacy ones (see `code_digest`)."""

    legacy: bool
    seen: set[int] = field(default_factory=set)


def code_digest(fn: Callable[..., Any], legacy: bool = False) -> str:
    """16 hex digits that change when ``fn``'s source, or a value or own-module helper it reads, changes.

    A plug-in file's module (``autoq_plugin_<stem>``, as ``--plugin path/<stem>.py`` imports it) is named ``<stem>``,
    as ``--plugin <stem>`` imports it: a search and its export that loaded one unedited plug-in the two ways differed,
    and the export was refused as "edited since". ``legacy``: the digest as autoq wrote it before, by the file's module
    name, which a search stored then still matches."""
    return hashlib.blake2b(_describe(fn, _DEPTH, _Walk(legacy)).encode(), digest_size=8).hexdigest()


def _describe(fn: Any, depth: int, walk: _Walk) -> str:
    if isinstance(fn, functools.partial):  # its arguments are part of what it computes
        return f"partial {_describe(fn.func, depth, walk)} {_value(fn.args, depth, walk)} {_value(fn.keywords, depth, walk)}"
    target = inspect.unwrap(fn)
    if inspect.ismethod(target):
        return f"method {_describe(target.__func__, depth, walk)} of {_value(target.__self__, depth, walk)}"
    if inspect.isbuiltin(target):
        return _name(target, walk)
    if not inspect.isfunction(target):  # a callable object: its class's code and its attributes
        return f"object {_source(type(target), walk)} {_attributes(target, depth, walk)}"
    if id(target) in walk.seen or depth <= 0:
        return _name(target, walk)
    walk.seen.add(id(target))
    return f"{_name(target, walk)}\n{_source(target, walk)}\n{_reads(target, depth, walk)}"


def _name(target: Any, walk: _Walk) -> str:
    module = getattr(target, "__module__", "") or ""
    if not walk.legacy:
        module = module.removeprefix(PLUGIN_FILE_PREFIX)
    return f"{module}.{getattr(target, '__qualname__', type(target).__qualname__)}"


def _source(target: Any, walk: _Walk) -> str:
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        if isinstance(target, type):  # a class whose file is gone (a notebook's): its methods' bytecode
            members = (getattr(m, "__func__", m) for m in vars(target).values())
            return _name(target, walk) + "".join(_code_text(m.__code__) for m in members if hasattr(m, "__code__"))
        code = getattr(target, "__code__", None)
        return _code_text(code) if code is not None else _name(target, walk)


def _code_text(code: types.CodeType) -> str:
    """Bytecode, names and constants, nested functions' included (their ``repr`` holds a memory address)."""
    return repr((code.co_code, [_const_text(c) for c in code.co_consts], code.co_names))


def _const_text(const: Any) -> str:
    """A constant as the same text in every process: a frozenset's (``x in {"a", "b"}``) by its sorted items, where its
    ``repr`` follows the string hash seed, so a class with no source file got a new digest, and a new cache key, each run."""
    if isinstance(const, types.CodeType):
        return _code_text(const)
    if isinstance(const, frozenset):
        return f"frozenset({sorted(_const_text(c) for c in const)})"
    if isinstance(const, tuple) and _holds_set(const):  # any other tuple as its repr: a stored digest keeps its value
        return f"({', '.join(_const_text(c) for c in const)},)"
    return repr(const)


def _holds_set(const: Any) -> bool:
    return isinstance(const, frozenset) or isinstance(const, tuple) and any(_holds_set(c) for c in const)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _reads(fn: types.FunctionType, depth: int, walk: _Walk) -> str:
    """The values of ``fn``'s closure and of the module globals it names: data, and functions of its own module."""
    parts = [f"defaults={_value(fn.__defaults__, depth - 1, walk)} {_value(fn.__kwdefaults__, depth - 1, walk)}"]
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            parts.append(f"{name}={_value(cell.cell_contents, depth - 1, walk)}")
        except ValueError:  # an empty cell (a name assigned after the function was made)
            parts.append(f"{name}=<empty>")
    module = fn.__globals__.get("__name__")
    for name in sorted(_global_names(fn.__code__)):
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        if inspect.isfunction(value) and value.__module__ == module:
            parts.append(f"{name}={_describe(value, depth - 1, walk)}")
        elif isinstance(value, type) and value.__module__ == module:  # a helper class: its code
            parts.append(f"{name}=class {_source(value, walk)}")
        elif _is_data(value) or type(value).__module__ == module or isinstance(value, types.SimpleNamespace):  # config
            parts.append(f"{name}={_value(value, depth - 1, walk)}")
    return "\n".join(parts)


def _is_data(value: Any) -> bool:
    plain = (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)
    return isinstance(value, plain) or type(value).__module__ in ("torch", "numpy")


def _value(value: Any, depth: int, walk: _Walk) -> str:
    """A repr of ``value`` that is the same in every process (no memory addresses)."""
    if isinstance(value, (type(None), bool, int, float, complex, str, bytes)):
        return repr(value)
    if hasattr(value, "detach") and hasattr(value, "numpy") or type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        return _array(value)  # at any depth: cut to a type name, a dict of tensors read by a helper was not covered
    if depth <= 0:
        return type(value).__qualname__
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_value(v, depth - 1, walk) for v in value)})"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(_value(v, depth - 1, walk) for v in value)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_value(k, depth - 1, walk)}: {_value(v, depth - 1, walk)}" for k, v in value.items()) + "}"
    if type(value).__module__ in ("torch", "numpy"):  # a dtype, a device: their repr says which, without an address
        return repr(value)
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, type):
        return f"class {_name(value, walk)}"
    if callable(value):
        return _describe(value, depth, walk)
    return f"{_name(type(value), walk)} {_attributes(value, depth, walk)}"


def _array(value: Any) -> str:
    """A tensor's or array's shape, dtype and bytes' hash. A tensor of a dtype numpy lacks (bfloat16, float8) by its
    bytes' hash all the same, a sparse one dense, a meta one (no data) by its shape and dtype alone."""
    if hasattr(value, "detach"):
        import torch

        tensor = value.detach()
        if tensor.is_meta:
            return f"tensor({tuple(tensor.shape)}, {tensor.dtype}, meta)"
        tensor = (tensor.to_dense() if tensor.layout != torch.strided else tensor).cpu().contiguous()
        if str(tensor.dtype) == "torch.bfloat16":  # as float32, as it always was: a stored digest keeps its value
            tensor = tensor.float()
        try:
            data = tensor.numpy().tobytes()
        except TypeError:  # float8 and other dtypes numpy has no name for: their bytes
            data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        digest = hashlib.blake2b(data, digest_size=8).hexdigest()
        return f"array({tuple(tensor.shape)}, {str(tensor.dtype).removeprefix('torch.')}, {digest})"
    digest = hashlib.blake2b(value.tobytes(), digest_size=8).hexdigest()
    return f"array({getattr(value, 'shape', ())}, {getattr(value, 'dtype', '')}, {digest})"


def _attributes(obj: Any, depth: int, walk: _Walk) -> str:
    state = getattr(obj, "__dict__", None)
    if not isinstance(state, dict) or id(obj) in walk.seen or depth <= 0:
        return ""
    walk.seen.add(id(obj))
    return _value(dict(sorted(state.items())), depth - 1, walk)
