"""The documentation's links between its own files lead somewhere: a renamed or moved page breaks no reader's path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a hidden folder's README is a tool's (pytest's .pytest_cache, made by the first run: a clean clone collected one page less)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(p for p in REPO.glob("*/README.md") if not p.parent.name.startswith("."))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_a_file_of_the_checkout(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in targets if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to {missing}"


def test_the_pages_link_each_other():
    """Each page under docs/ is named by another page: none is left for a reader to stumble on."""
    text = {p: p.read_text() for p in PAGES}
    for doc in (REPO / "docs").glob("*.md"):
        assert any(doc.name in t for p, t in text.items() if p != doc), doc.name
