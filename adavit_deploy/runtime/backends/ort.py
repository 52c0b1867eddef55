"""ONNX Runtime backend (CPU by default; CUDA provider when onnxruntime-gpu is installed)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from ...bundle import Artifact, bundle_file
from ...errors import BackendError
from .base import Backend, Runner, graph_threads, resolve_threads


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "onnxruntime is not installed: pip install 'adavit-deploy[cpu]' (or [gpu] for CUDA)"
        ) from None
    return onnxruntime


_arena_registered = False


def _shared_arena() -> None:
    """Register (once per process) the CPU arena that our sessions opt into with ``session.use_env_allocators``.

    Only sessions that opt in allocate from it: the host's own sessions keep
    their default per-session arenas.
    """
    global _arena_registered
    if not _arena_registered:
        ort = _onnxruntime()
        cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # ORT's defaults
        _arena_registered = True


_process_pool_threads: int | None = None  # set by use_process_pool()


def use_process_pool(threads: int = 0) -> int:
    """Opt THIS PROCESS into ONNX Runtime's global thread pool for our sessions; returns its size.

    Faster than per-session pools (Ada-DeiT-S at 50%, 2 threads, one run:
    batch 1 1.24-1.26x vs 1.16-1.17x dense, batch 16 1.55-1.56x vs 1.45x):
    every graph runs on the same spinning workers. But the pool is
    process-wide and fixed at one size, and every other session of the
    process must then opt out of per-session threads, so a library must not
    do this on its own: only the owner of the process calls it, before any
    ONNX Runtime session exists (our CLI commands and the Triton model do).
    """
    global _process_pool_threads
    threads = resolve_threads(threads)
    if _process_pool_threads is None:
        _onnxruntime().capi._pybind_state.set_global_thread_pool_sizes(threads, 1)
        _process_pool_threads = threads
    elif _process_pool_threads != threads:
        raise BackendError(
            f"ONNX Runtime's process pool already has {_process_pool_threads} threads; it cannot change to {threads}"
        )
    return threads


def pool_mode() -> str:
    """``"process"`` after ``use_process_pool``, else ``"session"`` (what a benchmark report records)."""
    return "session" if _process_pool_threads is None else "process"


def session_options(threads: int = 0, *, optimize: bool = True, profile_prefix: str | Path | None = None) -> Any:
    """Options for one of our sessions that leave the rest of the process alone.

    Each session has its own pool of ``threads`` (0: one per core) workers
    that spin while it runs and stop spinning when its ``Run`` returns
    (``session.force_spinning_stop``); its memory comes from one shared
    arena. After ``use_process_pool`` the sessions run on that pool instead.
    ``optimize=False``: no graph rewrites (an exact fp32 reference,
    for calibration). ``profile_prefix``: write ORT's per-node profile there.
    """
    ort = _onnxruntime()
    _shared_arena()
    options = ort.SessionOptions()
    if _process_pool_threads is None:
        options.intra_op_num_threads = resolve_threads(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.force_spinning_stop", "1")
    else:  # thread counts set here would be ignored, with a warning per session
        options.use_per_session_threads = False
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return options




class OrtRunner(Runner):
    def __init__(self, path: Path, artifact: Artifact, options: Any, providers: list[str]) -> None:
        super().__init__(artifact)
        self.session = _onnxruntime().InferenceSession(str(path), options, providers=providers)
        io = self.session.get_inputs(), self.session.get_outputs()
        self.check_graph(*([(t.name, t.shape) for t in ports] for ports in io))

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feed)

    def end_profiling(self) -> Path | None:
        """Stop profiling and return the profile file (``None`` if the session was not profiled)."""
        self.check_open()
        return Path(self.session.end_profiling()) if self.session.get_session_options().enable_profiling else None

    def _release(self) -> None:
        self.session = None


class OrtBackend(Backend):
    """ONNX Runtime sessions with their own spin-then-sleep thread pools and one shared memory arena.

    The adaptive runtime alternates between dozens of small sessions. With a
    pool per session whose workers keep spinning after its run, they starve
    the next session's (measured on Ada-DeiT-S, batch 1, 2 cores: 735 ms vs
    60 ms per image); with spinning off, every op pays a wake-up (1.3x vs
    dense at batch 1). Our sessions spin while they run and stop when their
    ``Run`` returns: a run pays one wake-up, not one per op. ORT's global
    pool is faster (``use_process_pool``) but makes every other session of
    the host process fail ("use_per_session_threads must be false when
    using a global thread pool") and fixes one thread count per process, so
    it is an opt-in of the process's owner (our CLI, the Triton model), not
    this class's default.
    ``threads=0``: one per core.
    Each session starts ``threads - 1`` workers, asleep between runs; the
    small graphs (``CALLER_THREAD_GRAPHS``: policy, classifier) have none and
    run on the calling thread, which saves 12 of the ~19 wake-ups per image
    (in one process, interleaved, on a loaded 2-core host: batch 1 186 -> 167,
    188 -> 173, 273 -> 207 ms; batch 16 1942 -> 1865 ms).

    Memory: one arena per session holds each graph's largest activations at
    once (4.4x the dense graph's peak RSS at batch 16), no arena pays malloc
    and page faults on every call; one arena that our sessions share holds
    only the largest single call (registered with ONNX Runtime's environment;
    only sessions that ask for it use it).

    ``profile_dir``: every session writes its ORT profile there, under a
    prefix unique to the session (``OrtRunner.end_profiling``).
    """

    name = "ort"

    def __init__(
        self, threads: int = 0, providers: list[str] | None = None, *, profile_dir: str | Path | None = None
    ) -> None:
        super().__init__()
        ort = _onnxruntime()
        self.threads = resolve_threads(threads)
        if _process_pool_threads not in (None, self.threads):
            raise BackendError(
                f"this process runs ONNX Runtime on a pool of {_process_pool_threads} threads (use_process_pool): "
                f"cannot run with {self.threads}"
            )
        self.providers = providers or ["CPUExecutionProvider"]
        missing = set(self.providers) - set(ort.get_available_providers())
        if missing:
            raise BackendError(f"ONNX Runtime here lacks {sorted(missing)}: install onnxruntime-gpu for CUDA")
        self.profile_dir = Path(profile_dir) if profile_dir is not None else None
        self._sessions = itertools.count()

    def fingerprint(self) -> dict[str, Any]:
        ort = _onnxruntime()
        return {**super().fingerprint(), "onnxruntime": ort.__version__, "providers": self.providers,
                "threads": self.threads}

    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> OrtRunner:
        prefix = None
        if self.profile_dir is not None:
            # ORT names a profile prefix + a millisecond timestamp: sessions made in the same
            # millisecond would share one file, so each session gets its own prefix
            prefix = self.profile_dir / f"{Path(artifact.file).stem}-{next(self._sessions)}"
        options = session_options(graph_threads(artifact, self.threads), profile_prefix=prefix)
        return OrtRunner(bundle_file(bundle, artifact.file), artifact, options, self.providers)
