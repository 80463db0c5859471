"""Where and when a benchmark ran, for its JSON: the CPU by name (``platform.processor()`` is empty on Linux, so
results said only "x86_64"), the date, autoq's commit, and the versions that move its numbers."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """autoq's git commit (``+dirty`` with uncommitted changes), or ``unknown`` outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """The fields every CPU benchmark's JSON carries about its run."""
    return {
        "machine": f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "autoq_commit": commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


OUT_HELP = "JSON file (default: the committed result in benchmarks/results/; give another path for a trial run)"
MODEL_HELP = "a built-in (minilm, smollm2, digits-cnn) or a local Hugging Face model directory (default: %(default)s)"
BUDGET_HELP = "average bits per weight ('4.5bits', '4.5') or model size ('20MB', '20MiB') (default: %(default)s)"


def count(text: str) -> int:
    """argparse type of a count (trials, rows, rounds, batches): a whole number of at least 1, refused as a usage error
    rather than met later as a division by zero or an empty table."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a count of at least 1")
    return value


def out_file(text: str) -> str:
    """argparse type of ``--out``: a JSON file whose folder is made now, so that a run that cannot write its result is
    refused before it measures, not after (a missing folder was a FileNotFoundError at the end of the run)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the JSON file to write, e.g. {str(path / 'result.json')!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot make the folder of {text!r} ({exc.strerror}); give a path you can write") from None
    return text


if __name__ == "__main__":
    import sys

    print("provenance.py is a helper the benchmark scripts import, not a benchmark: run one of the others in benchmarks/", file=sys.stderr)
    raise SystemExit(2)
