"""Commands that run a bundle: ``infer``, ``inspect``, ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from ..atomic import check_writable
from ..lists import comma_items
from .app import LiteralHelpCommand, _errors, _own_onnxruntime, app, console
from .options import Budget, Precision, BackendName, Threads, DemoBundle


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
    from ..inputs import load_inputs
    from ..runtime import load_bundle

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
    from ..bundle import resolve_bundle
    from ..evaluate import evaluate as run_evaluate
    from ..evaluate import labelled_data, save_json
    from ..plots import plot_tradeoff, require_plotting

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
            budgets=comma_items(budgets) if budgets else None,
            precisions=comma_items(precisions) if precisions else None,
            threads=threads,
            backend=backend,
            progress=lambda msg: status.update(f"evaluating: {msg}"),
        )
        if json_out:
            save_json(json_out, rows, dense_top1, source, backend)
        if plot:
            plot_tradeoff(rows, dense_top1, f"{bundle.name} on {source}", plot)
    render.print_evaluation(console, rows, dense_top1, source)
    render.print_written(console, json_out, plot)
