"""The built-in text corpus: the same sentences in every process, whatever it imported."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys

import pytest
import torch  # noqa: F401 - imported, as in every autoq process: it patches inspect.getfile
from helpers import printed_under_hash_seeds

from autoq.builtin import docstrings, text
from autoq.errors import AutoqWarning


def test_a_patched_standard_library_leaves_the_corpus_as_it_was(monkeypatch):
    """`import ray` replaces inspect.isgenerator with a wrapper of no __module__: its docstring dropped out, one sentence
    fewer reshuffled MiniLM's and SmolLM2's splits, and a resume was refused for other data."""
    before = text.stdlib_sentences()
    hidden = inspect.getdoc(inspect.isgenerator)

    def wrapper(obj):
        return inspect.isgeneratorfunction(obj)

    wrapper.__module__ = None
    monkeypatch.setattr(inspect, "isgenerator", wrapper)
    assert hidden not in docstrings.module_docstrings("inspect")  # read in this process, the patch hides it
    assert text.stdlib_sentences() == before
    assert len(before) > 2000


def test_the_fresh_interpreter_reads_what_a_process_with_torch_read():
    """torch patches inspect.getfile, and every committed result was measured on the corpus read in a process that had
    imported torch (and nothing else that patches the standard library): the fresh interpreter leaves that docstring out
    by name (`docstrings.LEFT_OUT`). Read in such a process of its own: this one may have imported ray, say."""
    script = ("import json, sys, torch, inspect; assert inspect.getfile.__module__ != 'inspect'; "
              "from autoq.builtin import docstrings; json.dump(docstrings.all_docstrings(), sys.stdout)")
    with_torch = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout)
    fresh = json.loads(subprocess.run([sys.executable, "-I", "-S", docstrings.__file__], capture_output=True, check=True).stdout)
    assert fresh == with_torch and len(fresh) > 1000


def test_without_a_python_to_start_the_corpus_is_read_here_with_a_warning(monkeypatch):
    expected = text.stdlib_sentences()
    monkeypatch.setattr(sys, "executable", "")
    with pytest.warns(AutoqWarning, match=r"^the built-in text corpus is read in this process \(no Python executable to start\)") as caught:
        here = text.stdlib_sentences()
    assert caught[0].filename == __file__  # the warning names the line that asked for the corpus
    assert len(set(here) ^ set(expected)) < 10  # the same, up to what this process's imports patched (ray: one sentence)


def test_the_corpus_is_prose_sentences_of_6_to_40_words():
    """Each sentence starts with a capital and ends with '.', '!' or '?': code, signatures and list fragments ('$' Matches
    the end of the string ...) stay out, and with them the splits every committed result was scored on stay as they are."""
    sentences = text.stdlib_sentences()
    assert all(s[0].isupper() and s[-1] in ".!?" and 6 <= len(s.split()) <= 40 for s in sentences)
    assert not any(re.search(r"[.!?]\s", s) for s in sentences)  # split after each '.', '!' and '?'
    in_examples, in_lists, elsewhere = set(), set(), set()  # a paragraph of >>> examples is code and its output, left out whole
    beside_examples = set()  # prose paragraphs of a docstring with examples: kept, paragraph by paragraph
    for doc in docstrings.all_docstrings():
        for paragraph in doc.split("\n\n"):
            pieces = text._SPLIT.split(" ".join(paragraph.split()))
            listed = paragraph.lstrip().startswith(("-", "*", ":"))  # a list item or a field (':param x: ...'), left out too
            (in_examples if ">>>" in paragraph else in_lists if listed else elsewhere).update(pieces)
            if ">>>" in doc and ">>>" not in paragraph and not listed:
                beside_examples.update(pieces)
    assert in_examples - elsewhere and not set(sentences) & (in_examples - elsewhere)
    assert in_lists - elsewhere and not set(sentences) & (in_lists - elsewhere)
    assert len(set(sentences) & beside_examples) > 100
    assert text.stdlib_sentences(seed=1) != sentences and sorted(text.stdlib_sentences(seed=1)) == sorted(sentences)


def test_the_corpus_is_in_the_same_order_whatever_the_hash_seed():
    """The sentences are sorted before the seeded shuffle: a set's order, which changes with PYTHONHASHSEED, would give
    each process other calibration and evaluation splits."""
    script = "import hashlib; from autoq.builtin.text import stdlib_sentences; print(hashlib.sha256(repr(stdlib_sentences()).encode()).hexdigest())"
    digests = printed_under_hash_seeds(script)
    assert len(digests) == 1 and len(digests.pop()) == 64  # one sha256, in hex
