"""The ``adavit-deploy`` command line: thin Typer wrappers over the library.

``app.py`` is the program (the Typer app, consoles, the one-line error boundary),
``options.py`` the options several commands share; the commands, one module per
group: ``models`` (info, export), ``inference`` (infer, inspect, evaluate), ``trt``
(build-trt), ``timing`` (bench, bench-server, tune), ``serving`` (triton-repo, serve).
"""

from . import models, inference, trt, timing, serving  # noqa: F401, I001  (registers the commands, in the order --help lists them)
from .app import _state, app, console, err_console, main

__all__ = ["_state", "app", "console", "err_console", "main"]
