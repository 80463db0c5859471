"""``autoq kernels bench`` (autoq/cli/kernels.py): argument checks and the refusal without a GPU."""

from __future__ import annotations

import pytest
import torch

from autoq.cli import main
from autoq.cli.kernels import device_slug

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_cli_says_no_gpu_and_exits_nonzero(capsys, tmp_path):
    out = tmp_path / "t.json"
    assert main(["kernels", "bench", "--shapes", "64x64", "--model", "none", "--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_bad_arguments_before_looking_for_a_gpu(capsys):
    assert main(["kernels", "bench", "--batches", "1,x"]) == 2
    assert "batch" in capsys.readouterr().err
    assert main(["kernels", "bench", "--model", "none"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert main(["kernels", "bench", "--kernels", "marlin"]) == 2
    assert "unknown kernel" in capsys.readouterr().err




def test_device_slug():
    assert device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
