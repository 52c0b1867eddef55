"""ONNX Runtime backend (CPU by default; CUDA provider when onnxruntime-gpu is installed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...bundle import Artifact, bundle_file
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
        io = self.session.get_inputs(), self.session.get_outputs()
        self.check_graph(*([(t.name, t.shape) for t in ports] for ports in io))

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed)


class OrtBackend(Backend):
    """Sessions that share one process-wide intra-op thread pool of ``threads`` workers.

    The adaptive runtime alternates between dozens of small sessions. With a
    pool per session, each pool's workers spin after its run and starve the
    next session's (measured on Ada-DeiT-S, batch 1, 2 cores: 735 ms vs 60 ms
    per image); with spinning off, every op pays a wake-up (1.3x vs dense at
    batch 1). One shared, spinning pool gives 1.5x: all graphs, the dense
    baseline included, run on the same workers. ``threads=0``: one per core.

    Memory, the same way: one arena per session holds each graph's largest
    activations at once (4.4x the dense graph's peak RSS at batch 16), no
    arena pays malloc and page faults on every call; one process-wide arena
    that every session allocates from holds only the largest single call.
    """

    name = "ort"
    _pool_threads: int | None = None  # ORT sizes the global pool once per process
    _shared_arena = False  # registered once per process, like the pool

    def __init__(self, threads: int = 0, providers: list[str] | None = None) -> None:
        ort = _onnxruntime()
        threads = threads or os.cpu_count() or 1
        if OrtBackend._pool_threads is None:
            ort.set_default_logger_severity(3)
            ort.capi._pybind_state.set_global_thread_pool_sizes(threads, 1)
            OrtBackend._pool_threads = threads
        elif OrtBackend._pool_threads != threads:
            raise BackendError(
                f"ONNX Runtime's thread pool is already sized to {OrtBackend._pool_threads} threads in this process; "
                f"cannot switch to {threads}"
            )
        if not OrtBackend._shared_arena:
            cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # ORT's defaults
            OrtBackend._shared_arena = True
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        missing = set(self.providers) - set(ort.get_available_providers())
        if missing:
            raise BackendError(f"ONNX Runtime here lacks {sorted(missing)}: install onnxruntime-gpu for CUDA")
        self.options = ort.SessionOptions()
        self.options.use_per_session_threads = False
        self.options.add_session_config_entry("session.use_env_allocators", "1")
        self.options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def runner(self, bundle: Path, artifact: Artifact) -> Runner:
        return OrtRunner(bundle_file(bundle, artifact.file), artifact, self.options, self.providers)
