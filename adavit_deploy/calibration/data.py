"""Calibration sets: an image folder (flat or ImageFolder), an ``.npz``/``.npy`` array, or the demo's training digits.

What a bundle was calibrated on is part of its manifest (``calibration``):
the source, each file with its sha256, the preprocessing, the count and the
seed of the subset, so a budget or an INT8 scale can be traced to its images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import sha256
from ..config import AdaViTConfig
from ..errors import InputError, param
from ..collection import open_collection
from ..inputs import ARRAY_SUFFIXES, load_inputs

DEMO = "demo"


@dataclass
class CalibrationSet:
    images: np.ndarray  # (B, C, H, W) float32, normalised
    record: dict[str, Any] = field(default_factory=dict)


def _subset(n: int, count: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of ``count`` out of ``n`` (all of them if fewer)."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def load_calibration(source: str | Path, cfg: AdaViTConfig, count: int = 256, seed: int = 0) -> CalibrationSet:
    """Read a calibration set for a model of config ``cfg``: at most ``count`` images, a seeded subset.

    ``source``: ``"demo"`` (the demo model's training digits, disjoint from its
    held-out test set), a folder of image files (preprocessed as ``cfg``
    records; an ImageFolder tree gives a class-balanced subset, see
    ``Collection.subset``), or an ``.npz`` (key ``images``) / ``.npy`` of normalised NCHW floats.
    """
    if count < 1:
        raise InputError(f"{param('calib_count')} must be >= 1, got {count}")
    record: dict[str, Any] = {"count": 0, "seed": seed}
    if str(source) == DEMO:
        from ..demo import DEMO_CONFIG, load_digits_split

        want = (cfg.in_chans, cfg.img_size)
        if want != (DEMO_CONFIG.in_chans, DEMO_CONFIG.img_size):
            raise InputError(
                f"the demo digits are {DEMO_CONFIG.img_size}px; this model takes {cfg.img_size}px: "
                f"pass {param('calibration', 'calib')} with a folder or .npz of its own inputs"
            )
        train = load_digits_split(cfg).train_images
        idx = _subset(len(train), count, seed)
        images = train[idx]
        record["source"] = {"kind": "demo", "what": "scikit-learn digits, training split (adavit_deploy.demo)"}
        record["indices"] = idx.tolist()
        record["preprocess"] = asdict(cfg.preprocess)
    else:
        path = Path(source)
        if path.is_dir():
            collection = open_collection(path).subset(count, seed, what="calib_count")
            images = collection.read_all(cfg)
            record["source"] = {"kind": collection.kind, "path": str(path), "classes": collection.num_classes}
            record["files"] = [{"file": n, "sha256": sha256(f)} for n, f in zip(collection.names, collection.items)]
            record["preprocess"] = asdict(cfg.preprocess)
        elif path.is_file() and path.suffix in ARRAY_SUFFIXES:
            images, _ = load_inputs([path], cfg)
            idx = _subset(len(images), count, seed)
            images = images[idx]
            record["source"] = {"kind": "array", "path": str(path), "sha256": sha256(path)}
            record["indices"] = idx.tolist()
            record["preprocess"] = "none: the array holds normalised NCHW floats"
        elif not path.exists():
            raise InputError(f"{path}: no such calibration set (give a folder of images, an .npz/.npy, or 'demo')")
        else:
            raise InputError(f"{path}: a calibration set is a folder of images, an .npz/.npy array, or 'demo'")
    record["count"] = int(len(images))
    return CalibrationSet(np.ascontiguousarray(images, dtype=np.float32), record)
