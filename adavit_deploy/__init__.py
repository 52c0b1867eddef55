"""adavit-deploy: exact, fast deployment of AdaViT checkpoints."""

__version__ = "0.1.0"

from .config import AdaViTConfig, Thresholds, preset  # noqa: E402
from .errors import AdaViTDeployError  # noqa: E402
from .runtime import load_bundle  # noqa: E402
from .runtime.backends.ort import use_process_pool  # noqa: E402

__all__ = ["AdaViTConfig", "AdaViTDeployError", "Thresholds", "__version__", "load_bundle", "preset", "use_process_pool"]
