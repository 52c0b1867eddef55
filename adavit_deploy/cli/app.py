"""The ``adavit-deploy`` program itself: the Typer app, its consoles and the one-line error boundary.

Every command (``models``, ``inference``, ``trt``, ``timing``, ``serving``) hands off to
one library function; what is shared lives here: library errors become one line on stderr
with exit code 1 (a traceback only with ``--debug``), warnings one line each, progress bars,
and the process ownership of ONNX Runtime when run as the program.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..errors import AdaViTDeployError, ParamWarning


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
        from ..runtime.backends.ort import use_process_pool

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
            err_console.print(f"[bold red]error:[/] {escape(e.for_cli())}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            # the library writes its outputs atomically, at the end: an interrupted run leaves none
            err_console.print("[bold red]interrupted:[/] nothing was written", highlight=False)
            raise typer.Exit(130) from None


def _print_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None, line: str | None = None
) -> None:
    """``warnings.showwarning`` for a command: the message alone, escaped (it holds user paths)."""
    text = message.for_cli() if isinstance(message, ParamWarning) else str(message)
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


@contextmanager
def _progress(prefix: str = "", images: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A transient progress bar, as the library's ``progress(what, done, total)`` callback; ``images``:
    ``done`` counts images, and the bar shows images/s and the time left.

    Disabled when stdout is not a terminal: a pipe or a file gets the
    results only (an enabled bar leaves a blank line there, even before an error).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    if images:
        columns += (TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(escape(prefix), total=None, rate="")

        def update(what: str, done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            rate = f"{speed:.1f} images/s" if images and speed else ""
            bar.update(task, description=escape(prefix + what), completed=done, total=total or None, rate=rate)

        yield update


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



def main() -> None:
    """The console script: the program owns its process (``_own_onnxruntime``)."""
    _state["owns_process"] = True
    app()
