"""Our INT8 rewrite (calibration/int8.py) vs ONNX Runtime's ``quantize_static``, on the same graphs and images.

Takes the ``--arch``-shaped random bundle of ``adaptive_vs_dense.py`` (made
once in ``benchmarks/.work/``) and its 32 calibration images, or with
``--arch demo`` the demo model calibrated on 256 of its training digits,
and quantizes the same graphs twice:

- **ours**: ``int8.calibrate`` + ``GraphCalibrator.quantize`` (what ``export --int8`` runs);
- **quantize_static**: ``QuantFormat.QDQ``, ``per_channel``, ``reduce_range``,
  ``ActivationSymmetric``, ``WeightSymmetric``, MinMax calibration, fed the
  feeds each graph receives when the fp32 runtime runs the calibration images
  at every budget and the dense graph (as ours is), restricted to the nodes
  ours quantizes (the weight MatMuls and the patch Conv).

Then, on ``--images`` seeded normal images (not the calibration set; the
demo: its 360 held-out digits), side by side: the time each took to quantize; agreement with the fp32 runtime
(equal decisions, equal top-1, max / mean |logit diff|); and the adaptive
runtime's median latency per batch on fp32, ours and quantize_static graphs,
interleaved, with the speed-up over fp32. Per-session thread pools for all
three (ORT's calibration needs sessions of its own).

    python benchmarks/quantize_static.py [--arch demo|deit_t|deit_s|t2t_vit_19] [--target 0.5] [--batch-sizes 1,16] [--reps 10] [--threads 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from adaptive_vs_dense import ARCHS, WORK, bundle_path
from rich.console import Console
from rich.table import Table

from adavit_deploy.bundle import Artifact, Manifest, read_manifest, sha256, variant_key
from adavit_deploy.calibration import int8
from adavit_deploy.parity import compare
from adavit_deploy.runtime.adaptive import AdaptiveRuntime
from adavit_deploy.runtime.backends.base import Backend, Runner
from adavit_deploy.runtime.backends.ort import OrtBackend

ENGINES = ("fp32", "ours", "quantize_static")
EVAL_SEED = 0  # the calibration images use adaptive_vs_dense.CALIBRATION_SEED


class _Recording(Runner):
    """Runs the fp32 graph and keeps a copy of every feed (``quantize_static``'s calibration data)."""

    def __init__(self, inner: Runner, feeds: list[dict[str, np.ndarray]]) -> None:
        super().__init__(inner.artifact)
        self.inner, self.feeds = inner, feeds

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        return self.inner.run(feed)


class RecordingBackend(Backend):
    """``inner``'s runners, recording the feeds of ``files`` (graph file -> graph name) into ``feeds``."""

    def __init__(self, inner: Backend, files: dict[str, str]) -> None:
        super().__init__()
        self.inner, self.files, self.name = inner, files, inner.name
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> Runner:
        inner = self.inner.runner(bundle, artifact, precision)
        graph = self.files.get(artifact.file)
        return inner if graph is None else _Recording(inner, self.feeds[graph])


def run_calibration(runtime: AdaptiveRuntime, images: np.ndarray, batch_size: int = 16) -> None:
    """What ``int8.calibrate`` runs: every budget, then the dense graph."""
    for budget in runtime.manifest.budgets:
        runtime.infer(images, batch_size, budget=budget)
    for i in range(0, len(images), batch_size):
        runtime.dense(images[i : i + batch_size])


def quantized_nodes(fp32: onnx.ModelProto, ours: onnx.ModelProto) -> list[str]:
    """The nodes our rewrite quantized: MatMuls fed by DequantizeLinear, and Convs it replaced."""
    dq = {o for n in ours.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    names = [n.name for n in ours.graph.node if n.op_type == "MatMul" and n.input[1] in dq]
    ours_names = {n.name for n in ours.graph.node}
    return names + [n.name for n in fp32.graph.node if n.op_type == "Conv" and n.name not in ours_names]


def quantize_ours(runtime: AdaptiveRuntime, images: np.ndarray, out: Path) -> dict[str, Path]:
    calibrators = int8.calibrate(runtime, images)
    done = {}
    for graph, calibrator in calibrators.items():
        if calibrator.observed:
            calibrator.quantize(out / f"{graph}.onnx")
            done[graph] = out / f"{graph}.onnx"
    return done


def quantize_ort(runtime: AdaptiveRuntime, images: np.ndarray, ours: dict[str, Path], out: Path, threads: int) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static advises its pre-processing once per graph
    files = {runtime.manifest.artifacts[g].file: g for g in ours}
    with OrtBackend(threads) as inner:
        recording = RecordingBackend(inner, files)
        with AdaptiveRuntime(runtime.bundle, runtime.manifest, recording) as observed:
            run_calibration(observed, images)
    done = {}
    for graph, path in ours.items():
        src = runtime.bundle / runtime.manifest.artifacts[graph].file
        nodes = quantized_nodes(onnx.load(str(src)), onnx.load(str(path)))
        quantize_static(
            str(src),
            str(out / f"{graph}.onnx"),
            Feeds(recording.feeds[graph]),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        done[graph] = out / f"{graph}.onnx"
    return done


def with_int8(manifest: Manifest, bundle: Path, files: dict[str, Path]) -> Manifest:
    """``manifest`` whose int8 variants are ``files`` (inside ``bundle``); the other graphs' stay their fp32 files."""
    artifacts = dict(manifest.artifacts)
    for name, src in manifest.artifacts.items():
        if variant_key(name, "int8") in manifest.artifacts:  # a graph (the bundle has --int8 variants)
            path = files.get(name)
            artifacts[variant_key(name, "int8")] = (
                Artifact(path.relative_to(bundle).as_posix(), sha256(path), src.inputs, src.outputs) if path else src
            )
    return dataclasses.replace(manifest, artifacts=artifacts)


def model_and_images(arch: str, target: float, threads: int, count: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """The bundle (with INT8 graphs), its calibration images and the evaluation images."""
    if arch == "demo":
        from adavit_deploy.calibration import load_calibration
        from adavit_deploy.demo import DEMO_CONFIG, demo_checkpoint, load_digits_split
        from adavit_deploy.export import export_bundle

        bundle = WORK / "ada-digits-int8"
        if not bundle.exists():
            export_bundle(demo_checkpoint(), bundle, threads=threads, calibration="demo", int8=True)
        return bundle, load_calibration("demo", DEMO_CONFIG).images, load_digits_split().test_images
    bundle = bundle_path(target, threads, arch)
    with np.load(WORK / "calibration-normal-32.npz") as z:
        calib = z["images"]
    size = read_manifest(bundle).model.img_size
    return bundle, calib, np.random.default_rng(EVAL_SEED).standard_normal((count, 3, size, size), dtype=np.float32)


def latencies(runtimes: dict[str, AdaptiveRuntime], x: np.ndarray, reps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per ``infer(x)`` of each runtime, rounds interleaved so drift hits all alike."""
    for rt in runtimes.values():
        for _ in range(warmup):
            rt.infer(x)
    times: dict[str, list[float]] = {k: [] for k in runtimes}
    for _ in range(reps):
        for name, rt in runtimes.items():
            t = time.perf_counter()
            rt.infer(x)
            times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["demo", *sorted(ARCHS)], default="deit_t", help="model")
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per session (0: one per core)")
    ap.add_argument("--images", type=int, default=64, help="evaluation images (seeded normal; not for the demo)")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--reps", type=int, default=10, help="timed rounds per batch size")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    bundle, calib, x = model_and_images(args.arch, args.target, args.threads, args.images)
    manifest = read_manifest(bundle)
    report: dict = {"arch": args.arch, "target": args.target, "calibration_images": len(calib), "images": len(x)}
    with tempfile.TemporaryDirectory() as tmp, OrtBackend(args.threads) as backend:
        work = Path(shutil.copytree(bundle, Path(tmp) / "bundle"))
        for sub in ENGINES[1:]:
            (work / sub).mkdir()
        fp32 = AdaptiveRuntime(work, manifest, backend)
        t = time.perf_counter()
        ours = quantize_ours(fp32, calib, work / "ours")
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ort = quantize_ort(fp32, calib, ours, work / "quantize_static", args.threads)
        t_ort = time.perf_counter() - t
        report["quantize_seconds"] = {"ours": t_ours, "quantize_static": t_ort}
        report["graphs"] = sorted(ours)
        runtimes = {"fp32": fp32}
        for name, files in (("ours", ours), ("quantize_static", ort)):
            runtimes[name] = AdaptiveRuntime(work, with_int8(manifest, work, files), backend, precision="int8")
        ref = fp32.infer(x, 16)
        report["vs_fp32"] = {k: compare(ref, runtimes[k].infer(x, 16)) for k in ENGINES[1:]}
        report["latency_ms"] = {}
        for b in (int(s) for s in args.batch_sizes.split(",")):
            ms = latencies(runtimes, x[:b], args.reps)
            report["latency_ms"][b] = {k: v * 1e3 for k, v in ms.items()}
        for rt in runtimes.values():
            rt.close()

    what = "the demo model" if args.arch == "demo" else f"{args.arch} at {args.target:g} x dense GMACs"
    table = Table(title=f"INT8 on {what}, {len(x)} images ({len(report['graphs'])} graphs quantized)")
    for col in ("", *ENGINES[1:]):
        table.add_column(col, justify="right" if col else "left")
    q, v = report["quantize_seconds"], report["vs_fp32"]
    table.add_row("quantize (s)", *(f"{q[k]:.1f}" for k in ENGINES[1:]))
    table.add_row("decisions equal to fp32", *(f"{v[k]['decision_agreement']:.4%}" for k in ENGINES[1:]))
    table.add_row("top-1 equal to fp32", *(f"{v[k]['top1_agreement']:.2%}" for k in ENGINES[1:]))
    table.add_row("max |logit diff|", *(f"{v[k]['max_abs_logit_diff']:.3g}" for k in ENGINES[1:]))
    table.add_row("mean |logit diff|", *(f"{v[k]['mean_abs_logit_diff']:.3g}" for k in ENGINES[1:]))
    for b, ms in report["latency_ms"].items():
        table.add_row(f"batch {b}: ms (fp32 {ms['fp32']:.1f})", *(f"{ms[k]:.1f} ({ms['fp32'] / ms[k]:.2f}x)" for k in ENGINES[1:]))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
