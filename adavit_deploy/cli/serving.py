"""Triton Inference Server: ``triton-repo`` writes a model repository, ``serve`` runs one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .. import render
from .app import LiteralHelpCommand, _errors, app, console, err_console
from .options import BackendName, Budget, DemoBundle, Precision, option_group

if TYPE_CHECKING:
    from ..serving import RepositoryOptions


# -- Triton Inference Server (adavit_deploy/serving/) -----------------------------
ServeName = Annotated[str, typer.Option(help="Model name in the repository (the dense one gets '_dense' appended).")]
ServeMaxBatch = Annotated[int, typer.Option(help="Largest batch Triton's dynamic batcher forms.")]
ServeQueueDelay = Annotated[
    int, typer.Option(help="Microseconds the batcher may hold a request to form a larger batch.")
]
ServeInstances = Annotated[int, typer.Option(help="Model instances (each runs one batch at a time).")]
ServeThreads = Annotated[int, typer.Option(help="Intra-op threads of each instance's runtime (0: one per core).")]
ServeWithDense = Annotated[bool, typer.Option("--with-dense", help="Also serve the dense graph, as <name>_dense (A/B).")]
ServeSlo = Annotated[
    float,
    typer.Option(
        help="Latency SLO in milliseconds (0: off). Requests without a budget (or with 'auto') get the one an SLO "
        "controller picks from the measured load: native down to the cheapest calibrated budget (docs/SERVING.md)."
    ),
]
ServeMinBudget = Annotated[
    Optional[str],
    typer.Option(help="The cheapest budget the SLO controller may use [default: the bundle's cheapest].", show_default=False),
]


def _repository_options(**values: object) -> RepositoryOptions:
    from ..serving import RepositoryOptions

    return RepositoryOptions(**values)


#: The options of a served model (``triton-repo``, ``serve``): the command's ``options``, a ``RepositoryOptions``.
repository_options = option_group(
    "options",
    dict(
        name=(ServeName, "adavit"), max_batch=(ServeMaxBatch, 32), queue_delay_us=(ServeQueueDelay, 0),
        instances=(ServeInstances, 1), threads=(ServeThreads, 0), backend=(BackendName, "ort"),
        budget=(Budget, "native"), precision=(Precision, "fp32"), with_dense=(ServeWithDense, False),
        slo_ms=(ServeSlo, 0.0), min_budget=(ServeMinBudget, None),
    ),  # fmt: skip
    _repository_options,
)


@app.command("triton-repo", cls=LiteralHelpCommand)
@repository_options
def triton_repo(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory written by `export`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Repository directory to write.")],
    options: Optional["RepositoryOptions"] = None,  # the options of repository_options
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing repository directory.")] = False,
) -> None:
    """Write a Triton Inference Server model repository serving a bundle (docs/SERVING.md).

    config.pbtxt (dynamic batching, instances, the runtime's settings as
    parameters), 1/model.py (Python backend) and the bundle, verified when
    Triton loads it. Serve it with any Triton whose Python has adavit-deploy.
    """
    from ..serving import write_repository

    with _errors():
        path = write_repository(bundle, out, options, overwrite=overwrite)
    render.print_repository(console, path, options.models)


@app.command(cls=LiteralHelpCommand)
@repository_options
def serve(
    bundle: DemoBundle = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP/REST port (KServe v2 protocol).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    options: Optional["RepositoryOptions"] = None,  # the options of repository_options
) -> None:
    """Serve a bundle on Triton Inference Server, in the foreground, until Ctrl-C or SIGTERM.

    Needs the serve extra (pip install 'adavit-deploy[serve]'). The model
    repository lives in a temporary folder, removed when the server stops.
    """
    from ..bundle import resolve_bundle
    from ..serving.server import serve as run_serve

    def ready(server) -> None:
        render.print_serving(err_console, bundle, options.models, server)

    with _errors():
        bundle = resolve_bundle(bundle)
        code = run_serve(bundle, options, host, http_port, grpc_port, metrics_port, on_ready=ready)
    raise typer.Exit(code)
