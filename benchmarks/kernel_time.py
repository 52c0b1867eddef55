"""How much of each engine's time is ONNX Runtime kernels, and the speed-up kernels alone would give.

A wall-clock ratio mixes two things: the work of the kernels (GEMMs,
LayerNorms, the in-graph weight gathers) and what surrounds them (session
runs, the host routing loop). This script profiles every session of the
adaptive runtime (fp32 and int8) and of the dense graph on the same inputs
(ORT's per-node profiler) and reports, per batch size, the wall time and the
summed kernel time of each engine, the ratios of both, and the op types that
take the most kernel time. If the kernel-only ratio is below a target, no
host-side work can reach it: the kernels themselves must change.

Profiling adds a little time per node to the wall times; the kernel times are
the profiler's per-node durations. Uses the bundle of ``adaptive_vs_dense.py``.

    python benchmarks/kernel_time.py [--arch deit_s|t2t_vit_19] [--target 0.5] [--batch-sizes 1,16] [--threads 2] [--reps 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from adaptive_vs_dense import ARCHS, bundle_path
from rich.console import Console
from rich.table import Table

from adavit_deploy.bench import cycled_batches, parse_batch_sizes
from adavit_deploy.bundle import read_manifest
from adavit_deploy.runtime.adaptive import AdaptiveRuntime
from adavit_deploy.runtime.backends.ort import OrtBackend, use_process_pool

ENGINES = ("adaptive", "adaptive.int8", "dense")


def profiled_runtimes(backend: OrtBackend, bundle: Path) -> dict[str, AdaptiveRuntime]:
    """fp32 and int8 runtimes of ``bundle`` on ``backend`` (made with a ``profile_dir``)."""
    manifest = read_manifest(bundle)
    return {p: AdaptiveRuntime(bundle, manifest, backend, precision=p) for p in ("fp32", "int8")}


def kernel_ms(runtimes: dict[str, AdaptiveRuntime], calls: int) -> dict[str, dict[str, float]]:
    """Per engine: kernel milliseconds per call, by op type (ends every session's profile)."""
    out: dict[str, dict[str, float]] = {e: defaultdict(float) for e in ENGINES}
    for precision, rt in runtimes.items():
        for name, runner in rt.runners.items():
            engine = "dense" if name == "dense" else ("adaptive" if precision == "fp32" else "adaptive.int8")
            for event in json.loads(runner.end_profiling().read_text()):
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    out[engine][event["args"]["op_name"]] += event["dur"] / 1e3 / calls
    return out


def measure(bundle: Path, batch: int, threads: int, reps: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Median wall ms, and mean kernel ms by op type, per engine; the engines interleaved call by call."""
    with tempfile.TemporaryDirectory(prefix="adavit-kernels-") as tmp, OrtBackend(threads, profile_dir=tmp) as backend:
        rts = profiled_runtimes(backend, bundle)
        cfg = rts["fp32"].cfg
        shape = (max(32, batch), cfg.in_chans, cfg.img_size, cfg.img_size)
        batches = cycled_batches(np.random.default_rng(0).standard_normal(shape, dtype=np.float32), batch, reps)
        run = {"adaptive": rts["fp32"].infer, "adaptive.int8": rts["int8"].infer, "dense": rts["fp32"].dense}
        for f in run.values():  # sessions are created on first use: not in the timed calls (the profile has it)
            f(batches[0])
        wall: dict[str, list[float]] = defaultdict(list)
        for i in range(reps):
            x = batches[i % len(batches)]
            for name, f in run.items():
                start = time.perf_counter()
                f(x)
                wall[name].append((time.perf_counter() - start) * 1e3)
        kernels = kernel_ms(rts, reps + 1)
    return {k: float(np.median(v)) for k, v in wall.items()}, kernels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=8, help="timed calls per engine and batch size")
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense (the bundle)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="deit_s", help="model shape (the bundle)")
    args = ap.parse_args()
    use_process_pool(args.threads)  # as the CLI and adaptive_vs_dense.py: this script owns its process
    bundle = bundle_path(args.target, args.threads, args.arch)
    console = Console(width=max(Console().width, 150))
    for b in parse_batch_sizes(args.batch_sizes):
        wall, kernels = measure(bundle, b, args.threads, args.reps)
        total = {e: sum(kernels[e].values()) for e in ENGINES}
        table = Table(title=f"batch {b}: {args.threads} threads, {args.reps} calls per engine")
        for col in ("engine", "wall ms", "kernel ms", "outside kernels ms", "top kernels (ms per call)"):
            table.add_column(col)
        for e in ENGINES:
            top = sorted(kernels[e].items(), key=lambda kv: -kv[1])[:4]
            table.add_row(
                e, f"{wall[e]:.1f}", f"{total[e]:.1f}", f"{wall[e] - total[e]:.1f}", ", ".join(f"{op} {ms:.1f}" for op, ms in top)
            )
        console.print(table)
        for what, (num, den) in {
            "adaptive vs dense": ("dense", "adaptive"),
            "adaptive.int8 vs adaptive": ("adaptive", "adaptive.int8"),
        }.items():
            console.print(
                f"batch {b}: {what}: wall {wall[num] / wall[den]:.2f}x, kernels only {total[num] / total[den]:.2f}x"
            )


if __name__ == "__main__":
    main()
