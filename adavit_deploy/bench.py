"""Speed, cost and exactness side by side: the adaptive runtime vs what it replaces.

One run, on the same inputs, of three engines:

- ``adaptive``: the two-stage runtime (``AdaptiveRuntime.infer``),
- ``dense``: the bundle's dense baseline graph, same weights, same backend,
- ``reference``: the masked PyTorch model (what users of the reference code run).

``adaptive`` and ``dense`` also run at reduced precision when the bundle has
the graphs: ``adaptive.int8``, ``dense.fp16``..., compared with their fp32
selves (speed-up, decision and top-1 agreement) in the same run.

Measured honestly: inputs are loaded and batched before any timing, warm-up
calls are thrown away, every engine runs with the same intra-op threads, the
engines alternate in rounds (a noisy machine slows them all alike, and the
order rotates each round) and nothing computed by one engine is reused by
another. Peak memory is each engine's own high-water mark (``VmHWM``), measured
alone in a fresh child process. ``docs/bench.md`` documents the report.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .atomic import atomic_file
from .bundle import MANIFEST, PRECISIONS, is_bundle, sha256
from .cost import dense_gmacs
from .errors import BackendError, ConfigError, InputError
from .extras import EXPORT_HINT, missing_export_module, require_export
from .parity import EXACT, compare, parity_report, parity_sentence
from .runtime import AdaptiveRuntime, RoutingStats, load_bundle
from .runtime.backends import Backend, get_backend, resolve_threads
from .runtime.backends.ort import pool_mode as ort_pool_mode
from .visualize import pyplot

SCHEMA = "adavit-deploy/bench"
SCHEMA_VERSION = 1
ENGINES = ("adaptive", "dense", "reference")
DEFAULT_BATCH_SIZES = (1, 16)
#: Random inputs when no --images: at least this many, so batches differ and decisions vary.
DEFAULT_SAMPLES = 32
#: Timed calls are split into this many rounds; each round runs every engine in turn.
ROUNDS = 5
#: Calls an engine makes in its memory child before its high-water mark is read.
MEMORY_CALLS = 3

#: ``progress(what, done, total)``: ``done`` of ``total`` timed or measured steps.
Progress = Callable[[str, int, int], None]


@dataclass
class BenchReport:
    """Everything one ``bench`` run measured; JSON-serialisable (``docs/bench.md``)."""

    results: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    parity: dict[str, Any] | None
    routing: dict[str, Any]
    environment: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    gmacs: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    precision_parity: dict[str, Any] = field(default_factory=dict)  # "adaptive.int8" -> vs "adaptive"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically."""
        path = Path(path)
        with atomic_file(path, "--json") as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BenchReport":
        d = json.loads(Path(path).read_text())
        if d.pop("schema", None) != SCHEMA or d.pop("schema_version", None) != SCHEMA_VERSION:
            raise InputError(f"{path}: not an adavit-deploy bench report (schema {SCHEMA} v{SCHEMA_VERSION})")
        return cls(**d)

    def result(self, engine: str, batch_size: int) -> dict[str, Any] | None:
        return next((r for r in self.results if r["engine"] == engine and r["batch_size"] == batch_size), None)


# -- user input, normalised once ---------------------------------------------------


def parse_batch_sizes(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"1,16"`` (or ints) -> ``(1, 16)``: positive, duplicates dropped, order kept."""
    parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    try:
        sizes = [int(str(p).strip()) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        shown = value if isinstance(value, str) else ",".join(map(str, parts))
        raise ConfigError(f"--batch-sizes {shown!r}: expected comma-separated integers >= 1, e.g. 1,16")
    return tuple(dict.fromkeys(sizes))


def split_engine(name: str) -> tuple[str, str]:
    """``"adaptive.int8"`` -> ``("adaptive", "int8")``; no suffix is fp32."""
    base, _, precision = name.partition(".")
    return base, precision or "fp32"


def parse_engines(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"dense,adaptive.int8,adaptive"`` -> ``("adaptive", "adaptive.int8", "dense")``, in the canonical order.

    ``adaptive`` and ``dense`` take a precision suffix (``.fp16``, ``.int8``).
    """
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    known = [*ENGINES, *(f"{e}.{p}" for e in ENGINES[:2] for p in PRECISIONS[1:])]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        raise ConfigError(
            f"--engines {','.join(names)!r}: choose among {','.join(ENGINES)} "
            f"(adaptive and dense may end in .{' or .'.join(PRECISIONS[1:])})"
        )
    return tuple(e for e in known if e in names)


def make_backend(name: str, threads: int) -> Backend:
    """The backend every bundle engine runs on; a clear line for one that is not here."""
    try:
        return get_backend(name, threads)
    except BackendError as e:
        if name == "trt" and str(e).startswith("unknown backend"):
            raise BackendError(
                "--backend trt: the TensorRT backend is not available in this installation; "
                "use --backend ort (or ort-cuda)"
            ) from None
        raise


def load_pool(
    images: str | Path | np.ndarray | None, rt: AdaptiveRuntime, samples: int, seed: int = 0
) -> tuple[np.ndarray, str]:
    """The benchmark inputs, all in memory: ``(N, C, H, W)`` float32 and where they came from."""
    cfg = rt.cfg
    if images is None:
        shape = (samples, cfg.in_chans, cfg.img_size, cfg.img_size)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32), f"random normal (seed {seed})"
    if isinstance(images, np.ndarray):
        return rt.check_images(images), "array"
    from .inputs import image_files, load_inputs

    path = Path(images)
    paths = image_files(path) if path.is_dir() else [path]
    pool, _ = load_inputs(paths, cfg)
    return pool, str(path)


def cycled_batches(pool: np.ndarray, batch_size: int, count: int) -> list[np.ndarray]:
    """The first ``count`` distinct batches of ``pool`` read as an endless cycle (contiguous copies)."""
    n = len(pool)
    distinct = n // np.gcd(n, batch_size)  # after this many batches the cycle repeats
    return [np.ascontiguousarray(pool[(k * batch_size + np.arange(batch_size)) % n]) for k in range(min(count, distinct))]


# -- the engines ----------------------------------------------------------------------


@dataclass
class Engine:
    """One way of running the model: ``prepare`` a batch once, then ``run`` it (the timed call)."""

    name: str
    run: Callable[[Any], Any]
    prepare: Callable[[np.ndarray], Any] = lambda x: x
    #: after the timer stops: per-image GMACs (or None: a fixed cost) and routing stats
    account: Callable[[Any], tuple[np.ndarray | None, RoutingStats | None]] = lambda out: (None, None)


def _bundle_engine(name: str, rt: AdaptiveRuntime) -> Engine:
    """``adaptive[.p]`` or ``dense[.p]`` of a runtime loaded at precision ``p``."""
    if split_engine(name)[0] == "adaptive":
        return Engine(name, rt.infer, account=lambda r: (r.gmacs, r.routing))
    return Engine(name, rt.dense)


def _reference_engine(model) -> Engine:
    import torch

    from .cost import sample_gmacs

    def run(x):
        with torch.inference_mode():
            return model(x)

    def account(out):
        return sample_gmacs(model.cfg, out.head_select.numpy(), out.layer_select.numpy(), out.token_select.numpy()), None

    return Engine("reference", run, prepare=torch.from_numpy, account=account)


def reference_model(bundle: Path, manifest):
    """The masked PyTorch model of the bundle's own checkpoint and config, or the reason it cannot be built."""
    missing = missing_export_module()
    if missing is not None:
        return None, f"the PyTorch reference needs the export extra ({missing} is not installed): {EXPORT_HINT}"
    from .model import build_model, read_checkpoint

    source = manifest.source.get("checkpoint")
    if not source:
        return None, "the bundle's manifest names no source checkpoint"
    path = Path(source)
    if not path.is_file():
        return None, f"its source checkpoint {source} (from the manifest) is not there: pass the checkpoint to bench it"
    if manifest.source.get("sha256") and sha256(path) != manifest.source["sha256"]:
        return None, f"its source checkpoint {source} has changed since the bundle was exported"
    return build_model(manifest.model, read_checkpoint(path).state_dict), None


# -- measurement ------------------------------------------------------------------------


def time_engines(
    engines: Sequence[Engine],
    batches: Sequence[np.ndarray],
    iterations: int,
    warmup: int,
    tick: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, Any]]:
    """Per engine: seconds of every timed call, and what ``account`` says of its outputs.

    Call ``i`` of every engine runs ``batches[i % len(batches)]``. The
    ``iterations`` timed calls are split into rounds; in each round every
    engine makes its share, the engine order rotating from round to round.
    """
    inputs = {e.name: [e.prepare(b) for b in batches] for e in engines}
    for i in range(warmup):
        for e in engines:
            e.run(inputs[e.name][i % len(batches)])
            tick(f"{e.name}: warm-up")
    out: dict[str, dict[str, Any]] = {e.name: {"seconds": [], "gmacs": [], "routing": RoutingStats()} for e in engines}
    order = list(engines)
    for chunk in np.array_split(np.arange(iterations), min(iterations, ROUNDS)):
        for e in order:
            rec = out[e.name]
            for i in chunk:
                x = inputs[e.name][i % len(batches)]
                start = time.perf_counter()
                result = e.run(x)
                rec["seconds"].append(time.perf_counter() - start)
                gmacs, routing = e.account(result)
                if gmacs is not None:
                    rec["gmacs"].append(gmacs)
                if routing is not None:
                    rec["routing"].merge(routing)
                tick(f"{e.name}: timing")
        order = order[1:] + order[:1]
    return out


def _memory_child(engine: str, bundle: str, batch_file: str, threads: str, backend: str, budget: str, pool: str) -> None:
    """Entry point of a memory child: load one engine, run it (on the parent's ORT pool mode), print VmHWM in MiB."""
    images = np.load(batch_file)
    if pool == "process":
        from .runtime.backends.ort import use_process_pool

        use_process_pool(int(threads))
    if engine == "reference":
        import torch

        from .bundle import read_manifest

        torch.set_num_threads(int(threads))
        model, reason = reference_model(Path(bundle), read_manifest(bundle, verify=False))
        if model is None:
            raise BackendError(reason)
        run = _reference_engine(model).run
        x = torch.from_numpy(images)
    else:
        base, precision = split_engine(engine)
        rt = load_bundle(bundle, backend=make_backend(backend, int(threads)), budget=budget, precision=precision)
        run, x = (rt.infer if base == "adaptive" else rt.dense), images
    for _ in range(MEMORY_CALLS):
        run(x)
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(kib / 1024)


def peak_rss_mib(
    engine: str, bundle: Path, batch: np.ndarray, threads: int, backend: str, workdir: Path, budget: str = "native"
) -> float:
    """Peak RSS of ``engine`` alone on ``batch``, in a fresh process (``ru_maxrss`` would include ours)."""
    batch_file = workdir / f"batch-{len(batch)}.npy"
    if not batch_file.exists():
        np.save(batch_file, batch)
    code = "import sys; from adavit_deploy.bench import _memory_child; _memory_child(*sys.argv[1:])"
    args = [engine, str(bundle), str(batch_file), str(threads), backend, budget, ort_pool_mode()]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise BackendError(f"measuring the peak memory of {engine} at batch {len(batch)} failed: {_last_line(done.stderr)}")
    return float(done.stdout.split()[-1])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- reporting helpers ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(backend: str, threads: int) -> dict[str, Any]:
    versions = {}
    for pkg in ("adavit-deploy", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "backend": backend,
        "ort_pool": ort_pool_mode() if backend.startswith("ort") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _latency(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()), "min": float(ms.min())}


def _merge_parity(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Chunked ``parity.parity_report`` results as one (means weighted by samples, maxima over chunks)."""
    n = sum(p["samples"] for p in parts)
    out: dict[str, Any] = {"samples": n}
    for key in ("top1_agreement", "decision_agreement", "mean_abs_logit_diff", "mean_gmacs"):
        out[key] = float(sum(p[key] * p["samples"] for p in parts) / n)
    for key in ("max_abs_logit_diff", "dense_max_abs_logit_diff"):
        out[key] = float(max(p[key] for p in parts))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


# -- the benchmark ------------------------------------------------------------------------


def resolve_target(
    target: str | Path | None, workdir: Path, threads: int, step: Callable[[str], None], **overrides: Any
) -> tuple[Path, dict[str, Any]]:
    """A bundle directory for ``target`` (exported into ``workdir`` for a checkpoint, with ``infer_config``'s
    ``overrides``) and how it was found."""
    info: dict[str, Any] = {"input": None if target is None else str(target), "embedded_default": target is None}
    if target is None:
        from .demo import demo_checkpoint

        target = demo_checkpoint()
    target = Path(target)
    if is_bundle(target):
        return target, {**info, "bundle": str(target), "exported": False}
    if target.is_dir():
        raise InputError(f"{target}: a directory but not a bundle (no {MANIFEST}); pass a bundle or a checkpoint")
    if not target.is_file():
        raise InputError(f"{target}: no such bundle directory or checkpoint file")
    require_export(f"benchmarking the checkpoint {target} (it is exported first)")
    from .export import export_bundle

    step(f"exporting {target.name} to a temporary bundle")
    bundle = export_bundle(target, workdir / "bundle", threads=threads, **overrides)
    return bundle, {**info, "bundle": None, "checkpoint": str(target), "exported": True}


def _check_options(iterations: int, warmup: int, budget: str) -> str:
    """Validate the numbers; return the budget's canonical name."""
    from .calibration import parse_budgets

    if iterations < 1:
        raise ConfigError(f"--iterations {iterations}: must be >= 1")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup}: must be >= 0")
    names = parse_budgets(str(budget))
    if len(names) != 1:
        raise ConfigError(f"--budget {budget!r}: give one budget (bench runs one at a time)")
    return names[0]


def bench(
    target: str | Path | None = None,
    *,
    backend: str = "ort",
    batch_sizes: str | Sequence[int] = DEFAULT_BATCH_SIZES,
    iterations: int = 20,
    warmup: int = 2,
    threads: int = 0,
    images: str | Path | np.ndarray | None = None,
    budget: str | float = "native",
    engines: str | Sequence[str] = ENGINES,
    memory: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    qk_scale: float | None = None,
) -> BenchReport:
    """Benchmark a bundle or checkpoint (``None``: the embedded default); see the module doc.

    A checkpoint is exported to a temporary bundle, removed afterwards.
    ``threads=0`` means one per core; the number is resolved once and used by
    every engine. ``images``: a directory of images, an image / ``.npy`` /
    ``.npz`` file, an array, or ``None`` for ``max(32, largest batch)`` seeded
    normal samples; batches cycle through them. ``memory=False`` skips the
    peak-memory children. ``budget``: one of the bundle's budgets; the
    adaptive engines run at it (a checkpoint has only ``native``). ``qk_scale``
    overrides a checkpoint's attention scale (``infer_config``).
    """
    sizes, wanted = parse_batch_sizes(batch_sizes), parse_engines(engines)
    budget = _check_options(iterations, warmup, budget)
    threads = resolve_threads(threads)
    say = progress or (lambda what, done, total: None)
    backend_impl = make_backend(backend, threads)  # fails fast, before any export
    skipped: dict[str, str] = {}

    with ExitStack() as stack:  # closes the runtimes and the backend, then removes the workdir
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adavit-bench-")))
        stack.enter_context(backend_impl)
        bundle, target_info = resolve_target(target, workdir, threads, lambda msg: say(msg, 0, 0), qk_scale=qk_scale)
        rt = stack.enter_context(load_bundle(bundle, backend=backend_impl, budget=budget))
        cfg, manifest = rt.cfg, rt.manifest
        runtimes = {"fp32": rt}
        for name in wanted:
            base, precision = split_engine(name)
            if base != "reference" and precision not in runtimes:
                runtimes[precision] = stack.enter_context(AdaptiveRuntime(bundle, manifest, backend_impl, budget, precision))
        engine_list = [_bundle_engine(n, runtimes[split_engine(n)[1]]) for n in wanted if n != "reference"]
        model = None
        if "reference" in wanted:
            model, reason = reference_model(bundle, manifest)
            if model is None:
                skipped["reference"] = reason
            else:
                stack.enter_context(_torch_threads(threads))
                engine_list.append(_reference_engine(model))
        names = [e.name for e in engine_list]

        say("loading inputs", 0, 0)
        chunk = max(DEFAULT_SAMPLES, *sizes)
        pool, source = load_pool(images, rt, chunk, seed)

        # untimed: every input's decisions and cost, and parity against PyTorch
        say("checking parity against PyTorch" if model is not None else "routing the inputs", 0, 0)
        full = rt.infer(pool, batch_size=chunk)
        parity = None
        if model is not None:
            parity = _merge_parity([parity_report(model, rt, pool[i : i + chunk]) for i in range(0, len(pool), chunk)])
        precision_parity = {
            f"adaptive.{p}": compare(full, r.infer(pool, batch_size=chunk)) for p, r in runtimes.items() if p != "fp32"
        }

        dense = dense_gmacs(cfg)
        total = len(sizes) * len(names) * (warmup + iterations + (1 if memory else 0))
        done = 0
        results, comparisons, routing_rows = [], [], []
        for b in sizes:

            def tick(what: str, b: int = b) -> None:
                nonlocal done
                done += 1
                say(f"batch {b}: {what}", done, total)

            batches = cycled_batches(pool, b, warmup + iterations)
            timed = time_engines(engine_list, batches, iterations, warmup, tick)
            rows = {}
            for name in names:
                peak = None
                if memory:
                    peak = peak_rss_mib(name, bundle, batches[0], threads, backend, workdir, budget)
                    tick(f"{name}: peak memory")
                rows[name] = _result_row(name, b, timed[name], peak, dense)
            results += rows.values()
            comparisons.append(_compare(b, rows, dense))
            if "adaptive" in timed:
                routing_rows.append(_routing_row(b, timed["adaptive"]["routing"], iterations))

    return BenchReport(
        results=results,
        comparisons=comparisons,
        parity=parity,
        routing=_routing_report(full.routing, routing_rows),
        environment=environment(backend, threads),
        settings={
            "backend": backend,
            "threads": threads,
            "batch_sizes": list(sizes),
            "iterations": iterations,
            "warmup": warmup,
            "rounds": min(iterations, ROUNDS),
            "engines": names,
            "budget": budget,
            "images": {"source": source, "count": int(len(pool))},
            "memory": memory,
        },
        target={
            **target_info,
            "source_checkpoint": manifest.source.get("checkpoint"),
            "model": _model_name(cfg),
            "export_parity": manifest.parity,
        },
        gmacs={
            "dense": dense,
            "adaptive_mean": float(full.gmacs.mean()),
            "ratio": float(full.gmacs.mean() / dense),
            "per_image": full.gmacs.astype(float).tolist(),
        },
        skipped=skipped,
        precision_parity=precision_parity,
    )


def _result_row(name: str, b: int, timed: dict[str, Any], peak: float | None, dense: float) -> dict[str, Any]:
    lat = _latency(timed["seconds"])
    gmacs = float(np.concatenate(timed["gmacs"]).mean()) if timed["gmacs"] else dense
    return {
        "engine": name,
        "batch_size": b,
        "latency_ms": lat,
        "throughput_ips": b / (lat["p50"] / 1e3),
        "gmacs_mean": gmacs,
        # the reference masks: it computes the whole dense model whatever it decides
        "gmacs_executed_mean": gmacs if split_engine(name)[0] == "adaptive" else dense,
        "peak_rss_mib": peak,
        "iterations": len(timed["seconds"]),
    }


def _routing_row(b: int, stats: RoutingStats, iterations: int) -> dict[str, Any]:
    """How the timed adaptive calls at batch size ``b`` were split, per call of the runtime."""
    return {
        "batch_size": b,
        "graph_calls_per_batch": stats.calls / iterations,
        "graph_calls_per_image": stats.calls / (iterations * b),
        "constant_adds_per_batch": stats.constant_adds / iterations,
        "inputs_per_graph_call": sum(stats.paths.values()) / stats.calls if stats.calls else 0.0,
        "padding_waste": stats.padding_waste,
    }


def _routing_report(stats: RoutingStats, by_batch_size: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size, and over every input: how many inputs took each execution path."""
    counts = list(stats.paths.values())
    return {
        "by_batch_size": by_batch_size,
        "distinct_paths": len(counts),
        "inputs_per_path": {"mean": float(np.mean(counts)) if counts else 0.0, "max": max(counts, default=0)},
        "paths": dict(sorted(stats.paths.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _compare(b: int, rows: dict[str, dict[str, Any]], dense_g: float) -> dict[str, Any]:
    """Per batch size, from this run's own medians: speedups are ratios of the reported p50 latencies."""
    p50 = {name: row["latency_ms"]["p50"] for name, row in rows.items()}
    adaptive = rows.get("adaptive")
    speedup = _ratio(p50.get("dense"), p50.get("adaptive"))
    flops = _ratio(dense_g, adaptive["gmacs_mean"]) if adaptive else None
    peak = {name: row["peak_rss_mib"] for name, row in rows.items()}
    return {
        "batch_size": b,
        "speedup_vs_dense": speedup,
        "flops_ratio": flops,
        "efficiency": _ratio(speedup, flops),
        "reference_speedup_vs_dense": _ratio(p50.get("dense"), p50.get("reference")),
        "speedup_vs_reference": _ratio(p50.get("reference"), p50.get("adaptive")),
        "memory_ratio_vs_dense": _ratio(peak.get("adaptive"), peak.get("dense")),
        # a reduced-precision engine against its own fp32 self, e.g. "adaptive.int8" vs "adaptive"
        "speedup_vs_fp32": {
            name: _ratio(p50[split_engine(name)[0]], t)
            for name, t in p50.items()
            if split_engine(name)[1] != "fp32" and split_engine(name)[0] in p50
        },
    }


def _model_name(cfg) -> str:
    return f"ViT {cfg.embed_dim}d x{cfg.depth} blocks, {cfg.num_heads} heads, {cfg.img_size}px/{cfg.patch_size}"


# -- the picture ---------------------------------------------------------------------------

ENGINE_COLORS = {"adaptive": "#1b9e77", "dense": "#7570b3", "reference": "#d95f02"}


def require_plotting() -> None:
    """Raise the one-line install hint now, rather than after a long run."""
    pyplot()


def _short(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def times(x: float) -> str:
    """A ratio as ``1.52x``, keeping small ones readable (``0.0012x``)."""
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """A PNG: throughput per engine and batch size (speedups vs dense on the bars), and the GMACs per image."""
    plt = pyplot()
    sizes, engines = report.settings["batch_sizes"], report.settings["engines"]
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1.5, 1]})
    width = 0.8 / max(len(engines), 1)
    x = np.arange(len(sizes))
    for k, engine in enumerate(engines):
        rows = [report.result(engine, b) for b in sizes]
        ips = [r["throughput_ips"] for r in rows]
        bars = ax.bar(x + (k - (len(engines) - 1) / 2) * width, ips, width, label=engine, color=ENGINE_COLORS.get(engine))
        for bar, r in zip(bars, rows):
            dense = report.result("dense", r["batch_size"])
            label = _short(r["throughput_ips"])
            if dense and engine != "dense":
                label += "\n" + times(dense["latency_ms"]["p50"] / r["latency_ms"]["p50"])
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=9)  # fmt: skip
    ax.set_xticks(x, [f"batch {b}" for b in sizes])
    ax.set_ylabel("images / s (batch size / median latency)")
    ax.set_ylim(0, max(r["throughput_ips"] for r in report.results) * 1.25)
    ax.set_title("Throughput per engine; under each figure: speed-up vs dense", fontsize=11)
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    g = report.gmacs
    per_image = np.asarray(g["per_image"])
    hx.hist(per_image, bins=min(30, max(5, len(per_image) // 2)), color=ENGINE_COLORS["adaptive"], alpha=0.85)
    hx.axvline(g["dense"], color=ENGINE_COLORS["dense"], ls="--", lw=2, label=f"dense: {g['dense']:.3g} GMACs")
    mean_label = f"adaptive mean: {g['adaptive_mean']:.3g} ({g['ratio']:.0%} of dense)"
    hx.axvline(g["adaptive_mean"], color="black", lw=1.5, label=mean_label)
    hx.set_xlim(0, g["dense"] * 1.08)
    hx.set_ylim(0, hx.get_ylim()[1] * 1.3)  # room for the legend
    hx.set_xlabel("GMACs per image (the adaptive decisions)")
    hx.set_ylabel("images")
    hx.set_title(f"Cost of each of the {len(per_image)} benchmark inputs", fontsize=11)
    hx.legend(loc="upper center", frameon=False, fontsize=9)

    env, s, p, t = report.environment, report.settings, report.parity, report.target
    name = Path(t.get("input") or t.get("source_checkpoint") or "").name
    sub = f"{t['model']}; backend {s['backend']}, {s['threads']} threads, {env['cpu']}; "
    sub += f"{s['iterations']} timed calls per engine"
    if p:
        sub += "\n" + parity_sentence("parity vs PyTorch", p, EXACT)
    for engine, reason in report.skipped.items():
        sub += f"\n{engine} skipped: {reason}"
    lines = sub.count("\n") + 1
    fig.suptitle(f"adavit-deploy bench: {name}", fontsize=13, fontweight="bold", y=0.985)
    fig.text(0.5, 0.935, sub, ha="center", va="top", fontsize=9.5, color="#333333")
    fig.tight_layout()
    fig.subplots_adjust(top=0.89 - 0.035 * lines)
    path = Path(path)
    with atomic_file(path, "--plot") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
