"""The library's exceptions: each message is one line that says what to fix.

Only the CLI boundary turns them into an exit code; the library never exits.
"""

import re


#: Around a parameter's name in a message (``param``): how it is named depends on who reads it.
_MARK = "\x1f"
_NAMED = re.compile(f"{_MARK}([^{_MARK}]*){_MARK}")


def param(name: str, flag: str | None = None, python: str | None = None) -> str:
    """A parameter named in a message: ``python`` (default ``name``) to a Python caller, ``--flag``
    on the command line (``flag`` defaults to ``name`` with dashes: ``num_heads`` -> ``--num-heads``)."""
    return f"{_MARK}{python or name}|{flag or name.replace('_', '-')}{_MARK}"


class _Named:
    """A message that names parameters with ``param``: ``str(e)`` says the Python parameter
    (``threads``), ``e.for_cli()`` the command-line flag (``--threads``)."""

    def __str__(self) -> str:
        return _NAMED.sub(lambda m: m.group(1).split("|")[0], super().__str__())

    def for_cli(self) -> str:
        """The message as the command line shows it: flags, not parameter names."""
        return _NAMED.sub(lambda m: "--" + m.group(1).split("|")[1], super().__str__())


class AdaViTDeployError(_Named, Exception):
    """Base class: a user-facing problem with a fix-it message."""


class ParamWarning(_Named, UserWarning):
    """A warning whose message names a parameter (``param``), shown as a flag by the CLI."""


class CheckpointError(AdaViTDeployError):
    """A checkpoint that cannot be read, is unsafe, or is not an AdaViT/DeiT."""


class ConfigError(AdaViTDeployError):
    """An architecture or flag that is inconsistent or cannot be inferred."""


class BundleError(AdaViTDeployError):
    """A bundle directory that is missing, incomplete or tampered with."""


class InputError(AdaViTDeployError):
    """Inputs of the wrong shape, type or format."""


class BackendError(AdaViTDeployError):
    """A runtime backend that is not installed or cannot run here."""


class MissingExtraError(AdaViTDeployError):
    """A feature whose optional dependencies (a pip extra) are not installed."""


class CalibrationError(AdaViTDeployError):
    """A calibration step (budgets, the INT8 rewrite) that cannot be done on this model or data."""
