"""Backends the runtime can run a bundle on, by name."""

from __future__ import annotations

from pathlib import Path

from ...errors import BackendError, ConfigError
from .base import Backend, Runner, resolve_threads

BACKENDS = ("ort", "ov", "ort-cuda", "trt")
#: The CPU backends: where ``bench`` times its dense baselines.
CPU_BACKENDS = ("ort", "ov")


def get_backend(name: str, threads: int = 0, *, cache_dir: str | Path | None = None) -> Backend:
    """``ort`` (ONNX Runtime CPU), ``ov`` (OpenVINO CPU), ``ort-cuda`` (ONNX Runtime CUDA provider)
    or ``trt`` (TensorRT engines).

    ``trt`` runs the engines ``adavit-deploy build-trt`` wrote into
    ``<bundle>/trt/``; for engines elsewhere pass
    ``adavit_deploy.runtime.backends.trt.TrtBackend(engines=DIR)`` as the backend instead.
    ``cache_dir``: where ``ov`` caches its compiled models (``runtime/backends/ov.py``).
    """
    threads = resolve_threads(threads)
    if cache_dir is not None and name != "ov":
        raise ConfigError(f"cache_dir caches OpenVINO's compiled models: it is for the ov backend, not {name!r}")
    if name == "ort":
        from .ort import OrtBackend

        return OrtBackend(threads)
    if name == "ov":
        from .ov import OvBackend

        return OvBackend(threads, cache_dir=cache_dir)
    if name == "ort-cuda":
        from .ort import OrtBackend

        return OrtBackend(threads, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if name == "trt":
        from .trt import TrtBackend

        return TrtBackend()
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "CPU_BACKENDS", "Backend", "Runner", "get_backend", "resolve_threads"]
