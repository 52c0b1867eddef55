"""``build-trt``: TensorRT engines from a bundle (the ``gpu`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from .app import LiteralHelpCommand, _errors, app, console


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
    from ..tensorrt.build import build_engines, resolve_precision

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
    from ..tensorrt.manifest import read_engine_manifest

    render.print_engines(console, path, read_engine_manifest(path))
