"""The ``adavit-deploy`` command line: thin Typer wrappers over the library.

Every command hands off to one library function; the only logic here is
argument parsing, printing, and turning ``AdaViTDeployError`` into a one-line
message with exit code 1 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from . import __version__, render
from .atomic import check_writable
from .errors import AdaViTDeployError


class _LiteralHelp:
    """Help texts are plain text here: escaped for rich (``'adavit-deploy[gpu]'``, ``[default: ...]``
    stay visible), and flags get no ``<bool>`` metavar (they take no value)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = escape(self.help) if self.help else self.help
        for param in self.params:
            self._literal(param)

    @staticmethod
    def _literal(param) -> None:
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            self._literal(option)
        return option


class LiteralHelpCommand(_LiteralHelp, TyperCommand):
    pass


class LiteralHelpGroup(_LiteralHelp, TyperGroup):
    pass


app = typer.Typer(
    name="adavit-deploy",
    cls=LiteralHelpGroup,
    help="Export AdaViT checkpoints to ONNX / TensorRT and run them exactly, with real speed-ups.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft wrap: a printed line stays one line when piped (rich wraps at 80 columns off a terminal); tables still fit
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
_state = {"debug": False, "owns_process": False}


def _own_onnxruntime(backend: str, threads: int) -> None:
    """Run as a program (``main``), the CLI owns its process: its ONNX Runtime sessions share the
    faster global pool (``use_process_pool``). Called from Python (CliRunner, an embedding app),
    it leaves the process alone, as the library does."""
    if _state["owns_process"] and backend in ("ort", "ort-cuda"):
        from .runtime.backends.ort import use_process_pool

        use_process_pool(threads)


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors become one line on stderr and exit code 1; library warnings one line
    each on stderr, as errors are (not Python's file:line and source line)."""
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            yield
        except AdaViTDeployError as e:
            if _state["debug"]:
                raise
            # escape: a path like "model[v2].pth" is not rich markup
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None


def _print_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None, line: str | None = None
) -> None:
    """``warnings.showwarning`` for a command: the message alone, escaped (it holds user paths)."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


@contextmanager
def _progress(prefix: str = "") -> Iterator[Callable[[str, int, int], None]]:
    """A transient progress bar, as the library's ``progress(what, done, total)`` callback.

    Disabled when stdout is not a terminal: a pipe or a file gets the
    results only (an enabled bar leaves a blank line there, even before an error).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(escape(prefix), total=None)
        yield lambda what, done, total: bar.update(task, description=escape(prefix + what), completed=done, total=total or None)


def _version(value: bool) -> None:
    if value:
        console.print(f"adavit-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


# -- options shared by the commands that read a checkpoint ---------------------
NumHeads = Annotated[Optional[int], typer.Option(help="Heads per block, for checkpoints that do not say (dense DeiT).")]
TokenWithMlp = Annotated[
    Optional[bool],
    typer.Option(
        "--token-with-mlp/--no-token-with-mlp",
        help="Whether token decisions also mask the FFN (ada_token_with_mlp); read from the checkpoint's args when absent.",
        show_default=False,
    ),
]
HeadThreshold = Annotated[Optional[float], typer.Option(help="Head decision threshold (default 0.5).")]
LayerThreshold = Annotated[Optional[float], typer.Option(help="Sub-layer decision threshold (default 0.5).")]
TokenThreshold = Annotated[Optional[float], typer.Option(help="Token decision threshold (default 0.6).")]
QkScale = Annotated[
    Optional[float],
    typer.Option(
        help="Attention scale of the blocks [default: head_dim^-0.5; embed_dim^-0.5 for a T2T-ViT checkpoint "
        "whose args say pretrained]."
    ),
]
# -- options shared by the commands that run a bundle ---------------------------
Budget = Annotated[
    str, typer.Option(help="Which of the bundle's budgets to run: native (the checkpoint's thresholds) or e.g. 0.5.")
]
Precision = Annotated[
    str,
    typer.Option(
        help="fp32; bf16 (the fp32 graphs in bfloat16: --backend ov, on a CPU with bf16); fp16 / int8 if the bundle "
        "was exported with them."
    ),
]
BackendName = Annotated[
    str,
    typer.Option(
        help="ort (ONNX Runtime CPU), ov (OpenVINO CPU: the ov extra), ort-cuda, or trt (engines from `build-trt`)."
    ),
]
Threads = Annotated[int, typer.Option(help="Intra-op threads (0: one per core).")]
DemoBundle = Annotated[
    Optional[Path], typer.Argument(help="Bundle directory [default: export/bundles/ada_digits, the demo model's].")
]


def _overrides(
    num_heads: int | None,
    token_with_mlp: bool | None,
    head: float | None,
    layer: float | None,
    token: float | None,
    qk_scale: float | None,
) -> dict:
    """The checkpoint-override options, as ``infer_config`` takes them (``None``: not given)."""
    return dict(
        num_heads=num_heads, token_with_mlp=token_with_mlp, head_threshold=head, layer_threshold=layer,
        token_threshold=token, qk_scale=qk_scale,
    )  # fmt: skip


@app.command(cls=LiteralHelpCommand)
def info(
    checkpoint: Annotated[Path, typer.Argument(help="AdaViT (reference format), bare state dict or dense DeiT checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    num_heads: NumHeads = None,
    token_with_mlp: TokenWithMlp = None,
    head_threshold: HeadThreshold = None,
    layer_threshold: LayerThreshold = None,
    token_threshold: TokenThreshold = None,
    qk_scale: QkScale = None,
) -> None:
    """Show the architecture, decision flags, thresholds and cost detected in a checkpoint (DeiT or T2T-ViT family)."""
    from .extras import require_export

    with _errors():
        require_export("info (reading a checkpoint)")
        from .summary import describe_checkpoint

        report = describe_checkpoint(
            checkpoint,
            **_overrides(num_heads, token_with_mlp, head_threshold, layer_threshold, token_threshold, qk_scale),
        )
    if json_out:
        print(json.dumps(report, indent=2))
        return
    render.print_info(console, checkpoint, report)


@app.command(cls=LiteralHelpCommand)
def export(
    checkpoint: Annotated[
        Optional[Path],
        typer.Argument(
            help="AdaViT checkpoint (reference format, bare state dict or dense DeiT). "
            "Default: the embedded demo model (AdaViT trained on handwritten digits)."
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Bundle directory [default: export/bundles/<checkpoint name>].")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17: LayerNormalization as one op).")] = 17,
    max_batch: Annotated[int, typer.Option(help="Largest batch the bundle promises (TensorRT profiles use it).")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle directory.")] = False,
    budgets: Annotated[
        str,
        typer.Option(
            help="Comma-separated budgets: native (the checkpoint's thresholds) and fractions of dense GMACs, "
            "e.g. native,0.7,0.5. Fractions are calibrated on --calib."
        ),
    ] = "native",
    calib: Annotated[
        Optional[str],
        typer.Option(
            help="Calibration set for budgets and --int8: a folder of images, an .npz/.npy of normalised NCHW "
            "images, or 'demo' (the demo model's training digits) [default: demo for the demo model]."
        ),
    ] = None,
    calib_count: Annotated[int, typer.Option(help="Calibration images to use (a seeded subset of --calib).")] = 256,
    fp16: Annotated[bool, typer.Option("--fp16", help="Add FP16 graphs (I/O, LayerNorm, Softmax, policy in fp32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Add INT8 Q/DQ graphs calibrated on --calib.")] = False,
    num_heads: NumHeads = None,
    token_with_mlp: TokenWithMlp = None,
    head_threshold: HeadThreshold = None,
    layer_threshold: LayerThreshold = None,
    token_threshold: TokenThreshold = None,
    qk_scale: QkScale = None,
) -> None:
    """Trace the policy net, the pruned per-block graphs, stem, classifier and dense baseline to an ONNX bundle.

    The bundle is written atomically with a manifest (config, budgets, sha256
    of every file, I/O signatures) and a parity report against the PyTorch
    model (and, for --fp16 / --int8, against the fp32 graphs).
    """
    from .demo import demo_checkpoint
    from .extras import require_export

    with _errors(), console.status("exporting") as status:
        require_export("export")
        from .export import export_bundle

        if checkpoint is None:
            checkpoint, calib = demo_checkpoint(), calib or "demo"
        path = export_bundle(
            checkpoint,
            out,
            opset=opset,
            max_batch=max_batch,
            overwrite=overwrite,
            progress=lambda msg: status.update(f"exporting: {msg}"),
            budgets=budgets,
            calibration=calib,
            calib_count=calib_count,
            fp16=fp16,
            int8=int8,
            **_overrides(num_heads, token_with_mlp, head_threshold, layer_threshold, token_threshold, qk_scale),
        )
    from .bundle import read_manifest

    render.print_export(console, path, read_manifest(path, verify=False))


@app.command(cls=LiteralHelpCommand)
def infer(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files, or .npy/.npz arrays (key 'images') already normalised, NCHW.")
    ],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Write logits, head/layer/token_select and gmacs to this .npz."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Inputs per runtime call.")] = 16,
    threads: Threads = 0,
    backend: BackendName = "ort",
    budget: Budget = "native",
    precision: Precision = "fp32",
) -> None:
    """Run the adaptive runtime: each input takes its own pruned path; prints the top-5 or writes --output."""
    from .inputs import load_inputs
    from .runtime import load_bundle

    with _errors():
        if output:
            check_writable(output, "--output")
        _own_onnxruntime(backend, threads)
    with _errors(), load_bundle(bundle, backend, threads=threads, budget=budget, precision=precision) as runtime:
        images, labels = load_inputs(inputs, runtime.cfg)
        result = runtime.infer(images, batch_size=batch_size)
        if output:
            result.save(output)
    render.print_inference(console, labels, result, runtime.cfg.num_classes, output)


@app.command(cls=LiteralHelpCommand)
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or .npy/.npz arrays to explain.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="PNG to write; with several images, one file per image named after it.")
    ] = Path("policy.png"),
    threads: Threads = 0,
    budget: Budget = "native",
    grid: Annotated[bool, typer.Option("--grid", help="One figure, exactly --out: every image side by side.")] = False,
    backend: BackendName = "ort",
    precision: Precision = "fp32",
) -> None:
    """Draw, per block, the patches kept, the heads and sub-layers that ran, and the GMACs of each image."""
    from .visualize import inspect_bundle

    with _errors():
        _own_onnxruntime(backend, threads)
        paths = inspect_bundle(
            bundle, images, out, threads=threads, budget=budget, grid=grid, backend=backend, precision=precision
        )
    render.print_written(console, *paths)


@app.command(cls=LiteralHelpCommand)
def evaluate(
    bundle: DemoBundle = None,
    data: Annotated[
        str, typer.Option(help="Labelled images: 'demo' (the demo's 360 held-out digits) or an .npz with images and labels.")
    ] = "demo",
    budgets: Annotated[Optional[str], typer.Option(help="Comma-separated budgets [default: all of the bundle's].")] = None,
    precisions: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated precisions [default: all of the bundle's, and bf16 with --backend ov where the CPU has it]."),
    ] = None,
    threads: Threads = 0,
    backend: BackendName = "ort",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the table as JSON.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG: top-1 against mean GMACs.")] = None,
) -> None:
    """Top-1 accuracy and mean GMACs at each budget and precision of a bundle, on labelled images."""
    from .bundle import resolve_bundle
    from .evaluate import evaluate as run_evaluate
    from .evaluate import labelled_data, save_json
    from .plots import plot_tradeoff, require_plotting

    with _errors(), console.status("evaluating") as status:
        _own_onnxruntime(backend, threads)
        if plot:
            require_plotting()  # the install hint now, not after the run
        for path, what in ((json_out, "--json"), (plot, "--plot")):
            if path:
                check_writable(path, what)
        bundle = resolve_bundle(bundle)
        images, labels, source = labelled_data(data)
        rows, dense_top1 = run_evaluate(
            bundle,
            images,
            labels,
            budgets=budgets.split(",") if budgets else None,
            precisions=precisions.split(",") if precisions else None,
            threads=threads,
            backend=backend,
            progress=lambda msg: status.update(f"evaluating: {msg}"),
        )
        if json_out:
            save_json(json_out, rows, dense_top1, source)
        if plot:
            plot_tradeoff(rows, dense_top1, f"{bundle.name} on {source}", plot)
    render.print_evaluation(console, rows, dense_top1, source)
    render.print_written(console, json_out, plot)


@app.command("build-trt", cls=LiteralHelpCommand)
def build_trt(
    bundle: Annotated[
        Optional[Path],
        typer.Argument(help="Bundle directory written by `export` [default: export/bundles/ada_digits, the demo model's]."),
    ] = None,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16",
            help="FP16 engines: from the bundle's FP16 graphs; on TensorRT 10 without them, its FP16 builder flag.",
        ),
    ] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8 engines from the bundle's Q/DQ graphs.")] = False,
    max_batch: Annotated[
        Optional[int], typer.Option(help="Largest batch the engines accept [default: the bundle's max batch].")
    ] = None,
    workspace: Annotated[
        Optional[float], typer.Option(help="TensorRT workspace memory limit in GiB [default: TensorRT's].")
    ] = None,
    timing_cache: Annotated[
        Optional[Path], typer.Option(help="Tactic timing cache file: read if it exists, written after the build.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Engine directory [default: BUNDLE/trt].")] = None,
    budget: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="<budget>",
            help="Size the token-bucket profiles for this budget of the bundle (repeat for several); "
            "default: equal-width buckets."
        ),
    ] = None,
) -> None:
    """Build a TensorRT engine per graph of a bundle, with an optimization profile per token bucket.

    Needs an NVIDIA GPU and TensorRT >= 10 (pip install 'adavit-deploy[gpu]').
    Engines are tied to the TensorRT version and GPU that built them; the
    TensorRT backend refuses others and says to rebuild.
    """
    from .tensorrt.build import build_engines, resolve_precision

    with _errors(), console.status("building TensorRT engines") as status:
        path = build_engines(
            bundle,
            precision=resolve_precision(fp16, int8),
            max_batch=max_batch,
            workspace_gib=workspace,
            timing_cache=timing_cache,
            out=out,
            progress=lambda msg: status.update(f"build-trt: {msg}"),
            budgets=budget,
        )
    from .tensorrt.manifest import read_engine_manifest

    render.print_engines(console, path, read_engine_manifest(path))


@app.command(cls=LiteralHelpCommand)
def bench(
    target: Annotated[
        Optional[Path],
        typer.Argument(
            help="Bundle directory, or a checkpoint (exported to a temporary bundle first). "
            "Default: the embedded demo model (AdaViT trained on handwritten digits).",
            show_default=False,
        ),
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
    url: Annotated[
        Optional[str],
        typer.Option(help="HOST:PORT of a Triton server (`adavit-deploy serve`): load it instead (the options below)."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="With --url: http, or grpc (give the gRPC port).")] = "http",
    concurrency: Annotated[str, typer.Option(help="With --url: comma-separated numbers of concurrent clients.")] = "1,8,32",
    duration: Annotated[float, typer.Option(help="With --url: seconds of load per model and concurrency.")] = 10.0,
    model: Annotated[str, typer.Option(help="With --url: the served model (its dense twin <model>_dense too, if served).")] = "adavit",
    metrics_port: Annotated[int, typer.Option(help="With --url: the server's metrics port (same host).")] = 8002,
) -> None:
    """Time the adaptive runtime, the dense graph and the masked PyTorch model on the same inputs; check parity.

    Prints latency, throughput, GMACs and peak memory per engine and batch
    size, the speed-up over dense against the FLOPs ratio, parity with PyTorch
    and routing statistics. With --url: throughput, latency and server-side
    batch size of a Triton server under concurrent one-image requests.
    """
    if url:
        return _bench_url(url, protocol, concurrency, duration, images, model, metrics_port, json_out)
    from .bench import bench as run_bench
    from .plots import plot_report, require_plotting

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
    from .bench import parse_batch_sizes
    from .bundle import resolve_bundle
    from .tuner import tune as run_tune

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

# -- Triton Inference Server (adavit_deploy/serving/) -----------------------------
ServeName = Annotated[str, typer.Option(help="Model name in the repository (the dense one gets '_dense' appended).")]
ServeMaxBatch = Annotated[int, typer.Option(help="Largest batch Triton's dynamic batcher forms.")]
ServeQueueDelay = Annotated[
    int, typer.Option(help="Microseconds the batcher may hold a request to form a larger batch.")
]
ServeInstances = Annotated[int, typer.Option(help="Model instances (each runs one batch at a time).")]
ServeThreads = Annotated[int, typer.Option(help="Intra-op threads of each instance's runtime (0: one per core).")]
ServeWithDense = Annotated[bool, typer.Option("--with-dense", help="Also serve the dense graph, as <name>_dense (A/B).")]


def _repository_options(name, max_batch, queue_delay_us, instances, threads, backend, budget, precision, with_dense):
    from .serving import RepositoryOptions

    return RepositoryOptions(
        name=name, max_batch=max_batch, queue_delay_us=queue_delay_us, instances=instances, threads=threads,
        backend=backend, budget=budget, precision=precision, with_dense=with_dense,
    )  # fmt: skip


@app.command("triton-repo", cls=LiteralHelpCommand)
def triton_repo(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Repository directory to write.")],
    name: ServeName = "adavit",
    max_batch: ServeMaxBatch = 32,
    queue_delay_us: ServeQueueDelay = 0,
    instances: ServeInstances = 1,
    threads: ServeThreads = 0,
    backend: BackendName = "ort",
    budget: Budget = "native",
    precision: Precision = "fp32",
    with_dense: ServeWithDense = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing repository directory.")] = False,
) -> None:
    """Write a Triton Inference Server model repository serving a bundle (docs/SERVING.md).

    config.pbtxt (dynamic batching, instances, the runtime's settings as
    parameters), 1/model.py (Python backend) and the bundle, verified when
    Triton loads it. Serve it with any Triton whose Python has adavit-deploy.
    """
    from .serving import write_repository

    options = _repository_options(name, max_batch, queue_delay_us, instances, threads, backend, budget, precision, with_dense)
    with _errors():
        path = write_repository(bundle, out, options, overwrite=overwrite)
    render.print_repository(console, path, options.models)


@app.command(cls=LiteralHelpCommand)
def serve(
    bundle: DemoBundle = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP/REST port (KServe v2 protocol).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    name: ServeName = "adavit",
    max_batch: ServeMaxBatch = 32,
    queue_delay_us: ServeQueueDelay = 0,
    instances: ServeInstances = 1,
    threads: ServeThreads = 0,
    backend: BackendName = "ort",
    budget: Budget = "native",
    precision: Precision = "fp32",
    with_dense: ServeWithDense = False,
) -> None:
    """Serve a bundle on Triton Inference Server, in the foreground, until Ctrl-C or SIGTERM.

    Needs the serve extra (pip install 'adavit-deploy[serve]'). The model
    repository lives in a temporary folder, removed when the server stops.
    """
    from .bundle import resolve_bundle
    from .serving.server import serve as run_serve

    options = _repository_options(name, max_batch, queue_delay_us, instances, threads, backend, budget, precision, with_dense)

    def ready(server) -> None:
        render.print_serving(err_console, bundle, options.models, server)

    with _errors():
        bundle = resolve_bundle(bundle)
        code = run_serve(bundle, options, host, http_port, grpc_port, metrics_port, on_ready=ready)
    raise typer.Exit(code)


def _bench_url(url: str, protocol: str, concurrency: str, duration: float, images: Optional[Path], model: str,
               metrics_port: int, json_out: Optional[Path]) -> None:  # fmt: skip
    """``bench --url``: load a Triton server (adavit_deploy/serving/load.py) and print its table."""
    from .serving.load import run_load

    metrics_url = f"http://{url.rsplit(':', 1)[0]}:{metrics_port}/metrics"
    with _errors(), console.status("loading the server") as status:
        report = run_load(url, protocol, concurrency, duration, images=images, model=model, metrics_url=metrics_url,
                          progress=lambda what, done, total: status.update(f"[{done + 1}/{total}] {escape(what)}"))  # fmt: skip
        if json_out:
            report.save(json_out)
    render.print_server_bench(console, url, protocol, report)
    render.print_written(console, json_out)


def main() -> None:
    _state["owns_process"] = True
    app()
