"""A registry of named things a plug-in can add: PTQ methods, sensitivity metrics, strategies, samplers, kernels.

Each kind keeps one `Registry` in its own module; this class holds what the five share, so they agree: a name
follows the rules of :mod:`autoq.plugin_names` (checked when registered, not where it is read back), a name
registered twice is refused (a plug-in imported twice would otherwise replace itself silently), and an unknown
name's error lists the known ones in registration order, the built-ins first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from autoq.errors import AutoqError
from autoq.plugin_names import check_name

T = TypeVar("T")


def check_callable(kind: str, name: str, fn: Any, params: tuple[str, ...]) -> None:
    """Refuse, where it is registered, an entry autoq cannot call as ``fn(*params)`` (a ``ValueError`` naming it): a
    sampler factory without its seed failed in a raw ``TypeError`` once the search had loaded its model."""
    call = f"{name}({', '.join(params)})"
    if not callable(fn):
        raise ValueError(f"{kind} {name!r}: {fn!r} is not callable; register a function called as {call}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable without a signature to read (some builtins): taken on trust
        return
    try:
        signature.bind(*params)
    except TypeError as exc:
        raise ValueError(f"{kind} {name!r}: autoq calls it as {call}, which its signature {signature} refuses ({exc})") from None


class Registry(Generic[T]):
    """Named entries of one ``kind`` (``"PTQ method"``). ``reserved``: names that mean something else where this
    kind's names are read; ``asked_as``: how the unknown-name error names what was asked (``"--strategy"``);
    ``hint``: what that error adds after the known names (how a plug-in's name becomes known)."""

    def __init__(self, kind: str, reserved: Iterable[str] = (), asked_as: str = "", hint: str = "") -> None:
        self.kind, self.reserved, self.asked_as, self.hint = kind, tuple(reserved), asked_as or kind, hint
        self._entries: dict[str, T] = {}

    def check(self, name: object) -> str:
        """``name`` if this kind may register it, else a ``ValueError`` saying which rule it breaks."""
        return check_name(self.kind, name, self.reserved)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (checked); a name already taken is a ``ValueError``."""
        self.check(name)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, wrap: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """A decorator that registers ``wrap(fn)`` under ``name`` and returns ``fn``; the name is checked at once,
        where the decorator is written, not only when it is applied."""
        self.check(name)

        def add(fn: Callable) -> Callable:
            self.add(name, wrap(fn))
            return fn

        return add

    def get(self, name: object) -> T:
        """The entry ``name``, or an `AutoqError` listing the known names."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise AutoqError(f"unknown {self.asked_as} {name!r}; choose one of {', '.join(self._entries)}{self.hint}")

    def find(self, name: str) -> T | None:
        """The entry ``name``, or ``None``."""
        return self._entries.get(name)

    def adopt(self, name: str, entry: T) -> None:
        """Register ``entry`` unless ``name`` is known here (another process's registrations: a Ray worker's)."""
        self._entries.setdefault(name, entry)

    def names(self) -> list[str]:
        """Every name, in registration order."""
        return list(self._entries)

    def entries(self) -> tuple[T, ...]:
        """Every entry, in registration order."""
        return tuple(self._entries.values())

    def copy(self) -> Registry[T]:
        """A registry of the same kind and entries, to register into without touching this one (tests)."""
        other: Registry[T] = Registry(self.kind, self.reserved, self.asked_as, self.hint)
        other._entries = dict(self._entries)
        return other

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
