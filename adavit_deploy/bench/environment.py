"""Where a benchmark ran: CPU, threads, ONNX Runtime pool mode, platform, package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from ..machine import cpu_flags, cpu_model
from ..runtime.backends.ort import pool_mode as ort_pool_mode


#: The CPU flags a bench report records.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def environment(backend: str, threads: int) -> dict[str, Any]:
    versions = {}
    for pkg in ("adavit-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "onnx", "torch", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    flags = cpu_flags() or frozenset()
    return {
        "cpu": cpu_model(),
        # what the CPU engines' speed rests on (bf16, VNNI for INT8, AVX-512 / AVX2 GEMMs)
        "cpu_flags": sorted(flags & set(CPU_FLAGS)),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "backend": backend,
        "ort_pool": ort_pool_mode() if backend.startswith("ort") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
