"""The MLflow options the commands share (``autoq.cli.mlflow_args``)."""

from __future__ import annotations

import argparse

import pytest

from autoq.cli.mlflow_args import tracking_uri_of


@pytest.mark.parametrize("given", ["none", "None", "NONE"])
def test_tracking_uri_none_in_any_case_is_no_mlflow(given):
    """As the Python API's ``tracking_uri=None``; MLflow itself would take 'NONE' for a store in a folder of that name."""
    assert tracking_uri_of(argparse.Namespace(tracking_uri=given)) is None


def test_any_other_tracking_uri_is_taken_as_given():
    assert tracking_uri_of(argparse.Namespace(tracking_uri="sqlite:///None.db")) == "sqlite:///None.db"
