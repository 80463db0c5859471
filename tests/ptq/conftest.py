"""Fixtures of the PTQ tests: one seeded layer with its captured statistics."""

from __future__ import annotations

import pytest
from ptq_cases import layer_and_stats


@pytest.fixture(scope="module")
def layer():
    return layer_and_stats()
