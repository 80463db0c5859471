"""Loading plug-ins: modules that register PTQ methods, sensitivity metrics, strategies, samplers or kernels.

The Python API needs none of this (import your module, then call autoq). The command line imports, before it
reads its options (so that ``--help`` lists what they add): the ``autoq.plugins`` entry points of installed
packages, the modules named in ``$AUTOQ_PLUGINS`` (comma-separated), and each ``--plugin MODULE`` (a module
name, importable from the working folder as with ``python -m``, or a path to a ``.py`` file).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from autoq.code_digest import PLUGIN_FILE_PREFIX
from autoq.errors import AutoqError

ENTRY_POINT_GROUP = "autoq.plugins"
ENV_VAR = "AUTOQ_PLUGINS"


def split_plugins(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(the values of every --plugin X / --plugin=X, the other arguments)``, in order; a ``--plugin`` without a value is
    an error. The command line reads them before parsing, wherever they stand."""
    plugins: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--plugin" or arg.startswith("--plugin="):
            value = next(args, "") if arg == "--plugin" else arg.split("=", 1)[1]
            if not value:
                raise AutoqError("--plugin needs a module name or a .py file, e.g. --plugin myplug.py")
            plugins.append(value)
        else:
            rest.append(arg)
    return plugins, rest


def is_file(plugin: str) -> bool:
    """Whether ``plugin`` names a ``.py`` file (by path) rather than a module."""
    return Path(plugin).suffix == ".py" or os.sep in plugin or "/" in plugin


def portable(plugin: str) -> str:
    """``plugin`` as a command run from another folder must give it: a file by its absolute path, a module as is."""
    return str(Path(plugin).resolve()) if is_file(plugin) else plugin


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the entry points of group ``autoq.plugins``, then ``$AUTOQ_PLUGINS``, then ``modules``; return what was
    imported, each as ``--plugin`` takes it (an entry point by its module), so that a search records every plug-in
    whichever way it came. A module already imported is not imported again; one that fails is an error naming it."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise AutoqError(f"the autoq plug-in {ep.name!r} ({ep.value}, an {ENTRY_POINT_GROUP} entry point) failed to load: "
                             f"{type(exc).__name__}: {exc}") from exc
        loaded.append(ep.module)
    env = [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    for name in (*env, *modules):
        import_plugin(name)
        loaded.append(name)
    return list(dict.fromkeys(loaded))


def import_plugin(name: str) -> ModuleType:
    """Import plug-in ``name``: a module name (the working folder is searched too, as ``python -m`` does) or a ``.py`` path."""
    path = Path(name)
    try:
        if is_file(name):
            return _import_file(path)
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())  # `autoq` is a console script: unlike `python -m`, it does not search the working folder
        spec = importlib.util.find_spec(name)
        loaded = _loaded_from(Path(spec.origin)) if spec is not None and spec.origin else None
        return loaded if loaded is not None else importlib.import_module(name)  # a file given before: not registered twice
    except AutoqError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0]:
            raise AutoqError(f"plug-in {name!r} failed to import: ModuleNotFoundError: {exc}") from exc
        raise AutoqError(f"cannot find plug-in module {name!r}; give an importable module name (python -c 'import {name}' "
                         "must work from this folder) or a path to a .py file") from None
    except Exception as exc:
        raise AutoqError(f"plug-in {name!r} failed to import: {type(exc).__name__}: {exc}") from exc


def _loaded_from(path: Path) -> ModuleType | None:
    """The module already imported from ``path``, under any name (a plug-in given as a file and as a module, or twice)."""
    path = path.resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    return None


def _import_file(path: Path) -> ModuleType:
    """A ``.py`` file as a module named after it (once: a second ``--plugin`` of the same file reuses it)."""
    path = path.resolve()
    if path.is_dir():
        raise AutoqError(f"plug-in {str(path)!r} is a folder; give a .py file in it, or a package as its module name "
                         "(importable from the working folder)")
    if not path.is_file():
        raise AutoqError(f"plug-in file {str(path)!r} does not exist")
    if path.suffix != ".py":  # importlib finds no loader for it: a bare AssertionError was all it said
        raise AutoqError(f"plug-in file {str(path)!r} is not a .py file; give a Python file (or an importable module name)")
    loaded = _loaded_from(path)
    if loaded is not None:
        return loaded
    name = f"{PLUGIN_FILE_PREFIX}{path.stem}"  # named as code_digest expects: a method digests alike loaded either way
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has one
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def missing_plugins(stored: Sequence[str], loaded: Sequence[str]) -> list[str]:
    """The plug-ins of ``stored`` (a search's, as `portable` wrote them) that none of ``loaded`` is: a file is matched
    by its name (moved since, it is the same plug-in), a module by its name."""
    def key(plugin: str) -> str:
        return Path(plugin).stem if is_file(plugin) else plugin

    have = {key(p) for p in loaded}
    return [p for p in stored if key(p) not in have]


def plugin_note(plugins: Sequence[str]) -> str:
    """What to add to the commands a run prints (``autoq export``, ``autoq search --resume``) when ``--plugin`` was given."""
    if not plugins:
        return ""
    options = " ".join(f"--plugin {shlex.quote(portable(p))}" for p in plugins)
    return f"add {options} to the autoq commands above (export, search --resume): they use the names it registers"
