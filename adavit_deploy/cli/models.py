"""Commands that make or measure a bundle: ``info`` (a checkpoint), ``export``, ``calibrate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import render
from .app import LiteralHelpCommand, _errors, app, console
from .options import (
    DEMO_MODEL,
    Bf16,
    Budgets,
    Calib,
    CalibCount,
    Fp16,
    Int8,
    Threads,
    checkpoint_overrides,
)


@app.command(cls=LiteralHelpCommand)
@checkpoint_overrides
def info(
    checkpoint: Annotated[Path, typer.Argument(help="AdaViT (reference format), bare state dict or dense DeiT checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overrides: Optional[dict] = None,  # the options of checkpoint_overrides
) -> None:
    """Show the architecture, decision flags, thresholds and cost detected in a checkpoint (DeiT or T2T-ViT family)."""
    from ..extras import require_export

    with _errors():
        require_export("info (reading a checkpoint)")
        from ..summary import describe_checkpoint

        report = describe_checkpoint(
            checkpoint,
            **overrides,
        )
    if json_out:
        print(json.dumps(report, indent=2))
        return
    render.print_info(console, checkpoint, report)


@app.command(cls=LiteralHelpCommand)
@checkpoint_overrides
def export(
    checkpoint: Annotated[
        Optional[Path], typer.Argument(help=f"AdaViT checkpoint (reference format, bare state dict or dense DeiT). {DEMO_MODEL}")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Bundle directory [default: export/bundles/<checkpoint name>].")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17: LayerNormalization as one op).")] = 17,
    max_batch: Annotated[int, typer.Option(help="Largest batch the bundle promises (TensorRT profiles use it).")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle directory.")] = False,
    budgets: Budgets = "native",
    calib: Calib = None,
    calib_count: CalibCount = 256,
    fp16: Fp16 = False,
    int8: Int8 = False,
    bf16: Bf16 = False,
    overrides: Optional[dict] = None,  # the options of checkpoint_overrides
) -> None:
    """Trace the policy net, the pruned per-block graphs, stem, classifier and dense baseline to an ONNX bundle.

    The bundle is written atomically with a manifest (config, budgets, sha256
    of every file, I/O signatures) and a parity report against the PyTorch
    model (and, for --fp16 / --int8 / --bf16, against the fp32 graphs).
    Budgets and reduced precision are measured on the finished fp32 bundle
    (what `adavit-deploy calibrate` does to an existing one).
    """
    from ..demo import demo_checkpoint
    from ..extras import require_export

    with _errors(), console.status("exporting") as status:
        require_export("export")
        from ..export import export_bundle

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
            bf16=bf16,
            **overrides,
        )
    from ..bundle import read_manifest

    render.print_export(console, path, read_manifest(path, verify=False))


@app.command(cls=LiteralHelpCommand)
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    budgets: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated budgets: native and fractions of dense GMACs, e.g. native,0.7,0.5, calibrated "
            "on --calib; they replace the bundle's [default: the bundle's stay as they are]."
        ),
    ] = None,
    calib: Calib = None,
    calib_count: CalibCount = 256,
    fp16: Fp16 = False,
    int8: Int8 = False,
    bf16: Bf16 = False,
    threads: Threads = 0,
) -> None:
    """Calibrate budgets, add FP16 / INT8 graphs or bf16's agreement to an existing bundle, atomically.

    Measured on the bundle as it is (opened like any other), written beside it
    and swapped in: a failure leaves the bundle as it was. The manifest
    records the calibration set and each precision's parity vs fp32.
    """
    from ..bundle import read_manifest
    from ..calibrate import calibrate_bundle
    from ..demo import is_demo

    with _errors(), console.status("calibrating") as status:
        if calib is None and is_demo(read_manifest(bundle, verify=False).model):
            calib = "demo"  # as export does for the demo model
        calibrate_bundle(
            bundle, budgets=budgets, calibration=calib, calib_count=calib_count, fp16=fp16, int8=int8, bf16=bf16,
            threads=threads, progress=lambda msg: status.update(f"calibrating: {escape(msg)}"),
        )  # fmt: skip
    render.print_export(console, bundle, read_manifest(bundle, verify=False))
