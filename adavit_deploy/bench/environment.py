"""Where a benchmark ran: CPU, threads, ONNX Runtime pool mode, platform, package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from ..machine import cpu_model
from ..runtime.backends.ort import pool_mode as ort_pool_mode


def environment(backend: str, threads: int) -> dict[str, Any]:
    versions = {}
    for pkg in ("adavit-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "backend": backend,
        "ort_pool": ort_pool_mode() if backend.startswith("ort") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
