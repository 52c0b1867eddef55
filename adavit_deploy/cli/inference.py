"""Commands that run a bundle: ``infer``, ``inspect``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from ..atomic import check_writable
from ..lists import comma_items
from .app import LiteralHelpCommand, _errors, _own_onnxruntime, _progress, app, console
from .options import Budget, Precision, BackendName, Threads, DemoBundle, SkipBad, Workers


@app.command(cls=LiteralHelpCommand)
def infer(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, folders (every image under them, in class folders or not), or .npy/.npz arrays (key 'images') "
            "already normalised, NCHW."
        ),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="Write logits, head/layer/token_select, gmacs and the input names to this .npz."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Inputs per runtime call (and per decoded batch).", min=1)] = 16,
    threads: Threads = 0,
    backend: BackendName = "ort",
    budget: Budget = "native",
    precision: Precision = "fp32",
    workers: Workers = None,
    skip_bad: SkipBad = False,
) -> None:
    """Run the adaptive runtime: each input takes its own pruned path; prints the top-5 or writes --output.

    Images are decoded in batches, ahead of the model: memory holds a few
    batches of images and the outputs (logits and decisions of every input).
    Names are the paths as given (dir/cat/1.jpg, x.npz[3]).
    """
    from ..collection import infer_collection, open_files
    from ..runtime import load_bundle

    with _errors():
        if output:
            check_writable(output, "--output")
        _own_onnxruntime(backend, threads)
    with _errors(), load_bundle(bundle, backend, threads=threads, budget=budget, precision=precision) as runtime:
        cfg = runtime.cfg
        collection = open_files(inputs, (cfg.in_chans, cfg.img_size, cfg.img_size))
        with _progress("infer: ", images=True) as step:
            result, names = infer_collection(runtime, collection, batch_size, workers, skip_bad, step)
        if output:
            result.save(output, names)
    render.print_inference(console, names, result, runtime.cfg.num_classes, output)


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
    from ..visualize import inspect_bundle

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
        str,
        typer.Option(
            help="Labelled images: 'demo' (the demo's 360 held-out digits), an ImageFolder tree (one subfolder per "
            "class, e.g. imagenet/val), a folder with --labels, or an .npz with images and labels."
        ),
    ] = "demo",
    labels: Annotated[
        Optional[Path], typer.Option(help="A CSV of file,label rows (paths relative to --data; over an ImageFolder tree too): the images to evaluate and their labels.")
    ] = None,
    budgets: Annotated[Optional[str], typer.Option(help="Comma-separated budgets [default: all of the bundle's].")] = None,
    precisions: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated precisions [default: all of the bundle's, and bf16 with --backend ov where the CPU has it]."),
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option(help="Evaluate a class-balanced subset of this many images (seed 0: the same subset every run).", min=1),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per decoded batch and runtime call.", min=1)] = 64,
    workers: Workers = None,
    skip_bad: SkipBad = False,
    threads: Threads = 0,
    backend: BackendName = "ort",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the table as JSON.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG: top-1 against mean GMACs.")] = None,
) -> None:
    """Top-1 and top-5 accuracy and mean GMACs at each budget and precision of a bundle, on labelled images.

    A folder is streamed: images are decoded in batches on --workers threads
    while the model runs; each batch goes through every budget, precision and
    the dense graph, and only counts are kept.
    """
    from ..bundle import resolve_bundle
    from ..collection import open_collection
    from ..evaluate import evaluate as run_evaluate
    from ..evaluate import save_json
    from ..plots import plot_tradeoff, require_plotting

    with _errors():
        _own_onnxruntime(backend, threads)
        if plot:
            require_plotting()  # the install hint now, not after the run
        for path, what in ((json_out, "--json"), (plot, "--plot")):
            if path:
                check_writable(path, what)
        bundle = resolve_bundle(bundle)
        collection = open_collection(data, labels)
        with _progress("evaluate: ", images=True) as step:
            result = run_evaluate(
                bundle,
                collection,
                budgets=comma_items(budgets) if budgets else None,
                precisions=comma_items(precisions) if precisions else None,
                threads=threads,
                batch_size=batch_size,
                workers=workers,
                skip_bad=skip_bad,
                limit=limit,
                backend=backend,
                progress=step,
            )
        if json_out:
            save_json(json_out, result, backend)
        if plot:
            plot_tradeoff(result.rows, result.dense_top1, f"{bundle.name} on {result.source['path']}", plot)
    render.print_evaluation(console, result)
    render.print_written(console, json_out, plot)
