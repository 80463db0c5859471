"""Real English text every machine has: sentences from the Python standard library's docstrings.

The corpus is deterministic for a given Python version: a fixed list of modules,
sentences split on full stops, filtered by length, de-duplicated, sorted and
shuffled with a fixed seed.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
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
_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _docstrings(module_name: str) -> list[str]:
    with warnings.catch_warnings():  # some modules warn on import or attribute access
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return []
        docs = [inspect.getdoc(module) or ""]
        for name in sorted(vars(module)):
            if name.startswith("_"):
                continue
            obj = getattr(module, name, None)
            if getattr(obj, "__module__", None) == module.__name__:
                docs.append(inspect.getdoc(obj) or "")
    return docs


def stdlib_sentences(min_words: int = 6, max_words: int = 40, seed: int = 0) -> list[str]:
    """Distinct prose sentences from standard-library docstrings, shuffled with ``seed``."""
    seen: set[str] = set()
    for module_name in MODULES:
        for doc in _docstrings(module_name):
            for paragraph in doc.split("\n\n"):
                if ">>>" in paragraph or paragraph.lstrip().startswith(("-", "*", ":")):
                    continue
                for sentence in _SPLIT.split(" ".join(paragraph.split())):
                    words = sentence.split()
                    if min_words <= len(words) <= max_words and sentence[0].isupper() and sentence[-1] in ".!?":
                        seen.add(sentence)
    sentences = sorted(seen)
    random.Random(seed).shuffle(sentences)
    return sentences
