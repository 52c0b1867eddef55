"""The library's exceptions: each message is one line that says what to fix.

Only the CLI boundary turns them into an exit code; the library never exits.
"""


class AdaViTDeployError(Exception):
    """Base class: a user-facing problem with a fix-it message."""


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
