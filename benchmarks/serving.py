"""Served vs in-process, adaptive vs dense: Ada-DeiT-S at ~50% GMACs on Triton Inference Server.

Issue 13's measurement, in one run:

1. export (once) a random-weight Ada-DeiT-S whose decisions keep ``--target``
   of the dense GMACs to ``benchmarks/.work/`` (fp32 graphs only). Exporting
   needs torch, serving needs the ``serve`` extra (numpy < 2): the export runs
   in ``--export-python`` (a Python with torch), this script in the serving one;
2. serve it and its dense graph side by side (``adavit-deploy triton-repo
   --with-dense``) on loopback ports and load both, interleaved, with
   ``bench --url``'s client (one image per request) at each ``--concurrency``;
3. stop the server, then time the in-process runtime and dense graph on the
   same images at the batch size the server formed (rounded), with the same
   threads, alternating in rounds;
4. print served / in-process and adaptive / dense throughput, p50 / p99, and
   write everything to ``--json``.

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
    """The torch side: a random Ada-DeiT-S checkpoint at ``target`` x dense GMACs, exported with fp32 graphs."""
    from adavit_deploy.config import preset
    from adavit_deploy.export import export_bundle
    from adavit_deploy.synthetic import random_checkpoint

    WORK.mkdir(parents=True, exist_ok=True)
    ckpt = WORK / f"ada-deit-s-{target}.pth"  # the same checkpoint as benchmarks/adaptive_vs_dense.py's
    if not ckpt.exists():
        random_checkpoint(preset("ada-deit-s"), ckpt, target=target)
    export_bundle(ckpt, bundle_path(target), threads=threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(bundle: Path, threads: int, pool, batch_sizes: dict[str, int], seconds: float, rounds: int = 3) -> dict[str, dict]:
    """Throughput of the runtime (adaptive) and of the dense graph, in this process, at the given batch sizes.

    The two alternate in ``rounds`` (the order rotates), as the served models do: the host's load moves by the minute.
    """
    import numpy as np

    from adavit_deploy import load_bundle
    from adavit_deploy.bench import cycled_batches

    rt = load_bundle(bundle, threads=threads)
    runs = {"adaptive": rt.infer, "dense": rt.dense}
    batches = {e: cycled_batches(pool, b, 64) for e, b in batch_sizes.items()}
    times: dict[str, list[float]] = {e: [] for e in batch_sizes}
    for e in batch_sizes:
        for x in batches[e][:2]:
            runs[e](x)
    engines = list(batch_sizes)
    for r in range(rounds):
        for k in range(len(engines)):
            e = engines[(k + r) % len(engines)]
            stop_at = time.perf_counter() + seconds / rounds
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                runs[e](batches[e][len(times[e]) % len(batches[e])])
                times[e].append(time.perf_counter() - t)
    return {e: {"batch_size": b, "calls": len(times[e]), "throughput_ips": b * len(times[e]) / sum(times[e]),
                "latency_ms_p50": float(np.percentile(times[e], 50) * 1e3)} for e, b in batch_sizes.items()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the served and in-process runtimes")
    ap.add_argument("--concurrency", default="1,16", help="client concurrency levels")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per model and concurrency")
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
    from adavit_deploy.serving import RepositoryOptions, write_repository
    from adavit_deploy.serving.load import load_images, run_load
    from adavit_deploy.serving.server import TritonServer

    options = RepositoryOptions(threads=args.threads, max_batch=args.max_batch, queue_delay_us=args.queue_delay_us,
                                with_dense=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="adavit-serving-bench-") as tmp:
        repo = write_repository(bundle, Path(tmp) / "models", options)
        ports = {k: free_port() for k in ("http_port", "grpc_port", "metrics_port")}
        with open(Path(tmp) / "triton.log", "w") as log, TritonServer(repo, log=log, **ports) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            report = run_load(url, args.protocol, args.concurrency, args.duration, metrics_url=server.metrics_url,
                              progress=lambda what, done, total: print(f"  [{done + 1}/{total}] {what}", flush=True))  # fmt: skip
    pool, _ = load_images(None, tuple(report.settings["images"]["shape"]))
    rows = []
    for c in report.settings["concurrency"]:
        served = {m: report.result(m, c) for m in report.settings["models"]}
        a, d = served["adavit"], served["adavit_dense"]
        formed = {"adaptive": max(1, round(a["server_batch_mean"])), "dense": max(1, round(d["server_batch_mean"]))}
        local = in_process(bundle, args.threads, pool, formed, min(args.duration, 20.0))
        rows.append({
            "concurrency": c,
            "served": {"adaptive": a, "dense": d},
            "in_process": local,
            "served_vs_in_process": {e: served[m]["throughput_ips"] / local[e]["throughput_ips"]
                                     for e, m in (("adaptive", "adavit"), ("dense", "adavit_dense"))},
            "served_adaptive_vs_dense": a["throughput_ips"] / d["throughput_ips"],
        })  # fmt: skip
        r = rows[-1]
        print(
            f"concurrency {c}: served adaptive {a['throughput_ips']:.2f} img/s (p50 {a['latency_ms']['p50']:.0f} ms, "
            f"p99 {a['latency_ms']['p99']:.0f} ms, batch {a['server_batch_mean']:.2f}, {a['errors']} errors), "
            f"dense {d['throughput_ips']:.2f} img/s (p50 {d['latency_ms']['p50']:.0f} ms, p99 {d['latency_ms']['p99']:.0f} ms, "
            f"batch {d['server_batch_mean']:.2f}); adaptive/dense {r['served_adaptive_vs_dense']:.2f}x; "
            f"in-process adaptive at batch {formed['adaptive']} {local['adaptive']['throughput_ips']:.2f} img/s, "
            f"served/in-process {r['served_vs_in_process']['adaptive']:.1%} "
            f"(dense {r['served_vs_in_process']['dense']:.1%})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"load": report.to_dict(), "comparison": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
