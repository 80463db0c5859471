"""Quiet logging and output: native writes to stdout (HiGHS' debug line) and third-party log levels, restored after."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

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


OVERLAP = """
import os, threading
from autoq.quiet import native_stdout_silenced
first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

def first():
    with native_stdout_silenced():
        first_in.set()
        second_in.wait()
    first_out.set()

def second():
    first_in.wait()
    with native_stdout_silenced():
        second_in.set()
        first_out.wait()  # the first leaves while this one is in: still silent
        os.write(1, b"noise\\n")

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("after")
"""


def test_overlapping_calls_in_threads_restore_stdout():
    """Two searches in threads (an outer study's n_jobs=2) each saved and restored fd 1: the second saved the first's
    /dev/null and restored it last, so nothing the process printed afterwards was seen."""
    out = subprocess.run([sys.executable, "-c", OVERLAP], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["after"]


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


@pytest.mark.parametrize("first_out", ["first", "second"])
def test_overlapping_calls_leave_the_levels_as_they_found_them(first_out):
    """Two searches in threads of an outer study (n_jobs=2): the second saved the first's quiet levels, and restoring
    them after the first had restored left Optuna at WARNING for the rest of the process."""
    import optuna
    from transformers.utils import logging as hf

    from autoq.quiet import quiet_logs

    before = (optuna.logging.get_verbosity(), logging.getLogger("mlflow").level, hf.get_verbosity(), hf.is_progress_bar_enabled())
    optuna.logging.set_verbosity(optuna.logging.INFO)
    hf.set_verbosity_info()
    hf.enable_progress_bar()
    try:
        a, b = quiet_logs(), quiet_logs()
        a.__enter__()
        b.__enter__()
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
        out, last = (a, b) if first_out == "first" else (b, a)
        out.__exit__(None, None, None)
        # the other still runs: quiet until it ends (the first out restored INFO, and the other's study line showed)
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING and hf.get_verbosity() == hf.ERROR
        last.__exit__(None, None, None)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert hf.get_verbosity() == hf.INFO and hf.is_progress_bar_enabled()
        with quiet_logs():
            optuna.logging.set_verbosity(optuna.logging.DEBUG)  # the user's own change meanwhile is kept
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before[0])
        logging.getLogger("mlflow").setLevel(before[1])
        hf.set_verbosity(before[2])
        (hf.enable_progress_bar if before[3] else hf.disable_progress_bar)()


def test_a_search_without_transformers_does_not_import_it_to_quiet_it():
    """quiet_logs imported transformers (about a second) for models that never use it, the digits CNN's search; a block
    that began before transformers was loaded does not keep an overlapping one from quieting it."""
    script = """
import sys
from autoq.quiet import quiet_logs
with quiet_logs():
    print("transformers" in sys.modules)
    import transformers.utils.logging as hf  # loaded while a block runs (another thread's Hugging Face load)
    before = hf.get_verbosity()
    with quiet_logs():  # overlapping: it quiets transformers, which the first block did not
        print(hf.get_verbosity() == hf.ERROR, hf.is_progress_bar_enabled())
    print(hf.get_verbosity() == before != hf.ERROR, hf.is_progress_bar_enabled())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "True", "False", "True", "True"], proc.stderr[-2000:]
