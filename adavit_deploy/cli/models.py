"""Commands that read a checkpoint: ``info``, ``export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from .app import LiteralHelpCommand, _errors, app, console
from .options import NumHeads, TokenWithMlp, HeadThreshold, LayerThreshold, TokenThreshold, QkScale, _overrides


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
    from ..extras import require_export

    with _errors():
        require_export("info (reading a checkpoint)")
        from ..summary import describe_checkpoint

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
            **_overrides(num_heads, token_with_mlp, head_threshold, layer_threshold, token_threshold, qk_scale),
        )
    from ..bundle import read_manifest

    render.print_export(console, path, read_manifest(path, verify=False))
