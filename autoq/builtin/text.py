"""Real English text every machine has: sentences from the Python standard library's docstrings.

The corpus is deterministic for a given Python version: a fixed list of modules
(`docstrings.MODULES`, read in a fresh interpreter), sentences split on full stops,
filtered by length, de-duplicated, sorted and shuffled with a fixed seed.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

from autoq.builtin import docstrings
from autoq.errors import AutoqWarning

_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _docstrings() -> list[str]:
    """The corpus's docstrings, read in a fresh interpreter (`docstrings` says why); in this process, with a warning,
    where none can start (an embedded Python without an executable)."""
    try:
        done = subprocess.run([sys.executable, "-I", "-S", str(Path(docstrings.__file__))], capture_output=True, check=True,
                              timeout=300)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        why = f"{sys.executable} did not start: {error}" if sys.executable else "no Python executable to start"
        warnings.warn(f"the built-in text corpus is read in this process ({why}); a module this process imported may have "
                      "patched the standard library and changed it", AutoqWarning, stacklevel=3)
        return docstrings.all_docstrings()


def stdlib_sentences(min_words: int = 6, max_words: int = 40, seed: int = 0) -> list[str]:
    """Distinct prose sentences from standard-library docstrings, shuffled with ``seed``."""
    seen: set[str] = set()
    for doc in _docstrings():
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
