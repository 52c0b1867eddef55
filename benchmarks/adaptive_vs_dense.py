"""Adaptive runtime vs the dense baseline graph, side by side in one run.

Builds (or reuses) a random-weight Ada-DeiT-S-shaped checkpoint whose
decisions keep ~50% of the dense GMACs, exports it, then times both engines
on the same inputs in interleaved rounds (machines are noisy: the ratio
of medians measured in one run is the figure to quote). Peak memory is each
engine's own process high-water mark (RSS), measured in a child process.

    python benchmarks/adaptive_vs_dense.py [--batch-sizes 1,16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adavit_deploy.config import preset
from adavit_deploy.cost import dense_gmacs
from adavit_deploy.export import export_bundle
from adavit_deploy.runtime import load_bundle
from adavit_deploy.synthetic import random_checkpoint

WORK = Path("benchmarks/.work")


def bundle_path(target: float) -> Path:
    """Ada-DeiT-S shape (224 px, 12 blocks, 6 heads, 1000 classes) at ``target`` x dense GMACs."""
    ckpt, bundle = WORK / f"ada-deit-s-{target}.pth", WORK / f"ada-deit-s-{target}"
    WORK.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        random_checkpoint(preset("ada-deit-s"), ckpt, target=target)
    if not bundle.exists():
        export_bundle(ckpt, bundle)
    return bundle


def time_engine(fn, images: np.ndarray, iterations: int) -> list[float]:
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn(images)
        out.append(time.perf_counter() - t)
    return out


def peak_rss_mib(bundle: Path, engine: str, batch: int, threads: int) -> float:
    """Run one engine alone in a fresh child process; its VmHWM (ru_maxrss would inherit ours)."""
    code = (
        "import numpy as np; from adavit_deploy.runtime import load_bundle;"
        f"rt = load_bundle({str(bundle)!r}, threads={threads});"
        f"x = np.random.default_rng(0).standard_normal(({batch}, 3, 224, 224), dtype=np.float32);"
        f"[rt.{'infer' if engine == 'adaptive' else 'dense'}(x) for _ in range(3)];"
        "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    bundle = bundle_path(args.target)
    rt = load_bundle(bundle, threads=args.threads)
    rng = np.random.default_rng(123)
    report = {"bundle": str(bundle), "threads": args.threads, "rows": []}
    for batch in map(int, args.batch_sizes.split(",")):
        images = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        iters = max(2, 16 // batch)
        rt.infer(images), rt.dense(images)  # warm-up, excluded
        times = {"adaptive": [], "dense": []}
        for _ in range(args.rounds):  # interleaved so both see the same machine
            times["adaptive"] += time_engine(rt.infer, images, iters)
            times["dense"] += time_engine(rt.dense, images, iters)
        med = {k: float(np.median(v)) for k, v in times.items()}
        res = rt.infer(images)
        row = {
            "batch_size": batch,
            "adaptive_ms": med["adaptive"] * 1e3,
            "dense_ms": med["dense"] * 1e3,
            "adaptive_ips": batch / med["adaptive"],
            "dense_ips": batch / med["dense"],
            "speedup": med["dense"] / med["adaptive"],
            "gmacs_ratio": float(res.gmacs.mean() / dense_gmacs(rt.cfg)),
            "calls": res.routing.calls,
            "padding_waste": res.routing.padding_waste,
            "adaptive_peak_rss_mib": peak_rss_mib(bundle, "adaptive", batch, args.threads),
            "dense_peak_rss_mib": peak_rss_mib(bundle, "dense", batch, args.threads),
        }
        row["memory_ratio"] = row["adaptive_peak_rss_mib"] / row["dense_peak_rss_mib"]
        report["rows"].append(row)
        print(
            f"batch {batch:3d}: adaptive {row['adaptive_ips']:7.2f} img/s  dense {row['dense_ips']:7.2f} img/s  "
            f"speedup {row['speedup']:.2f}x  GMACs ratio {row['gmacs_ratio']:.3f}  "
            f"calls {row['calls']}  padding {row['padding_waste']:.1%}  "
            f"peak RSS {row['adaptive_peak_rss_mib']:.0f} / {row['dense_peak_rss_mib']:.0f} MiB ({row['memory_ratio']:.2f}x)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
