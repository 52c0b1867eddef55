"""Served vs in-process, adaptive vs dense: Ada-DeiT-S at ~50% GMACs on Triton Inference Server.

Issue 13's measurement, in one run:

1. export (once) a random-weight Ada-DeiT-S whose decisions keep ``--target``
   of the dense GMACs to ``benchmarks/.work/`` (fp32 graphs only) and tune its
   tactics for this machine (``adavit-deploy tune``). Exporting
   needs torch, serving needs the ``serve`` extra (numpy < 2): the export runs
   in ``--export-python`` (a Python with torch), this script in the serving one;
2. serve it and its dense graph side by side (``adavit-deploy triton-repo
   --with-dense``) on loopback ports and load both, interleaved, with
   ``bench --url``'s client (one image per request) at each ``--concurrency``;
3. right after each such load, time the in-process runtime and dense graph
   (same threads, same images) at the batch size the server just formed
   (rounded), while the server idles; served and in-process alternate in
   ``--rounds`` so that the shared host's changing load hits both alike;
4. print served / in-process and adaptive / dense throughput, p50 (median of
   the rounds) / p99 (worst round), and write everything to ``--json``.

    python benchmarks/serving.py --export-python /path/to/torch-venv/bin/python [--threads 2] [--concurrency 1,16]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"


def bundle_path(target: float) -> Path:
    return WORK / f"ada-deit-s-{target}-fp32"


def export(target: float, threads: int) -> None:
    """The torch side: a random Ada-DeiT-S checkpoint at ``target`` x dense GMACs, exported with fp32 graphs,
    its tactics tuned here for batch sizes 1 and 16 (served and in-process runtimes both use them)."""
    from adavit_deploy.config import preset
    from adavit_deploy.export import export_bundle
    from adavit_deploy.runtime.backends.ort import use_process_pool
    from adavit_deploy.synthetic import random_checkpoint
    from adavit_deploy.tuner import tune

    use_process_pool(threads)  # as the Triton model runs

    WORK.mkdir(parents=True, exist_ok=True)
    ckpt = WORK / f"ada-deit-s-{target}.pth"  # the same checkpoint as benchmarks/adaptive_vs_dense.py's
    if not ckpt.exists():
        random_checkpoint(preset("ada-deit-s"), ckpt, target=target)
    export_bundle(ckpt, bundle_path(target), threads=threads)
    tune(bundle_path(target), (1, 16), threads=threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(rt, pool, batch_sizes: dict[str, int], seconds: float, first: int = 0) -> dict[str, tuple[int, float]]:
    """(images, seconds) of the runtime (adaptive) and of the dense graph, in this process, at the given batch
    sizes, ``seconds`` each, one after the other (``first``: which starts)."""
    from adavit_deploy.bench import cycled_batches

    runs = {"adaptive": rt.infer, "dense": rt.dense}
    engines = list(batch_sizes)
    out = {}
    for k in range(len(engines)):
        e = engines[(k + first) % len(engines)]
        batches = cycled_batches(pool, batch_sizes[e], 64)
        runs[e](batches[0])  # untimed: a new batch size
        calls, spent, stop_at = 0, 0.0, time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            runs[e](batches[calls % len(batches)])
            spent += time.perf_counter() - t
            calls += 1
        out[e] = (calls * batch_sizes[e], spent)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the served and in-process runtimes")
    ap.add_argument("--concurrency", default="1,16", help="client concurrency levels")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per model and concurrency")
    ap.add_argument("--rounds", type=int, default=3, help="served and in-process alternate this many times")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's max batch size")
    ap.add_argument("--queue-delay-us", type=int, default=0, help="the dynamic batcher's max queue delay")
    ap.add_argument("--protocol", default="grpc", choices=("http", "grpc"))
    ap.add_argument("--export-python", default=sys.executable, help="a Python with torch, for the one-time export")
    ap.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if args.export_only:
        return export(args.target, args.threads)
    bundle = bundle_path(args.target)
    if not bundle.exists():
        print(f"exporting {bundle.name} with {args.export_python} (once) ...", flush=True)
        cmd = [args.export_python, __file__, "--export-only", "--target", str(args.target), "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
    measure(bundle, args)


def measure(bundle: Path, args: argparse.Namespace) -> None:
    """Served and in-process alternate in rounds, in the same minutes: the shared host's load moves by the minute."""
    import numpy as np

    from adavit_deploy import load_bundle
    from adavit_deploy.serving import RepositoryOptions, write_repository
    from adavit_deploy.bench.server import load_images, parse_concurrency, run_load
    from adavit_deploy.runtime.backends.ort import use_process_pool
    from adavit_deploy.serving.server import TritonServer

    use_process_pool(args.threads)  # the in-process side on the pool the served model uses

    options = RepositoryOptions(threads=args.threads, max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                                with_dense=True)  # fmt: skip
    levels, models = parse_concurrency(args.concurrency), {"adaptive": "adavit", "dense": "adavit_dense"}
    rounds: list[dict] = []
    # the in-process runtime idles while the server works, and the other way round
    with load_bundle(bundle, threads=args.threads) as rt, tempfile.TemporaryDirectory(prefix="adavit-serving-bench-") as tmp:
        pool, _ = load_images(None, (rt.cfg.in_chans, rt.cfg.img_size, rt.cfg.img_size))
        repo = write_repository(bundle, Path(tmp) / "models", options)
        ports = {k: free_port() for k in ("http_port", "grpc_port", "metrics_port")}
        with open(Path(tmp) / "triton.log", "w") as log, TritonServer(repo, log=log, **ports) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            for r in range(args.rounds):
                for c in levels:
                    print(f"  round {r + 1}/{args.rounds}, {c} clients", flush=True)
                    report = run_load(url, args.protocol, [c], args.duration / args.rounds, metrics_url=server.metrics_url,
                                      rounds=1, warmup_s=1.0 if r == 0 else 0.0)  # fmt: skip
                    served = {e: report.result(m, c) for e, m in models.items()}
                    formed = {e: max(1, round(row["server_batch_mean"] or 1)) for e, row in served.items()}
                    local = in_process(rt, pool, formed, args.duration / args.rounds / 2, first=r)
                    rounds.append({"round": r, "concurrency": c, "served": served, "batch": formed, "in_process": local})
    summary = []
    for c in levels:
        mine = [x for x in rounds if x["concurrency"] == c]
        row = {"concurrency": c}
        for e in models:
            ok = sum(x["served"][e]["requests"] - x["served"][e]["errors"] for x in mine)
            images = sum(x["in_process"][e][0] for x in mine)
            row[e] = {
                "served_ips": ok / sum(x["served"][e]["seconds"] for x in mine),
                "p50_ms": float(np.median([x["served"][e]["latency_ms"]["p50"] for x in mine])),
                "p99_ms": max(x["served"][e]["latency_ms"]["p99"] for x in mine),
                "errors": sum(x["served"][e]["errors"] for x in mine),
                "server_batch_mean": float(np.mean([x["served"][e]["server_batch_mean"] for x in mine])),
                "in_process_batches": [x["batch"][e] for x in mine],
                "in_process_ips": images / sum(x["in_process"][e][1] for x in mine),
            }
            row[e]["served_vs_in_process"] = row[e]["served_ips"] / row[e]["in_process_ips"]
        row["served_adaptive_vs_dense"] = row["adaptive"]["served_ips"] / row["dense"]["served_ips"]
        summary.append(row)
        a, d = row["adaptive"], row["dense"]
        print(
            f"{c} clients: served adaptive {a['served_ips']:.2f} img/s (p50 {a['p50_ms']:.0f} ms, p99 {a['p99_ms']:.0f} ms, "
            f"batch {a['server_batch_mean']:.2f}, {a['errors']} errors), dense {d['served_ips']:.2f} img/s "
            f"(p50 {d['p50_ms']:.0f} ms, p99 {d['p99_ms']:.0f} ms, batch {d['server_batch_mean']:.2f}); "
            f"adaptive/dense {row['served_adaptive_vs_dense']:.2f}x; in-process at batches {a['in_process_batches']}: "
            f"adaptive {a['in_process_ips']:.2f} img/s, dense {d['in_process_ips']:.2f} img/s; served/in-process "
            f"adaptive {a['served_vs_in_process']:.1%}, dense {d['served_vs_in_process']:.1%}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
