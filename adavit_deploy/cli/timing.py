"""Commands that time: ``bench`` (in process), ``bench-server`` (a Triton server), ``tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import render
from ..atomic import check_writable
from ..errors import ConfigError
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
    # `bench --url` (and its open-loop options) is `bench-server`: it works, hidden from the help
    url: Annotated[Optional[str], typer.Option(hidden=True)] = None,
    rates: Annotated[Optional[str], typer.Option(hidden=True)] = None,
    policies: Annotated[str, typer.Option(hidden=True)] = "native,auto",
    slo_ms: Annotated[float, typer.Option(hidden=True)] = 200.0,
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
        return _bench_url(url, protocol, concurrency, duration, images, model, metrics_port, json_out, rates, policies,
                          slo_ms, plot=plot)  # fmt: skip
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
    concurrency: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent clients (closed loop).")] = "1,8,32",
    duration: Annotated[float, typer.Option(help="Seconds of load per model and concurrency, or per rate and policy.")] = 10.0,
    images: Annotated[
        Optional[Path],
        typer.Option(help="Images to send: an .npy/.npz (with 'labels': top-1 per row), or demo [default: seeded noise]."),
    ] = None,
    model: Annotated[str, typer.Option(help="The served model (its dense twin <model>_dense too, if served).")] = "adavit",
    metrics_port: Annotated[int, typer.Option(help="The server's metrics port (same host).")] = 8002,
    rates: Annotated[
        Optional[str],
        typer.Option(
            help="Open loop: comma-separated Poisson arrival rates, requests/s or multiples of the first policy's "
            "capacity (0.5x,1.3x; measured closed-loop first).",
            show_default=False,
        ),
    ] = None,
    policies: Annotated[
        str, typer.Option(help="Open loop: what each request asks for: budget names, auto (the SLO controller) or dense.")
    ] = "native,auto",
    slo_ms: Annotated[float, typer.Option(help="Open loop: the latency SLO that goodput counts against, ms.")] = 200.0,
    warmup: Annotated[float, typer.Option(help="Open loop: seconds at each rate before the timed ones.")] = 3.0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON (docs/SERVING.md).")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Open loop: write a PNG of p99 and GMACs vs load.")] = None,
) -> None:
    """Load a Triton server with one-image requests: closed loop (--concurrency) or open loop (--rates).

    Closed loop: concurrent clients, each waiting for its answer; the adaptive
    model and its dense twin (where served, --with-dense) in turn: throughput,
    latency, server-side batch size. Open loop: requests arrive at each rate
    whether or not the server keeps up, for each policy, interleaved: offered and
    achieved rate, p50/p99 latency, goodput (answered within --slo-ms), mean
    GMACs and the budgets applied. Errors are counted, never fatal.
    """
    _bench_url(url, protocol, concurrency, duration, images, model, metrics_port, json_out, rates, policies, slo_ms,
               warmup, plot)  # fmt: skip


def _bench_url(url: str, protocol: str, concurrency: str, duration: float, images: Optional[Path], model: str,
               metrics_port: int, json_out: Optional[Path], rates: Optional[str] = None, policies: str = "native,auto",
               slo_ms: float = 200.0, warmup: float = 3.0, plot: Optional[Path] = None) -> None:  # fmt: skip
    """Load a Triton server (adavit_deploy/bench/server.py, bench/open_loop.py) and print its table."""
    with _errors():
        for path, what in ((json_out, "--json"), (plot, "--plot")):
            if path:
                check_writable(path, what)
        if rates is None:
            if plot:
                raise ConfigError("--plot draws the open-loop run: give --rates too")
            from ..bench.server import run_load

            with console.status("loading the server") as status:
                report = run_load(url, protocol, concurrency, duration, images=images, model=model, metrics_port=metrics_port,
                                  progress=lambda what, done, total: status.update(f"[{done + 1}/{total}] {escape(what)}"))  # fmt: skip
        else:
            from ..bench.open_loop import run_open_loop
            from ..plots import plot_open_loop, require_plotting

            if plot:
                require_plotting()
            with _progress("open loop: ") as progress:
                report = run_open_loop(url, rates, policies, slo_ms, duration, images=images, model=model,
                                       protocol=protocol, warmup_s=warmup, progress=progress)  # fmt: skip
            if plot:
                plot_open_loop(report, plot)
        if json_out:
            report.save(json_out)
    if rates is None:
        render.print_server_bench(console, url, protocol, report)
    else:
        render.print_open_loop(console, url, report)
    render.print_written(console, json_out, plot)
