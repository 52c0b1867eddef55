"""The ``adavit-deploy`` command line: thin Typer wrappers over the library.

Every command hands off to one library function; the only logic here is
argument parsing, printing, and turning ``AdaViTDeployError`` into a one-line
message with exit code 1 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import AdaViTDeployError

app = typer.Typer(
    name="adavit-deploy",
    help="Export AdaViT checkpoints to ONNX / TensorRT and run them exactly, with real speed-ups.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors become one line on stderr and exit code 1."""
    try:
        yield
    except AdaViTDeployError as e:
        if _state["debug"]:
            raise
        # escape: a path like "model[v2].pth" is not rich markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


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


@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(help="AdaViT (reference format), bare state dict or dense DeiT checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    num_heads: NumHeads = None,
    token_with_mlp: TokenWithMlp = None,
    head_threshold: HeadThreshold = None,
    layer_threshold: LayerThreshold = None,
    token_threshold: TokenThreshold = None,
) -> None:
    """Show the architecture, decision flags, thresholds and cost detected in a checkpoint."""
    from .summary import describe_checkpoint

    with _errors():
        report = describe_checkpoint(
            checkpoint,
            num_heads=num_heads,
            token_with_mlp=token_with_mlp,
            head_threshold=head_threshold,
            layer_threshold=layer_threshold,
            token_threshold=token_threshold,
        )
    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=str(checkpoint), show_header=False)
    for section in ("architecture", "flags", "thresholds"):
        for key, value in report[section].items():
            table.add_row(f"{section}.{key}", str(value))
    for key in ("kind", "parameters", "dense_gmacs"):
        table.add_row(key, str(report[key]))
    console.print(table)


@app.command()
def export(
    checkpoint: Annotated[
        Optional[Path],
        typer.Argument(
            help="AdaViT checkpoint (reference format, bare state dict or dense DeiT). "
            "Default: the embedded random-weight Ada-DeiT-T at 50% GMACs."
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Bundle directory [default: export/bundles/<checkpoint name>].")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17: LayerNormalization as one op).")] = 17,
    max_batch: Annotated[int, typer.Option(help="Largest batch the bundle promises (TensorRT profiles use it).")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle directory.")] = False,
    num_heads: NumHeads = None,
    token_with_mlp: TokenWithMlp = None,
    head_threshold: HeadThreshold = None,
    layer_threshold: LayerThreshold = None,
    token_threshold: TokenThreshold = None,
) -> None:
    """Trace the policy net, the pruned per-block graphs, stem, classifier and dense baseline to an ONNX bundle.

    The bundle is written atomically with a manifest (config, sha256 of every
    file, I/O signatures) and a parity report against the PyTorch model.
    """
    from .export import DEFAULT_OUT, export_bundle
    from .synthetic import EMBEDDED_DEFAULT, embedded_checkpoint

    with _errors(), console.status("exporting") as status:
        if checkpoint is None:
            status.update(f"exporting: creating the embedded default ({EMBEDDED_DEFAULT}, random weights)")
            checkpoint = embedded_checkpoint(DEFAULT_OUT)
        path = export_bundle(
            checkpoint,
            out,
            opset=opset,
            max_batch=max_batch,
            overwrite=overwrite,
            progress=lambda msg: status.update(f"exporting: {msg}"),
            num_heads=num_heads,
            token_with_mlp=token_with_mlp,
            head_threshold=head_threshold,
            layer_threshold=layer_threshold,
            token_threshold=token_threshold,
        )
    from .bundle import read_manifest
    from .cost import dense_gmacs

    manifest = read_manifest(path, verify=False)
    parity, dense = manifest.parity, dense_gmacs(manifest.model)
    console.print(f"[green]bundle written:[/] {path}")
    console.print(
        f"parity vs PyTorch on {parity['samples']} samples: decisions {parity['decision_agreement']:.2%} equal, "
        f"top-1 {parity['top1_agreement']:.2%}, max |logit diff| {parity['max_abs_logit_diff']:.2e}; "
        f"mean {parity['mean_gmacs']:.3f} GMACs ({parity['mean_gmacs'] / dense:.0%} of dense {dense:.3f})"
    )


@app.command()
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
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: one per core).")] = 0,
) -> None:
    """Run the adaptive runtime: each input takes its own pruned path; prints the top-5 or writes --output."""
    from .inputs import load_inputs
    from .runtime import load_bundle

    with _errors():
        runtime = load_bundle(bundle, threads=threads)
        images, labels = load_inputs(inputs, runtime.cfg)
        result = runtime.infer(images, batch_size=batch_size)
        if output:
            result.save(output)
            console.print(f"wrote {output}: {len(labels)} inputs, mean {result.gmacs.mean():.3f} GMACs")
            return
    names = _class_names(runtime.cfg.num_classes)
    table = Table("input", "top-5 (probability)", "GMACs")
    probs = np.exp(result.logits - result.logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for label, p, g in zip(labels, probs, result.gmacs):
        top = np.argsort(-p)[:5]
        table.add_row(label, ", ".join(f"{names(i)} ({p[i]:.2f})" for i in top), f"{g:.3f}")
    console.print(table)


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or .npy/.npz arrays to explain.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="PNG to write; with several images, one file per image named after it.")
    ] = Path("policy.png"),
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: one per core).")] = 0,
) -> None:
    """Draw, per block, the patches kept, the heads and sub-layers that ran, and the GMACs of each image."""
    from .visualize import inspect_bundle

    with _errors():
        paths = inspect_bundle(bundle, images, out, threads=threads)
    for path in paths:
        console.print(f"wrote {path}")


def _class_names(num_classes: int):
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return lambda i: info.index_to_description(int(i)).split(",")[0]
    return lambda i: f"class {int(i)}"


def main() -> None:
    app()
