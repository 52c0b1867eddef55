"""Streamed image collections (issue 25): memory and throughput of ``evaluate`` on a folder of JPEGs.

In one run:

1. make (once) an ImageFolder tree of ``--images`` seeded JPEGs in 10 class
   folders under ``benchmarks/.work/`` (sides 224-448 px, smooth colour fields
   with noise, so they decode like photos rather than flat colour), and the
   random Ada-DeiT-S bundle at 49% of dense GMACs of ``adaptive_vs_dense.py``;
2. decode the tree once in this process, one thread: the decode cost per
   image (Pillow decode + timm's eval transform), and the same images as one
   pre-decoded ``.npz``;
3. run, each as its own ``adavit-deploy`` process (so its peak RSS is its
   own), interleaved ``infer ONE.jpg`` (the baseline: one image), then
   ``evaluate --data TREE`` (streamed, ``--workers``) and ``evaluate --data
   TREE.npz`` (pre-decoded, one array in memory) in the order S P P S, both
   at ``--batch-size``, budget native, fp32, with the dense graph (evaluate
   always runs it): images/s and peak RSS of each.

    python benchmarks/collection.py [--images 2000] [--batch-size 16] [--workers N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from adaptive_vs_dense import WORK, bundle_path
from PIL import Image

from adavit_deploy.collection import default_workers, open_collection
from adavit_deploy.machine import cpu_flags, cpu_model
from adavit_deploy.runtime import load_bundle

CLASSES = 10


def image_tree(count: int) -> Path:
    """``count`` seeded JPEGs in ``CLASSES`` class folders, made once (staged, then renamed into place)."""
    root = WORK / f"imagefolder-{count}"
    if root.exists():
        return root
    print(f"writing {count} JPEGs to {root} (once) ...", flush=True)
    stage = Path(tempfile.mkdtemp(dir=WORK, prefix=".imagefolder-"))
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = rng.integers(224, 449, 2)
        field = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)  # smooth colour field ...
        big = np.asarray(Image.fromarray(field).resize((int(w), int(h)), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(big + rng.integers(-24, 25, big.shape), 0, 255).astype(np.uint8)  # ... with grain
        folder = stage / f"class{i % CLASSES:02d}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=85)
    stage.rename(root)
    return root


def predecoded(root: Path, bundle: Path) -> tuple[Path, float]:
    """The tree as one normalised array file, and the decode cost per image (one thread, ms)."""
    with load_bundle(bundle) as rt:
        cfg = rt.cfg
    collection = open_collection(root)
    start = time.perf_counter()
    images = collection.read_all(cfg, workers=1)
    ms = (time.perf_counter() - start) * 1e3 / len(images)
    out = root.with_suffix(".npz")
    if not out.exists():
        np.savez(out, images=images, labels=collection.labels)
    return out, ms


#: Runs the CLI and, at exit, writes its peak RSS (VmHWM: this process's own address space since exec;
#: ``ru_maxrss`` of a child would start from this script's peak, which Linux carries across fork and exec).
CHILD = """import atexit, re, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as f, open(out, "w") as o:
        o.write(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
atexit.register(peak)
runpy.run_module("adavit_deploy", run_name="__main__")
"""


def timed(args: list[str]) -> tuple[float, int]:
    """Run ``adavit-deploy ARGS`` as a child process: its wall seconds and its own peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "vmhwm"
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", CHILD, str(peak), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        seconds = time.perf_counter() - start
        if child.returncode:
            sys.exit(f"adavit-deploy {' '.join(args)} failed: {child.stderr[-2000:]}")
        return seconds, int(peak.read_text()) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--json", type=Path, default=None)
    a = parser.parse_args()
    bundle = bundle_path(0.49, threads=0)
    root = image_tree(a.images)
    array, decode_ms = predecoded(root, bundle)
    print(f"decode + eval transform: {decode_ms:.2f} ms per image (one thread)", flush=True)

    one = next((root / "class00").iterdir())
    _, infer_rss = timed(["infer", str(bundle), str(one)])
    common = ["--budgets", "native", "--precisions", "fp32", "--batch-size", str(a.batch_size)]
    runs: dict[str, list[dict]] = {"streamed": [], "predecoded": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("streamed", "predecoded", "predecoded", "streamed"):
            data = ["--data", str(root), "--workers", str(a.workers)] if kind == "streamed" else ["--data", str(array)]
            report = Path(tmp) / "e.json"
            seconds, rss = timed(["evaluate", str(bundle), *data, *common, "--json", str(report)])
            result = json.loads(report.read_text())
            runs[kind].append({"images_per_s": result["images_per_s"], "peak_rss_mib": rss, "wall_s": round(seconds, 1)})
            print(f"{kind:>10}: {result['images_per_s']:.2f} images/s, peak RSS {rss} MiB, {seconds:.0f} s", flush=True)

    mean = {k: float(np.mean([r["images_per_s"] for r in v])) for k, v in runs.items()}
    summary = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "flags": sorted(f for f in cpu_flags() or () if f.startswith(("avx", "amx")))},
        "images": a.images, "batch_size": a.batch_size, "workers": a.workers,
        "decode_ms_per_image": round(decode_ms, 2),
        "infer_one_image_peak_rss_mib": infer_rss,
        "runs": runs,
        "streamed_vs_predecoded_throughput": round(mean["streamed"] / mean["predecoded"], 3),
        "streamed_rss_over_one_image_mib": max(r["peak_rss_mib"] for r in runs["streamed"]) - infer_rss,
        "predecoded_rss_over_one_image_mib": max(r["peak_rss_mib"] for r in runs["predecoded"]) - infer_rss,
    }  # fmt: skip
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
