"""Peak memory of one engine alone: its own high-water mark (``VmHWM``), read in a fresh child process.

``ru_maxrss`` of the benchmark process would include every engine it
loaded; a child runs one engine on one batch (on the parent's ONNX Runtime
pool mode) and prints its peak in MiB.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..runtime import load_bundle
from ..runtime.backends import get_backend
from ..runtime.backends.ort import pool_mode as ort_pool_mode
from .engines import reference_engine, reference_model, split_engine

#: Calls an engine makes in its memory child before its high-water mark is read.
MEMORY_CALLS = 3
#: What the child process runs: ``memory_child`` of this module, with the arguments after ``-c``.
CHILD = f"import sys; from {__name__} import memory_child; memory_child(*sys.argv[1:])"


def memory_child(
    engine: str, bundle: str, batch_file: str, threads: str, backend: str, budget: str, pool: str, tactic: str
) -> None:
    """Entry point of a memory child: load one engine, run it (on the parent's ORT pool mode), print VmHWM in MiB."""
    images = np.load(batch_file)
    if pool == "process":
        from ..runtime.backends.ort import use_process_pool

        use_process_pool(int(threads))
    if engine == "reference":
        import torch

        from ..bundle import read_manifest

        torch.set_num_threads(int(threads))
        model, reason = reference_model(Path(bundle), read_manifest(bundle, verify=False))
        if model is None:
            raise BackendError(reason)
        run = reference_engine(model).run
        x = torch.from_numpy(images)
    else:
        base, precision = split_engine(engine)
        backend_impl = get_backend(backend, int(threads))
        rt = load_bundle(bundle, backend=backend_impl, budget=budget, precision=precision, tactic=tactic or None)
        run, x = (rt.infer if base == "adaptive" else rt.dense), images
    for _ in range(MEMORY_CALLS):
        run(x)
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(kib / 1024)


def peak_rss_mib(
    engine: str,
    bundle: Path,
    batch: np.ndarray,
    threads: int,
    backend: str,
    workdir: Path,
    budget: str = "native",
    tactic: str | None = None,
) -> float:
    """Peak RSS of ``engine`` alone on ``batch``, in a fresh process (``ru_maxrss`` would include ours)."""
    batch_file = workdir / f"batch-{len(batch)}.npy"
    if not batch_file.exists():
        np.save(batch_file, batch)
    args = [engine, str(bundle), str(batch_file), str(threads), backend, budget, ort_pool_mode(), tactic or ""]
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if done.returncode:
        raise BackendError(f"measuring the peak memory of {engine} at batch {len(batch)} failed: {_last_line(done.stderr)}")
    return float(done.stdout.split()[-1])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
