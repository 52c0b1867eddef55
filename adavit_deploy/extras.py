"""Optional dependencies: what the ``export`` extra brings, and the one line when it is missing.

An inference box installs ``adavit-deploy[cpu]`` (numpy, onnxruntime, pillow,
typer, rich): ``infer``, the Python API and the runtime. Exporting, budgets,
calibration and the PyTorch reference need torch, timm and onnx, the
``export`` extra; they are imported only where used, after ``require_export``.
"""

from __future__ import annotations

import importlib

from .errors import MissingExtraError

EXPORT_MODULES = ("torch", "timm", "onnx")
EXPORT_HINT = "pip install 'adavit-deploy[export]'"


def missing_export_module() -> str | None:
    """The first of torch, timm, onnx that cannot be imported here, or ``None``."""
    for name in EXPORT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def require_export(what: str) -> None:
    """Raise the one-line ``MissingExtraError`` if ``what`` cannot run here for want of the export extra."""
    missing = missing_export_module()
    if missing is not None:
        raise MissingExtraError(f"{what} needs the export extra ({missing} is not installed): {EXPORT_HINT}")
