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


def main() -> None:
    app()
