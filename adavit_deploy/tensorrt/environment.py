"""Which TensorRT, Polygraphy and GPU this process has, with one-line errors where one is missing.

Everything heavy is imported here, lazily, when a build or the backend starts:
``import adavit_deploy.tensorrt`` imports none of TensorRT, Polygraphy or torch.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError, param
from .manifest import TrtEnvironment

MIN_TENSORRT = 10
INSTALL_HINT = "pip install 'adavit-deploy[gpu]' on a machine with an NVIDIA GPU and TensorRT >= 10"


#: ``--backend ort`` on the command line, ``backend="ort"`` in Python.
ORT_BACKEND = param("backend", "backend ort", 'backend="ort"')


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line BackendError naming what to install."""
    try:
        import tensorrt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer is not loadable
        why = "is not installed" if isinstance(e, ImportError) else f"cannot be loaded ({e})"
        raise BackendError(f"TensorRT {why}: {INSTALL_HINT}") from None
    major = tensorrt_major(tensorrt)
    if major < MIN_TENSORRT:
        raise BackendError(f"TensorRT {tensorrt.__version__} is too old (need >= {MIN_TENSORRT}): {INSTALL_HINT}")
    return tensorrt


def tensorrt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        raise BackendError(f"cannot read the TensorRT version {trt.__version__!r}") from None


def require_cuda(device: int = 0) -> Any:
    """``torch`` with a usable CUDA device ``device``, or a one-line BackendError."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(
            "no CUDA GPU is visible (torch.cuda.is_available() is False): TensorRT needs an NVIDIA GPU; "
            f"use {ORT_BACKEND} on CPU"
        )
    if not 0 <= device < torch.cuda.device_count():
        raise BackendError(f"CUDA device {device} does not exist ({torch.cuda.device_count()} visible)")
    return torch


def current_environment(trt: Any, device: int = 0) -> TrtEnvironment:
    """TensorRT version, GPU name and compute capability of ``device`` (what engines are tied to)."""
    torch = require_cuda(device)
    major, minor = torch.cuda.get_device_capability(device)
    return TrtEnvironment(str(trt.__version__), torch.cuda.get_device_name(device), (int(major), int(minor)))


def import_polygraphy_trt() -> Any:
    """``polygraphy.backend.trt`` (the build's loaders), or a one-line BackendError naming what to install."""
    try:
        from polygraphy.backend import trt as polygraphy_trt
    except ImportError:
        raise BackendError(f"Polygraphy is not installed (build-trt builds with its loaders): {INSTALL_HINT}") from None
    return polygraphy_trt
