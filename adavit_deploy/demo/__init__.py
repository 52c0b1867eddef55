"""The embedded demo model: a small AdaViT trained on real handwritten digits.

No AdaViT weights can be downloaded on our machines, so the default model is
trained here (``python -m adavit_deploy.demo.train``) on scikit-learn's
digits (1,797 real 8x8 scans, upscaled by the same eval transform a user's
image goes through) and shipped in the package. Its decisions are learned:
which patches of the digit, which heads and sub-layers each image needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import AdaViTConfig
from ..errors import AdaViTDeployError

#: Architecture of the demo model: one patch per original digit pixel.
DEMO_CONFIG = AdaViTConfig.from_flags(
    img_size=32, patch_size=4, embed_dim=64, depth=6, num_heads=4, mlp_hidden=256, num_classes=10
)
CHECKPOINT_NAME = "ada_digits.pth"
TEST_SIZE = 360  # held out, fixed by SPLIT_SEED
SPLIT_SEED = 0


def demo_checkpoint() -> Path:
    """Path of the shipped demo checkpoint."""
    path = Path(str(resources.files(__package__) / CHECKPOINT_NAME))
    if not path.is_file():
        raise AdaViTDeployError(f"the demo checkpoint {path} is missing: run `python -m adavit_deploy.demo.train`")
    return path


@dataclass
class DigitsSplit:
    train_images: np.ndarray  # (N, 3, 32, 32) float32, normalised
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_raw: np.ndarray  # (M, 8, 8) uint8 scans, for saving as image files


def load_digits_split(cfg: AdaViTConfig = DEMO_CONFIG) -> DigitsSplit:
    """scikit-learn's digits as 8-bit images through ``cfg``'s eval transform, split once."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AdaViTDeployError("the digits data needs scikit-learn: pip install 'adavit-deploy[demo]'") from None
    from PIL import Image

    from ..inputs import eval_transform

    digits = load_digits()
    raw = np.round(digits.images * (255 / 16)).astype(np.uint8)
    transform = eval_transform(cfg)
    images = np.stack([transform(Image.fromarray(r).convert("RGB")) for r in raw])
    order = np.random.default_rng(SPLIT_SEED).permutation(len(raw))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    labels = digits.target.astype(np.int64)
    return DigitsSplit(images[train], labels[train], images[test], labels[test], raw[test])


def save_digit_images(directory: str | Path) -> list[Path]:
    """Write the first held-out digit of each class as a PNG (the shipped ``samples/``)."""
    from PIL import Image

    split = load_digits_split()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in range(10):
        i = int(np.flatnonzero(split.test_labels == label)[0])
        path = directory / f"digit_{label}.png"
        Image.fromarray(split.test_raw[i]).save(path)
        paths.append(path)
    return paths


def sample_images() -> list[Path]:
    """The shipped sample digits, one per class: inputs for ``infer`` and ``inspect``."""
    return sorted(Path(str(resources.files(__package__) / "samples")).glob("digit_*.png"))
