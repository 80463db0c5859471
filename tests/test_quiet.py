"""Silencing native writes to stdout (HiGHS' debug line) without losing Python's own output."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os
from autoq.quiet import native_stdout_silenced
print("before", flush=False)
with native_stdout_silenced():
    os.write(1, b"native noise\\n")
print("after")
"""


def test_native_stdout_is_silenced_and_restored():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["before", "after"]  # the buffered line written before, nothing from inside


def test_an_exported_model_loads_where_neither_mlflow_nor_optuna_is_installed(tmp_path):
    """A deployment needs torch, safetensors and (for a Hugging Face model) transformers, not the search's tools."""
    import torch
    from transformers import GPT2Config, GPT2Model

    import autoq
    from autoq.choice import Assignment, LayerChoice

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)).eval()
    out = autoq.export(model, Assignment.from_dict({"h.0.mlp.c_fc": LayerChoice.from_name("int4-ch-asym:rtn-mse")}), tmp_path / "q", progress=False)
    script = f"""
import sys
sys.modules["mlflow"] = None  # import mlflow now raises ImportError, as where it is not installed
sys.modules["optuna"] = None
import autoq
from transformers.utils import logging
logging.set_verbosity_info()
model = autoq.load({str(out)!r})
assert type(model).__name__ == "GPT2Model" and logging.get_verbosity() == logging.INFO
print("loaded")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]
