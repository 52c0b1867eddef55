"""Speed, cost and exactness side by side: the adaptive runtime vs what it replaces.

One run, on the same inputs, of three engines:

- ``adaptive``: the two-stage runtime (``AdaptiveRuntime.infer``),
- ``dense``: the bundle's dense baseline graph, same weights, same backend,
- ``reference``: the masked PyTorch model (what users of the reference code run).

An honest baseline is the fastest dense engine a user could pick, not the
one on our backend: on a CPU backend, every ``dense[.p]`` asked for also runs
on each other CPU backend installed that runs precision ``p``
(``dense@ov``, ``dense.bf16@ov``), and the report headlines each adaptive
engine against the fastest dense engine at its precision.

``adaptive`` and ``dense`` also run at reduced precision when the bundle has
the graphs: ``adaptive.int8``, ``dense.fp16``..., compared with their fp32
selves (speed-up; decision and top-1 agreement for the adaptive ones) in the
same run.

Measured honestly: inputs are loaded and batched before any timing, warm-up
calls are thrown away, every engine runs with the same intra-op threads, the
engines alternate in rounds (a noisy machine slows them all alike, and the
order rotates each round) and nothing computed by one engine is reused by
another. Peak memory is each engine's own high-water mark (``VmHWM``), measured
alone in a fresh child process. ``docs/bench.md`` documents the report.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..bundle import MANIFEST, is_bundle
from ..cost import dense_gmacs
from ..errors import BackendError, ConfigError, InputError, param
from ..extras import require_export
from ..parity import compare, parity_report
from ..runtime import AdaptiveRuntime, load_bundle
from ..runtime.backends import CPU_BACKENDS, get_backend, resolve_threads
from .engines import (
    ENGINES,
    ROUNDS,
    Engine,
    bundle_engine,
    engine_backend,
    parse_engines,
    reference_engine,
    reference_model,
    split_engine,
    time_engines,
    torch_threads,
    warmup_calls,
)
from .environment import environment
from .inputs import DEFAULT_BATCH_SIZES, DEFAULT_SAMPLES, cycled_batches, load_pool, parse_batch_sizes
from .memory import peak_rss_mib
from .report import BenchReport, comparison, merge_parity, model_name, result_row, routing_report, routing_row

#: ``progress(what, done, total)``: ``done`` of ``total`` timed or measured steps.
Progress = Callable[[str, int, int], None]


def resolve_target(
    target: str | Path | None, workdir: Path, threads: int, step: Callable[[str], None], **overrides: Any
) -> tuple[Path, dict[str, Any]]:
    """A bundle directory for ``target`` (exported into ``workdir`` for a checkpoint, with ``infer_config``'s
    ``overrides``) and how it was found."""
    info: dict[str, Any] = {"input": None if target is None else str(target), "embedded_default": target is None}
    if target is None:
        from ..demo import demo_checkpoint

        target = demo_checkpoint()
    target = Path(target)
    if is_bundle(target):
        return target, {**info, "bundle": str(target), "exported": False}
    if target.is_dir():
        raise InputError(f"{target}: a directory but not a bundle (no {MANIFEST}); pass a bundle or a checkpoint")
    if not target.is_file():
        raise InputError(f"{target}: no such bundle directory or checkpoint file")
    require_export(f"benchmarking the checkpoint {target} (it is exported first)")
    from ..export import export_bundle

    step(f"exporting {target.name} to a temporary bundle")
    bundle = export_bundle(target, workdir / "bundle", threads=threads, **overrides)
    return bundle, {**info, "bundle": None, "checkpoint": str(target), "exported": True}


def _baselines(
    stack: ExitStack, bundle: Path, manifest, backend: str, threads: int, budget: str, wanted: Sequence[str],
    skipped: dict[str, str],
) -> list[Engine]:
    """The dense engines asked for, on every CPU backend but ``backend`` that runs their precision
    (``dense@ov``); a backend that is not installed is recorded in ``skipped``."""
    dense = [n for n in wanted if split_engine(n)[0] == "dense"]
    engines = []
    for other in (b for b in CPU_BACKENDS if b != backend and dense):
        try:
            impl = stack.enter_context(get_backend(other, threads))
        except BackendError as e:
            skipped[f"dense@{other}"] = str(e)
            continue
        for name in dense:
            try:
                impl.check_precision(split_engine(name)[1])
            except BackendError:  # a precision this backend does not run (bf16 on ort)
                continue
            rt = stack.enter_context(AdaptiveRuntime(bundle, manifest, impl, budget, split_engine(name)[1]))
            engines.append(Engine(f"{name}@{other}", rt.dense))
    return engines


def _check_options(iterations: int, warmup: int, budget: str) -> str:
    """Validate the numbers; return the budget's canonical name."""
    from ..calibration import parse_budgets

    if iterations < 1:
        raise ConfigError(f"{param('iterations')} {iterations}: must be >= 1")
    if warmup < 0:
        raise ConfigError(f"{param('warmup')} {warmup}: must be >= 0")
    names = parse_budgets(str(budget))
    if len(names) != 1:
        raise ConfigError(f"{param('budget')} {budget!r}: give one budget (bench runs one at a time)")
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
    tactic: str | None = None,
    baselines: bool = True,
) -> BenchReport:
    """Benchmark a bundle or checkpoint (``None``: the embedded default); see the module doc.

    A checkpoint is exported to a temporary bundle, removed afterwards.
    ``threads=0`` means one per core; the number is resolved once and used by
    every engine. ``images``: a directory of images, an image / ``.npy`` /
    ``.npz`` file, an array, or ``None`` for ``max(32, largest batch)`` seeded
    normal samples; batches cycle through them. ``memory=False`` skips the
    peak-memory children. ``budget``: one of the bundle's budgets; the
    adaptive engines run at it (a checkpoint has only ``native``). ``qk_scale``
    overrides a checkpoint's attention scale (``infer_config``). ``tactic``
    forces one tactic on the adaptive engines (default: the bundle's tuned
    choice on this machine, ``adavit-deploy tune``). ``baselines=False``: the
    dense engines run on ``backend`` alone.
    """
    sizes, wanted = parse_batch_sizes(batch_sizes), parse_engines(engines)
    budget = _check_options(iterations, warmup, budget)
    threads = resolve_threads(threads)
    say = progress or (lambda what, done, total: None)
    backend_impl = get_backend(backend, threads)  # fails fast, before any export
    skipped: dict[str, str] = {}

    with ExitStack() as stack:  # closes the runtimes and the backend, then removes the workdir
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adavit-bench-")))
        stack.enter_context(backend_impl)
        bundle, target_info = resolve_target(target, workdir, threads, lambda msg: say(msg, 0, 0), qk_scale=qk_scale)
        rt = stack.enter_context(load_bundle(bundle, backend=backend_impl, budget=budget, tactic=tactic))
        cfg, manifest = rt.cfg, rt.manifest
        runtimes = {"fp32": rt}
        for name in wanted:
            base, precision = split_engine(name)
            if base != "reference" and precision not in runtimes:
                runtimes[precision] = stack.enter_context(AdaptiveRuntime(bundle, manifest, backend_impl, budget, precision, tactic=tactic))
        engine_list = [bundle_engine(n, runtimes[split_engine(n)[1]]) for n in wanted if n != "reference"]
        if baselines and backend in CPU_BACKENDS:
            engine_list += _baselines(stack, bundle, manifest, backend, threads, budget, wanted, skipped)
        model = None
        if "reference" in wanted:
            model, reason = reference_model(bundle, manifest)
            if model is None:
                skipped["reference"] = reason
            else:
                stack.enter_context(torch_threads(threads))
                engine_list.append(reference_engine(model))
        names = [e.name for e in engine_list]

        say("loading inputs", 0, 0)
        chunk = max(DEFAULT_SAMPLES, *sizes)
        pool, source = load_pool(images, rt, chunk, seed)

        # untimed: every input's decisions and cost, and parity against PyTorch
        say("checking parity against PyTorch" if model is not None else "routing the inputs", 0, 0)
        full = rt.infer(pool, batch_size=chunk)
        parity = None
        if model is not None:
            parity = merge_parity([parity_report(model, rt, pool[i : i + chunk]) for i in range(0, len(pool), chunk)])
        precision_parity = {  # the adaptive engines asked at reduced precision, against fp32
            name: compare(full, runtimes[split_engine(name)[1]].infer(pool, batch_size=chunk))
            for name in wanted
            if split_engine(name)[0] == "adaptive" and split_engine(name)[1] != "fp32"
        }

        dense = dense_gmacs(cfg)
        batches_of = {b: cycled_batches(pool, b, warmup + iterations) for b in sizes}
        per_engine = {b: warmup_calls(warmup, iterations, len(batches_of[b])) + iterations + (1 if memory else 0) for b in sizes}
        total = len(names) * sum(per_engine.values())
        done = 0
        results, comparisons, routing_rows = [], [], []
        for b in sizes:

            def tick(what: str, b: int = b) -> None:
                nonlocal done
                done += 1
                say(f"batch {b}: {what}", done, total)

            batches = batches_of[b]
            timed = time_engines(engine_list, batches, iterations, warmup, tick)
            rows = {}
            for name in names:
                peak = None
                if memory:
                    on = engine_backend(name, backend)
                    peak = peak_rss_mib(name.partition("@")[0], bundle, batches[0], threads, on, workdir, budget, tactic)
                    tick(f"{name}: peak memory")
                rows[name] = {**result_row(name, b, timed[name], peak, dense), "backend": engine_backend(name, backend)}
            results += rows.values()
            comparisons.append(comparison(b, rows, dense))
            if "adaptive" in timed:
                routing_rows.append(routing_row(b, timed["adaptive"]["routing"], iterations))

    return BenchReport(
        results=results,
        comparisons=comparisons,
        parity=parity,
        routing=routing_report(full.routing, routing_rows),
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
            # per precision of the adaptive engines: forced, tuned on this machine, or the default (gather)
            "tactics": {
                p: tactic or ("tuned" if r.tactics is not None else "default")
                for p, r in runtimes.items()
                if any(split_engine(n) == ("adaptive", p) for n in wanted)
            },
            "images": {"source": source, "count": int(len(pool))},
            "memory": memory,
        },
        target={
            **target_info,
            "source_checkpoint": manifest.source.get("checkpoint"),
            "model": model_name(cfg),
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
