"""Tuned tactics vs each tactic forced, interleaved in one process, against the dense graph.

Loads the bundle of ``adaptive_vs_dense.py`` (made and tuned on first use)
three times: every stage ``gather``, every stage ``masked``, and the tuned
choice of ``tactics.json``; runs the three and the dense graph on the same
seeded inputs in alternating rounds, and prints ms per batch and the ratios.
Results are identical by construction (every tactic is exact: the parity
tests); only the time differs.

    python benchmarks/tactics.py [--arch deit_s|t2t_vit_19] [--target 0.5] [--batch-size 16] [--precision fp32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from adaptive_vs_dense import ARCHS, bundle_path, tuned

from adavit_deploy.bench import cycled_batches
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.backends.ort import use_process_pool
from adavit_deploy.runtime.tactics import TACTICS

SAMPLES = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="deit_s")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    use_process_pool(args.threads)
    bundle = tuned(bundle_path(args.target, args.threads, args.arch), args.threads)
    runtimes = {t: load_bundle(bundle, threads=args.threads, precision=args.precision, tactic=t) for t in TACTICS}
    runtimes["tuned"] = load_bundle(bundle, threads=args.threads, precision=args.precision)
    cfg = runtimes["tuned"].cfg
    pool = np.random.default_rng(0).standard_normal((SAMPLES, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
    batches = cycled_batches(pool, args.batch_size, max(1, SAMPLES // args.batch_size))
    engines = {name: rt.infer for name, rt in runtimes.items()}
    engines["dense"] = runtimes["tuned"].dense
    for run in engines.values():  # sessions are made on first use: not timed
        for x in batches:
            run(x)
    seconds = dict.fromkeys(engines, 0.0)
    calls: dict[str, dict[str, int]] = {}
    for _ in range(args.rounds):
        for name, run in engines.items():
            start = time.perf_counter()
            for x in batches:
                out = run(x)
            seconds[name] += time.perf_counter() - start
            if name != "dense":
                calls[name] = out.routing.tactics
    n = args.rounds * len(batches)
    print(f"{bundle.name}, batch {args.batch_size}, {args.precision}, {args.threads} threads, {n} batches per engine")
    for name, s in seconds.items():
        print(
            f"  {name:7s} {s / n * 1e3:8.2f} ms/batch  vs dense {seconds['dense'] / s:.3f}x  "
            f"vs gather {seconds['gather'] / s:.3f}x  {calls.get(name, '')}"
        )
    for rt in runtimes.values():
        rt.close()


if __name__ == "__main__":
    main()
