"""Backends the runtime can run a bundle on, by name."""

from __future__ import annotations

from ...errors import BackendError
from .base import Backend, Runner, resolve_threads

BACKENDS = ("ort", "ov", "ort-cuda", "trt")


def get_backend(name: str, threads: int = 0) -> Backend:
    """``ort`` (ONNX Runtime CPU), ``ov`` (OpenVINO CPU), ``ort-cuda`` (ONNX Runtime CUDA provider)
    or ``trt`` (TensorRT engines).

    ``trt`` runs the engines ``adavit-deploy build-trt`` wrote into
    ``<bundle>/trt/``; for engines elsewhere pass
    ``adavit_deploy.runtime.backends.trt.TrtBackend(engines=DIR)`` as the backend instead.
    """
    threads = resolve_threads(threads)
    if name == "ort":
        from .ort import OrtBackend

        return OrtBackend(threads)
    if name == "ov":
        from .ov import OvBackend

        return OvBackend(threads)
    if name == "ort-cuda":
        from .ort import OrtBackend

        return OrtBackend(threads, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if name == "trt":
        from .trt import TrtBackend

        return TrtBackend()
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Runner", "get_backend", "resolve_threads"]
