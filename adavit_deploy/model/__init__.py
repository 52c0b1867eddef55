"""The AdaViT model family and its checkpoint handling."""

from .adavit import AdaBlock, AdaViT, AdaViTOutput
from .checkpoint import Checkpoint, build_model, infer_config, load_model, read_checkpoint, save_checkpoint

__all__ = [
    "AdaBlock",
    "AdaViT",
    "AdaViTOutput",
    "Checkpoint",
    "build_model",
    "infer_config",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]
