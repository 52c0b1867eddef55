"""adavit-deploy: exact, fast deployment of AdaViT checkpoints."""

from .config import AdaViTConfig, Thresholds, preset
from .errors import AdaViTDeployError

__version__ = "0.1.0"

__all__ = ["AdaViTConfig", "AdaViTDeployError", "Thresholds", "__version__", "preset"]
