"""Backends the runtime can run a bundle on, by name."""

from __future__ import annotations

from ...errors import BackendError
from .base import Backend, Runner


def get_backend(name: str, threads: int = 0) -> Backend:
    """``ort`` (ONNX Runtime CPU) or ``ort-cuda`` (ONNX Runtime CUDA provider)."""
    if name == "ort":
        from .ort import OrtBackend

        return OrtBackend(threads)
    if name == "ort-cuda":
        from .ort import OrtBackend

        return OrtBackend(threads, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    raise BackendError(f"unknown backend {name!r}: choose ort or ort-cuda")


__all__ = ["Backend", "Runner", "get_backend"]
