"""Elastic serving (issue 24): a fixed budget against the SLO controller under open-loop load, on real Triton.

In one run:

1. export (once, in ``--export-python``, a Python with torch) a bundle with
   budgets native, 0.35 and 0.25 to ``benchmarks/.work/``: a random-weight
   Ada-DeiT-S at ``--target`` of dense GMACs calibrated on 128 seeded noise
   images, or (``--demo``) the demo model, calibrated on its digits, with its
   360 held-out digits and labels as the request images;
2. time the native budget in process at batch 1 (median of 30 calls, this
   Python, ``--threads``): the SLO is ``--slo-factor`` times that;
3. serve the bundle (``--slo-ms`` = that SLO, ``--with-dense``) and run
   ``bench-server --rates --policies`` (``bench/open_loop.py``): capacity of
   ``native`` closed-loop, then Poisson load at each rate for each policy,
   interleaved; JSON and plot written;
4. a load step for ``auto``: ``--step`` low, high, low rates (multiples of
   that capacity) for ``--step-s`` seconds each, one request stream; per
   second, the p99 and the budgets applied, and how long after each step the
   applied budget settles (no change for the rest of the phase but once).

    python benchmarks/elastic.py --export-python /path/to/torch-venv/bin/python [--demo] --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
BUDGETS = "native,0.35,0.25"


def paths(demo: bool, target: float) -> tuple[Path, Path | None]:
    """The bundle, and the labelled request images (the demo's held-out digits) where there are any."""
    if demo:
        return WORK / "ada-digits-elastic", WORK / "ada-digits-test.npz"
    return WORK / f"ada-deit-s-{target}-elastic", None


def export(demo: bool, target: float) -> None:
    """The torch side, once: the bundle with three budgets (and the demo's labelled test digits)."""
    import numpy as np

    from adavit_deploy.export import export_bundle

    WORK.mkdir(parents=True, exist_ok=True)
    bundle, images = paths(demo, target)
    if demo:
        from adavit_deploy.demo import demo_checkpoint
        from adavit_deploy.collection import open_collection

        export_bundle(demo_checkpoint(), bundle, budgets=BUDGETS, calibration="demo")
        digits = open_collection("demo")
        np.savez(images, images=digits.array, labels=digits.labels)
        return
    from adavit_deploy.config import preset
    from adavit_deploy.synthetic import random_checkpoint

    ckpt = WORK / f"ada-deit-s-{target}.pth"  # the same checkpoint as benchmarks/serving.py's
    if not ckpt.exists():
        random_checkpoint(preset("ada-deit-s"), ckpt, target=target)
    calib = WORK / "noise-128.npz"
    np.savez(calib, images=np.random.default_rng(0).standard_normal((128, 3, 224, 224), dtype=np.float32))
    export_bundle(ckpt, bundle, budgets=BUDGETS, calibration=calib, calib_count=128)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch1_ms(bundle: Path, threads: int, pool) -> float:
    """Median latency of the native budget at batch 1, in process (what the SLO is a multiple of)."""
    import numpy as np

    from adavit_deploy import load_bundle

    with load_bundle(bundle, threads=threads) as rt:
        for x in pool[:3]:
            rt.infer(x[None])
        times = []
        for i in range(30):
            t = time.perf_counter()
            rt.infer(pool[i % len(pool)][None])
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def load_step(url: str, pool, rates: list[float], seconds: float, slo_ms: float) -> dict:
    """One ``auto`` request stream whose Poisson rate steps through ``rates``: per-second p99 and budgets."""
    import numpy as np

    from adavit_deploy.bench.open_loop import DRAIN_S, Answer, send_schedule

    rng = np.random.default_rng(1)
    schedule = []
    for k, rps in enumerate(rates):
        t = k * seconds
        while (t := t + rng.exponential(1 / rps)) < (k + 1) * seconds:
            schedule.append(t)
    schedule = np.array(schedule)
    results = send_schedule(url, "http", "adavit", "auto", schedule, pool, DRAIN_S)
    per_second = []
    for s in range(int(len(rates) * seconds)):
        got = [r for at, r in zip(schedule, results) if s <= at < s + 1 and isinstance(r, Answer)]
        lat = [r.latency_s * 1e3 for r in got]
        budgets: dict[str, int] = {}
        for r in got:
            budgets[r.budget] = budgets.get(r.budget, 0) + 1
        per_second.append({"second": s, "rps": rates[int(s // seconds)], "answered": len(got),
                           "p99_ms": float(np.percentile(lat, 99)) if lat else None, "budgets": budgets})  # fmt: skip
    settle = []
    for k in range(len(rates)):
        phase = [r for r in results[np.searchsorted(schedule, k * seconds) : np.searchsorted(schedule, (k + 1) * seconds)]
                 if isinstance(r, Answer)]  # fmt: skip
        at = [a for a, r in zip(schedule, results) if k * seconds <= a < (k + 1) * seconds and isinstance(r, Answer)]
        changes = [at[i] - k * seconds for i in range(1, len(phase)) if phase[i].budget != phase[i - 1].budget]
        settle.append({"phase": k, "rps": rates[k], "settled_after_s": changes[-1] if changes else 0.0,
                       "budget_changes": len(changes),
                       "final_budget": phase[-1].budget if phase else None,
                       "goodput": sum(r.latency_s * 1e3 <= slo_ms for r in phase) / max(len(phase), 1)})  # fmt: skip
    return {"rates_rps": rates, "seconds_per_phase": seconds, "per_second": per_second, "phases": settle}


def measure(args: argparse.Namespace) -> None:
    from rich.console import Console

    from adavit_deploy import render
    from adavit_deploy.bench.open_loop import labelled_images, run_open_loop
    from adavit_deploy.plots import plot_open_loop
    from adavit_deploy.serving import RepositoryOptions, write_repository
    from adavit_deploy.serving.server import TritonServer

    bundle, images = paths(args.demo, args.target)
    from adavit_deploy.bundle import read_manifest

    cfg = read_manifest(bundle).model
    pool, _, _ = labelled_images(images, (cfg.in_chans, cfg.img_size, cfg.img_size), cfg.num_classes)
    b1 = batch1_ms(bundle, args.threads, pool)
    slo = round(args.slo_factor * b1)
    print(f"native at batch 1, in process: {b1:.1f} ms; SLO = {args.slo_factor:g} x that = {slo} ms", flush=True)
    work = WORK / "elastic-repo"
    options = RepositoryOptions(max_batch=args.max_batch, threads=args.threads, slo_ms=slo, with_dense=True)
    repo = write_repository(bundle, work, options, overwrite=True)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(repo, log=open(WORK / "elastic-triton.log", "w"), **ports).start() as server:
        report = run_open_loop(server.http_url, args.rates, args.policies, slo, args.duration, images=images,
                               warmup_s=args.warmup, progress=lambda what, done, total: print(f"[{done + 1}/{total}] {what}", flush=True))  # fmt: skip
        step = None
        if args.step:
            multiples = [float(m) for m in args.step.split(",")]
            print(f"load step {args.step} x capacity, {args.step_s:g} s each", flush=True)
            step = load_step(server.http_url, pool, [m * report.capacity_rps for m in multiples], args.step_s, slo)
    render.print_open_loop(Console(width=100), server.http_url, report)
    if step:
        for p in step["phases"]:
            print(f"step phase {p['phase']} at {p['rps']:.1f} req/s: final budget {p['final_budget']}, "
                  f"{p['budget_changes']} changes, last at +{p['settled_after_s']:.1f} s, goodput {p['goodput']:.1%}")  # fmt: skip
    out = {"batch1_ms": b1, "slo_factor": args.slo_factor, "report": json.loads(report.DOCUMENT.dumps(report)),
           "load_step": step, "bundle": bundle.name}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot_open_loop(report, args.plot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="the demo model (and its labelled digits) instead of Ada-DeiT-S")
    ap.add_argument("--target", type=float, default=0.49, help="Ada-DeiT-S: mean native GMACs as a fraction of dense")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of the served runtime")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's max batch size")
    ap.add_argument("--slo-factor", type=float, default=5.0, help="the SLO, as a multiple of native's batch-1 latency")
    ap.add_argument("--rates", default="0.5x,1.0x,1.3x", help="open-loop rates (multiples of native's capacity)")
    ap.add_argument("--policies", default="native,auto,dense", help="open-loop policies")
    ap.add_argument("--duration", type=float, default=20.0, help="timed seconds per rate and policy")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds at each rate before the timed ones")
    ap.add_argument("--step", default="0.5,1.3,0.5", help="load-step multiples of capacity ('' to skip)")
    ap.add_argument("--step-s", type=float, default=20.0, help="seconds per load-step phase")
    ap.add_argument("--export-python", default=sys.executable, help="a Python with torch, for the one-time export")
    ap.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot", type=Path, help="write the open-loop plot here")
    args = ap.parse_args()
    if args.export_only:
        return export(args.demo, args.target)
    if not paths(args.demo, args.target)[0].exists():
        print("exporting the bundle (once) ...", flush=True)
        cmd = [args.export_python, __file__, "--export-only", "--target", str(args.target)] + (["--demo"] if args.demo else [])
        subprocess.run(cmd, check=True)
    measure(args)


if __name__ == "__main__":
    main()
