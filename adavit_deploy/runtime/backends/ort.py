"""ONNX Runtime backend (CPU by default; CUDA provider when onnxruntime-gpu is installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...bundle import Artifact
from ...errors import BackendError
from .base import Backend, Runner


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed: pip install 'adavit-deploy[cpu]' (or [gpu] for CUDA)"
        ) from None
    return onnxruntime


class OrtRunner(Runner):
    def __init__(self, path: Path, artifact: Artifact, options, providers: list[str]) -> None:
        super().__init__(artifact)
        self.session = _onnxruntime().InferenceSession(str(path), options, providers=providers)

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed)


class OrtBackend(Backend):
    """``threads`` sets intra-op threads (0 = ORT's default: one per core)."""

    name = "ort"

    def __init__(self, threads: int = 0, providers: list[str] | None = None) -> None:
        ort = _onnxruntime()
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads
        self.options.inter_op_num_threads = 1
        self.options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.options.log_severity_level = 3
        self.providers = providers or ["CPUExecutionProvider"]
        missing = set(self.providers) - set(ort.get_available_providers())
        if missing:
            raise BackendError(f"ONNX Runtime here lacks {sorted(missing)}: install onnxruntime-gpu for CUDA")

    def runner(self, bundle: Path, artifact: Artifact) -> Runner:
        return OrtRunner(bundle / artifact.file, artifact, self.options, self.providers)
