"""Commands that time: ``bench`` (in process), ``bench-server`` (a Triton server), ``tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import render
from ..atomic import check_writable
from .app import LiteralHelpCommand, _errors, _own_onnxruntime, _progress, app, console, err_console
from .options import DEMO_MODEL, BackendName, Budget, DemoBundle, Precision, QkScale


@app.command(cls=LiteralHelpCommand)
def bench(
    target: Annotated[
        Optional[Path],
        typer.Argument(help=f"Bundle directory, or a checkpoint (exported to a temporary bundle first). {DEMO_MODEL}", show_default=False),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="Backend of the adaptive engines: ort (CPU), ov (OpenVINO), ort-cuda, or trt where installed; the "
            "dense ones also run on every other CPU backend installed (the fastest is the baseline)."
        ),
    ] = "ort",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16",
    iterations: Annotated[int, typer.Option(help="Timed calls per engine and batch size.")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed calls per engine and batch size first.")] = 2,
    threads: Annotated[int, typer.Option(help="Intra-op threads of every engine (0: one per core).")] = 0,
    images: Annotated[
        Optional[Path],
        typer.Option(help="Image directory, image file or .npy/.npz (key 'images'); default: 32 seeded normal samples (the demo: its sample digits)."),
    ] = None,
    budget: Budget = "native",
    engines: Annotated[
        str,
        typer.Option(
            help="Comma-separated subset of adaptive,dense,reference; adaptive and dense may end in .fp16, .int8 or "
            ".bf16 (e.g. adaptive,adaptive.int8) to compare precisions in the same run."
        ),
    ] = "adaptive,dense,reference",
    memory: Annotated[
        bool, typer.Option("--memory/--no-memory", help="Measure each engine's peak RSS in a child process.")
    ] = True,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines/--no-baselines",
            help="Also time the dense engines on every other CPU backend installed (ort, ov): the fastest is the baseline.",
        ),
    ] = True,
    qk_scale: QkScale = None,
    tactic: Annotated[
        Optional[str],
        typer.Option(help="Force one tactic on the adaptive engines: gather or masked [default: the bundle's tuned choice].", show_default=False),
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON (docs/bench.md).")] = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write a PNG: throughput per engine, GMACs per image.")
    ] = None,
    # `bench --url` before `bench-server` existed: still works, hidden from the help
    url: Annotated[Optional[str], typer.Option(hidden=True)] = None,
    protocol: Annotated[str, typer.Option(hidden=True)] = "http",
    concurrency: Annotated[str, typer.Option(hidden=True)] = "1,8,32",
    duration: Annotated[float, typer.Option(hidden=True)] = 10.0,
    model: Annotated[str, typer.Option(hidden=True)] = "adavit",
    metrics_port: Annotated[int, typer.Option(hidden=True)] = 8002,
) -> None:
    """Time the adaptive runtime, the dense graph and the masked PyTorch model on the same inputs; check parity.

    Prints latency, throughput, GMACs and peak memory per engine and batch
    size, the speed-up over the same-backend dense graph against the FLOPs
    ratio and over the fastest dense engine of each precision (the dense graph
    also runs on every other CPU backend installed), parity with PyTorch and
    routing statistics. A Triton server is loaded by `adavit-deploy bench-server`.
    """
    if url:
        err_console.print("note: `bench --url HOST:PORT` is now `adavit-deploy bench-server HOST:PORT`", highlight=False)
        return _bench_url(url, protocol, concurrency, duration, images, model, metrics_port, json_out)
    from ..bench import bench as run_bench
    from ..plots import plot_report, require_plotting

    with _errors():
        if plot:
            require_plotting()  # the install hint now, not after the run
        for path, what in ((json_out, "--json"), (plot, "--plot")):
            if path:
                check_writable(path, what)
        _own_onnxruntime("ort", threads)  # the dense baselines run on ONNX Runtime whatever --backend is
        with _progress() as progress:
            report = run_bench(
                target,
                backend=backend,
                batch_sizes=batch_sizes,
                iterations=iterations,
                warmup=warmup,
                threads=threads,
                images=images,
                budget=budget,
                engines=engines,
                memory=memory,
                baselines=baselines,
                qk_scale=qk_scale,
                tactic=tactic,
                progress=progress,
            )
        if json_out:
            report.save(json_out)
        if plot:
            plot_report(report, plot)
    render.print_bench(console, report)
    render.print_written(console, json_out, plot)



@app.command(cls=LiteralHelpCommand)
def tune(
    bundle: DemoBundle = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes to tune for.")] = "1,16",
    budget: Budget = "native",
    precision: Precision = "fp32",
    backend: BackendName = "ort",
    threads: Annotated[int, typer.Option(help="Intra-op threads, as inference will run (0: one per core).")] = 0,
    images: Annotated[
        Optional[Path],
        typer.Option(help="Image directory, image file or .npy/.npz (key 'images'); default: 16 seeded normal samples (the demo: its sample digits)."),
    ] = None,
    reps: Annotated[int, typer.Option(help="Timed repetitions per tactic and key (the fastest counts).")] = 3,
    margin: Annotated[
        float, typer.Option(help="How much faster masked must be to be picked, as a fraction (0.05: 5%; it holds a second copy of its block's weights).")
    ] = 0.05,
) -> None:
    """Time each tactic of each pruned stage on this machine and write the fastest into the bundle (tactics.json).

    A stage runs either with its kept heads' weights gathered (gather) or
    with every head computed from constant weights and the dropped ones
    zeroed (masked); both are exact. Which is faster depends on the kept
    heads, the batch size and the machine, so this measures it, like
    TensorRT's timing cache. The runtime uses the result on this machine
    (same CPU, backend version and threads) and gather (the default) elsewhere.

    One table per --backend and --precision: tune each one you run (tables
    tuned here for the others are kept). A batch uses the choices of the largest
    tuned batch size not above it. --budget only decides which head counts
    the inputs reach; the choices serve every budget. Run with the --threads
    inference uses.
    """
    from ..bench import parse_batch_sizes
    from ..bundle import resolve_bundle
    from ..tuner import tune as run_tune

    with _errors():
        sizes = parse_batch_sizes(batch_sizes)
        bundle = resolve_bundle(bundle)
        _own_onnxruntime(backend, threads)
        with _progress("tuning: ") as progress:
            table, path = run_tune(
                bundle, sizes, budget=budget, precision=precision, backend=backend, threads=threads, images=images,
                reps=reps, margin=margin, progress=progress,
            )  # fmt: skip
    render.print_tactics(console, table)
    render.print_written(console, path)
@app.command("bench-server", cls=LiteralHelpCommand)
def bench_server(
    url: Annotated[str, typer.Argument(help="HOST:PORT of a Triton server (`adavit-deploy serve`).")],
    protocol: Annotated[str, typer.Option(help="http, or grpc (give the gRPC port).")] = "http",
    concurrency: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent clients.")] = "1,8,32",
    duration: Annotated[float, typer.Option(help="Seconds of load per model and concurrency.")] = 10.0,
    images: Annotated[
        Optional[Path], typer.Option(help="Images to send: an image file, folder or .npy/.npz [default: seeded noise].")
    ] = None,
    model: Annotated[str, typer.Option(help="The served model (its dense twin <model>_dense too, if served).")] = "adavit",
    metrics_port: Annotated[int, typer.Option(help="The server's metrics port (same host).")] = 8002,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON (docs/SERVING.md).")] = None,
) -> None:
    """Load a Triton server with concurrent one-image requests: throughput, latency, server-side batch size.

    The adaptive model and its dense twin (where served, --with-dense) are
    loaded in turn at each concurrency; errors are counted, never fatal.
    """
    _bench_url(url, protocol, concurrency, duration, images, model, metrics_port, json_out)


def _bench_url(url: str, protocol: str, concurrency: str, duration: float, images: Optional[Path], model: str,
               metrics_port: int, json_out: Optional[Path]) -> None:  # fmt: skip
    """Load a Triton server (adavit_deploy/bench/server.py) and print its table."""
    from ..bench.server import run_load

    with _errors(), console.status("loading the server") as status:
        if json_out:
            check_writable(json_out, "--json")
        report = run_load(url, protocol, concurrency, duration, images=images, model=model, metrics_port=metrics_port,
                          progress=lambda what, done, total: status.update(f"[{done + 1}/{total}] {escape(what)}"))  # fmt: skip
        if json_out:
            report.save(json_out)
    render.print_server_bench(console, url, protocol, report)
    render.print_written(console, json_out)
