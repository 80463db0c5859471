"""Can Triton kernels run here? Checks that never import Triton unless asked to run one."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from autoq.errors import AutoqError


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU with numpy, read as Triton reads it (its
    ``getenv_bool``: 1, y, yes, on, true in any case; no spaces): read otherwise, ``" 1"`` was taken for the interpreter
    that Triton then did not run (a traceback: "0 active drivers"), and ``y`` refused though Triton would interpret."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "y", "yes", "on", "true")


def autotuning() -> bool:
    """Whether kernels autotune their block sizes: on a GPU, unless ``AUTOQ_AUTOTUNE=0``.

    With ``AUTOQ_AUTOTUNE=0`` (and always under the interpreter) each kernel runs one fixed
    configuration: a fast first call, for tests of the compiled kernels on many odd shapes.
    """
    if interpreting():
        return False
    return os.environ.get("AUTOQ_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def gpu_available() -> bool:
    return torch.cuda.is_available()


@functools.cache
def cuda_sm_count(index: int) -> int:
    """CUDA device ``index``'s SMs (cached: launches ask it each time)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def triton_usable(device: torch.device) -> bool:
    """Whether a Triton kernel can run on tensors on ``device``: CUDA, or the CPU under the interpreter."""
    if not triton_installed():
        return False
    return interpreting() if device.type == "cpu" else device.type == "cuda"


INT8_DOT_CAPABILITY = (8, 0)  # Triton's int8 tl.dot (the W8A8 GEMM) compiles for Ampere and newer only


def int8_dot_usable(device: torch.device) -> bool:
    """Whether the W8A8 int8 GEMM compiles for ``device``: a CUDA GPU of compute capability 8.0 or newer (on a T4 or
    V100 Triton fails with an MLIR dump at the first launch); the CPU interpreter runs it anywhere."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= INT8_DOT_CAPABILITY


def require_triton(device: torch.device) -> None:
    """Raise an :class:`AutoqError` that says why Triton kernels cannot run on ``device``."""
    if not triton_installed():
        raise AutoqError("Triton is not installed; install it with 'pip install triton' or use backend='torch'")
    if not triton_usable(device):
        raise AutoqError(
            f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); got tensors on {device}. "
            "Use backend='torch' for the reference path"
        )


def require_gpu(what: str) -> None:
    """Raise an :class:`AutoqError` unless a CUDA GPU and Triton are present (measurements need real hardware)."""
    if not gpu_available():
        raise AutoqError(f"{what} needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
                         "run it on a machine with an NVIDIA GPU")
    if not triton_installed():
        raise AutoqError(f"{what} needs Triton; install it with 'pip install triton'")
