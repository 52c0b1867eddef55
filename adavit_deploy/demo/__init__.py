"""The embedded demo model: a small AdaViT trained on real handwritten digits.

No AdaViT weights can be downloaded on our machines, so the default model is
trained here (``python -m adavit_deploy.demo.train``) on scikit-learn's
digits (1,797 real 8x8 scans), each pasted at a random position and scale on
a larger black canvas: where the digit is varies per image, so the policy has
background to drop. Its decisions are learned: which patches, which heads and
sub-layers each image needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..config import AdaViTConfig
from ..errors import AdaViTDeployError

#: Architecture of the demo model: a 48 px canvas in 6x6 patches of 8 px.
DEMO_CONFIG = AdaViTConfig.from_flags(
    img_size=48, patch_size=8, embed_dim=64, depth=6, num_heads=4, mlp_hidden=256, num_classes=10
)
CHECKPOINT_NAME = "ada_digits.pth"
TEST_SIZE = 360  # held out, fixed by SPLIT_SEED
SPLIT_SEED = 0
CANVAS = 48  # px of the pasted images (the eval transform then crops 90% of 53 px)
DIGIT_SIZES = (16, 28)  # px side of a pasted digit, inclusive
MARGIN = 3  # px kept clear at the edges, so the eval transform's crop never cuts a digit
INK = 0.5  # normalised units above the background that count as the digit's ink


@dataclass
class DigitsSplit:
    train_raw: np.ndarray  # (N, 8, 8) uint8 scans: training pastes them anew each epoch
    train_labels: np.ndarray
    test_images: np.ndarray  # (M, 3, 48, 48) float32, normalised
    test_labels: np.ndarray
    test_canvases: np.ndarray  # (M, 48, 48) uint8, for saving as image files
    cfg: AdaViTConfig
    train_paste: dict  # the seeded generator's state for the one paste of ``train_images``

    @functools.cached_property
    def train_images(self) -> np.ndarray:
        """(N, 3, 48, 48) float32, normalised: one seeded paste (calibration data), made on first use
        (training pastes anew each epoch and evaluation reads the test split: neither needs it)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.train_paste
        return transform_canvases(paste_digits(self.train_raw, rng), self.cfg)


def paste_digits(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 8, 8) uint8 scans -> (N, CANVAS, CANVAS) uint8, each at a random scale and position."""
    from PIL import Image

    out = np.zeros((len(raw), CANVAS, CANVAS), np.uint8)
    for canvas, scan in zip(out, raw):
        size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
        top, left = rng.integers(MARGIN, CANVAS - MARGIN - size + 1, size=2)
        canvas[top : top + size, left : left + size] = np.asarray(Image.fromarray(scan).resize((size, size), Image.BILINEAR))
    return out


def transform_canvases(canvases: np.ndarray, cfg: AdaViTConfig = DEMO_CONFIG) -> np.ndarray:
    """The same eval transform a user's image goes through: (N, H, W) uint8 -> (N, 3, S, S) float32."""
    from PIL import Image

    from ..inputs import eval_transform

    transform = eval_transform(cfg)
    return np.stack([transform(Image.fromarray(c).convert("RGB")) for c in canvases])


def load_digits_split(cfg: AdaViTConfig = DEMO_CONFIG) -> DigitsSplit:
    """scikit-learn's digits, split once; the held-out ones pasted once (seeded) and transformed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AdaViTDeployError("the digits data needs scikit-learn: pip install 'adavit-deploy[demo]'") from None

    digits = load_digits()
    raw = np.round(digits.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(raw))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    labels = digits.target.astype(np.int64)
    canvases = paste_digits(raw[test], rng)
    return DigitsSplit(
        raw[train], labels[train], transform_canvases(canvases, cfg), labels[test], canvases, cfg, rng.bit_generator.state
    )


def digit_patches(images: np.ndarray, cfg: AdaViTConfig = DEMO_CONFIG) -> np.ndarray:
    """(N, P) bool: the patches that overlap the bounding box of each image's digit (its ink).

    Measured on the transformed images, so it is the model's own patch grid.
    """
    background = (0.0 - cfg.preprocess.mean[0]) / cfg.preprocess.std[0]
    ink = images[:, 0] > background + INK
    grid, p = cfg.img_size // cfg.patch_size, cfg.patch_size
    out = np.zeros((len(images), grid, grid), bool)
    for mask, box in zip(ink, out):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box[rows[0] // p : rows[-1] // p + 1, cols[0] // p : cols[-1] // p + 1] = True
    return out.reshape(len(images), -1)


def demo_checkpoint() -> Path:
    """Path of the shipped demo checkpoint."""
    path = Path(str(resources.files(__package__) / CHECKPOINT_NAME))
    if not path.is_file():
        raise AdaViTDeployError(f"the demo checkpoint {path} is missing: run `python -m adavit_deploy.demo.train`")
    return path


def is_demo(cfg: AdaViTConfig) -> bool:
    """Whether ``cfg`` is the demo model's architecture (at any budget's thresholds)."""
    return cfg.replace(thresholds=DEMO_CONFIG.thresholds) == DEMO_CONFIG


def sample_images() -> list[Path]:
    """The shipped sample digits, one per class: inputs for ``infer`` and ``inspect``."""
    return sorted(Path(str(resources.files(__package__) / "samples")).glob("digit_*.png"))
