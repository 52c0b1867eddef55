"""Turning user inputs (image files, ``.npy``/``.npz`` arrays) into one NCHW batch.

Images go through the eval transform the manifest records (timm's
``create_transform``: resize, center crop, bicubic, normalise); arrays are
taken as already normalised. Every input is read and checked before anything
runs, so a bad file fails fast and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import AdaViTConfig
from .errors import InputError

ARRAY_SUFFIXES = (".npy", ".npz")


def eval_transform(cfg: AdaViTConfig):
    """timm's eval transform for the preprocessing ``cfg`` records (PIL image -> normalised CHW)."""
    from timm.data import create_transform

    p = cfg.preprocess
    return create_transform(
        input_size=(cfg.in_chans, cfg.img_size, cfg.img_size),
        interpolation=p.interpolation,
        crop_pct=p.crop_pct,
        mean=p.mean,
        std=p.std,
    )


def _read_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable numpy file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if "images" not in data.files:
                raise InputError(f"{path}: no 'images' array (found {', '.join(data.files) or 'none'})")
            data = data["images"]
    return data[None] if data.ndim == 3 else data


def _read_image(path: Path, transform) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return transform(im.convert("RGB")).numpy()[None]
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not an image file ({type(e).__name__})") from None


def load_inputs(paths: list[Path], cfg: AdaViTConfig) -> tuple[np.ndarray, list[str]]:
    """A float32 ``(B, C, H, W)`` batch and one label per sample (file or file[i])."""
    if not paths:
        raise InputError("no inputs given")
    want = (cfg.in_chans, cfg.img_size, cfg.img_size)
    arrays, labels, transform = [], [], None
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if path.suffix in ARRAY_SUFFIXES:
            batch = _read_array(path)
            if batch.ndim != 4 or batch.shape[1:] != want or not np.issubdtype(batch.dtype, np.floating):
                raise InputError(
                    f"{path}: images must be float arrays of shape (B, {', '.join(map(str, want))}); "
                    f"got {batch.dtype} {batch.shape}"
                )
            labels += [f"{path.name}[{i}]" for i in range(len(batch))] if len(batch) > 1 else [path.name]
        else:
            if cfg.in_chans != 3:
                raise InputError(f"{path}: image files need a 3-channel model; pass a .npy/.npz array")
            transform = transform or eval_transform(cfg)
            batch = _read_image(path, transform)
            labels.append(path.name)
        arrays.append(batch.astype(np.float32, copy=False))
    return np.concatenate(arrays), labels
