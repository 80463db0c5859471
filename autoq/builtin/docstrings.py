"""The standard-library docstrings the built-in text corpus is cut from, read in a fresh interpreter.

Run as a script (``python -I -S docstrings.py``) it prints them as JSON. A fresh interpreter is what keeps the corpus
the same in every process: an import that patches a standard-library module changed it in place (``import ray``
replaces ``inspect.isgenerator`` with a wrapper of no ``__module__``: its docstring dropped out, one sentence fewer
reshuffled every split, and a resume or an export was refused for "other data"). Standard library only: ``-S`` leaves
out site-packages, and autoq with them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings

MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs",
    "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email", "enum", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "shelve",
    "shlex", "shutil", "signal", "smtplib", "socket", "sqlite3", "ssl", "statistics", "string",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "trace", "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "zipfile", "zlib",
)

# Read in process, as the corpus was until 2026-12-05, this docstring was never in it: torch, imported first, patches
# inspect.getfile. Left out by name, the fresh interpreter reads the corpus every committed result was measured on.
LEFT_OUT = frozenset({("inspect", "getfile")})


def module_docstrings(module_name: str) -> list[str]:
    """The module's docstring and those of its public names defined in it (not imported into it)."""
    with warnings.catch_warnings():  # some modules warn on import or attribute access
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - a module this Python lacks (no ssl, say) gives no text
            return []
        docs = [inspect.getdoc(module) or ""]
        for name in sorted(vars(module)):
            if name.startswith("_") or (module_name, name) in LEFT_OUT:
                continue
            obj = getattr(module, name, None)
            if getattr(obj, "__module__", None) == module.__name__:
                docs.append(inspect.getdoc(obj) or "")
    return docs


def all_docstrings() -> list[str]:
    """Every module's docstrings, in `MODULES` order."""
    return [doc for module_name in MODULES for doc in module_docstrings(module_name)]


if __name__ == "__main__":
    json.dump(all_docstrings(), sys.stdout)
