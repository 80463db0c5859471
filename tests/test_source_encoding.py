"""Every text file autoq reads or writes names its encoding: without one, Python takes the locale's (cp1252 on Windows),
and a sensitivity table of a layer named ``größe`` was written in cp1252 and then refused as "not UTF-8 text" by the
reader that names UTF-8, or not written at all (``'charmap' codec can't encode``) once the table was computed."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("autoq", "sensitivity", "kernels", "search_spaces")


def _text_mode(call: ast.Call, mode_index: int) -> bool:
    """Whether ``call`` (an ``open``) opens in text mode: a mode given as a literal without ``b``, or none."""
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None and len(call.args) > mode_index:
        mode = call.args[mode_index]
    if mode is None:
        return True
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" not in mode.value


def unnamed_encodings(source: str) -> list[int]:
    """The lines of ``source`` that read or write text without ``encoding=``: ``open(...)``, ``PATH.open(...)``,
    ``PATH.read_text()``, ``PATH.write_text(...)``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id == "open" and _text_mode(node, 1):
            lines.append(node.lineno)
        elif (isinstance(func, ast.Attribute) and func.attr == "open" and not (isinstance(func.value, ast.Name) and func.value.id == "os")
              and all(isinstance(a, ast.Constant) for a in node.args) and _text_mode(node, 0)):  # PATH.open("w"), not Tracker.open(uri)
            lines.append(node.lineno)
    return lines


def test_the_check_finds_each_kind_of_text_io_without_an_encoding():
    source = "open(p)\nopen(p, 'w')\nopen(p, 'rb')\nPath(p).open()\nq.open('r+b')\nq.read_text()\nq.write_text(t, encoding='utf-8')\nos.open(p, 1)\n"
    assert unnamed_encodings(source) == [1, 2, 4, 6]


def test_every_text_read_and_write_of_the_package_names_its_encoding():
    found = [f"{path.relative_to(REPO)}:{line}" for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
             for line in unnamed_encodings(path.read_text(encoding="utf-8"))]
    assert found == [], "text I/O in the locale's encoding (name encoding='utf-8'):\n" + "\n".join(found)
