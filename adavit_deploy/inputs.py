"""Turning user inputs (image files, ``.npy``/``.npz`` arrays) into one NCHW batch.

Images go through the eval transform the manifest records: timm's
``create_transform`` for evaluation (resize, center crop, normalise),
reproduced here with Pillow and numpy alone so that an inference box needs no
torch. Arrays are taken as already normalised. Every input is read and
checked (readable, right shape, finite) before anything runs, so a bad file
fails fast, with one line naming it, and nothing is written.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .config import AdaViTConfig
from .errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

ARRAY_SUFFIXES = (".npy", ".npz")
#: What counts as an image file in a folder (``collection.py``: every command that reads one): a fixed
#: list, like timm's ``get_img_extensions``, rather than every format Pillow registers (that
#: includes .pdf, .eps, .h5...), so which files of a folder are read never depends on the Pillow build.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
#: Pillow modes whose own ``convert("RGB")`` is right (8 bits per channel); alpha is dropped.
RGB_CONVERTIBLE = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
#: What a truncated or corrupt .npy/.npz raises inside ``np.load`` (EOFError: a 0-byte file).
_ARRAY_ERRORS = (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error)


def is_image_file(path: Path) -> bool:
    """A visible file with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


# -- arrays ---------------------------------------------------------------------------


def read_array(path: Path, key: str = "images") -> np.ndarray:
    """The array of a ``.npy``, or array ``key`` of a ``.npz``; a one-line error for anything unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return data
        with data:
            if key not in data.files:
                raise InputError(f"{path}: no {key!r} array (found {', '.join(data.files) or 'none'})")
            return data[key]
    except _ARRAY_ERRORS as e:
        raise InputError(f"{path}: not a readable numpy file ({type(e).__name__}: {e})") from None


def sample_labels(path: Path, count: int) -> list[str]:
    """One label per sample of a file: its name, or ``name[i]`` when it holds several."""
    return [f"{path.name}[{i}]" for i in range(count)] if count > 1 else [path.name]


def seeded_noise(shape: tuple[int, ...], count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` seeded standard-normal inputs of ``shape`` (C, H, W) and how to name them: the
    inputs of a measurement given none (bench, tune, the serving load, a parity check)."""
    images = np.random.default_rng(seed).standard_normal((count, *shape), dtype=np.float32)
    return images, f"random normal (seed {seed})"


def check_finite(images: np.ndarray, labels: Sequence[str] | None = None) -> None:
    """Refuse a batch holding NaN or Inf, naming the samples (``labels``, else their indices).

    Worth its cost (one vectorised pass: about 1 ms for 16 images of 224 px;
    0.4% of a batch-16 call of even the 3-block, 32 px test model): a NaN
    probability never passes a threshold (``p > t`` is False), so a
    non-finite sample would have every head, sub-layer and token dropped and
    come out with finite, confident logits of an almost empty network, while
    the reference model and the dense graph give NaN.
    """
    finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    names = [labels[i] if labels else f"#{i}" for i in bad]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise InputError(f"NaN or Inf values in {len(bad)} of {len(images)} inputs ({shown}): fix or drop them")


def read_images(path: Path, want: tuple[int, int, int] | None = None) -> np.ndarray:
    """The float32 NCHW batch of a ``.npy`` or of a ``.npz``'s ``images`` (one CHW image: a batch of one),
    checked: float, ``(B, *want)`` where given, finite."""
    batch = read_array(path)
    batch = batch[None] if batch.ndim == 3 else batch
    if batch.ndim != 4 or (want and batch.shape[1:] != want) or not np.issubdtype(batch.dtype, np.floating):
        shape = ", ".join(map(str, want)) if want else "C, H, W"
        raise InputError(f"{path}: images must be float arrays of shape (B, {shape}); got {batch.dtype} {batch.shape}")
    if len(batch) == 0:
        raise InputError(f"{path}: holds no images")
    with np.errstate(over="ignore"):  # a float64 of 1e39 becomes Inf: check_finite names it
        batch = batch.astype(np.float32, copy=False)
    check_finite(batch, sample_labels(path, len(batch)))
    return batch


# -- image files --------------------------------------------------------------------------


def to_rgb(im: Image) -> Image:
    """``im`` as 8-bit RGB, what the eval transform (like timm's loader) takes. Per Pillow mode:

    - 8-bit modes (``RGB_CONVERTIBLE``: 1, L, LA, La, P, PA, RGB, RGBA, RGBa,
      RGBX, CMYK, YCbCr, LAB, HSV): Pillow's own conversion; alpha is dropped,
      as timm's loader (``convert("RGB")``) does;
    - 16-bit grayscale (I;16, I;16L, I;16B, I;16N), and 32-bit integer I
      (how Pillow opens 16-bit PNG/TIFF/PPM grayscale in some versions): the
      full 16-bit range 0..65535 maps onto 0..255, rounded (``v / 257``); I
      values outside 0..65535 are refused;
    - 32-bit float F: values in [0, 1] map onto 0..255, rounded; others (NaN,
      a 0..255 float image) are refused, their scale being unknowable.

    Pillow's own conversion would saturate 16-bit images to white and clip a
    0..1 float image to black. Any other mode is refused, naming it.
    """
    from PIL import Image

    mode = im.mode
    if mode in RGB_CONVERTIBLE:
        return (im.convert("LA") if mode == "La" else im).convert("RGB")  # Pillow has no La -> RGB
    if mode == "I" or mode.startswith("I;16"):
        v = np.asarray(im)
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi > 65535:
            raise InputError(
                f"mode {mode} image with values {lo}..{hi}: only 0..65535 (16-bit) is read; save it as 8- or 16-bit"
            )
        gray = ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535), no ties
    elif mode == "F":
        v = np.asarray(im, np.float64)
        if not (np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1):
            raise InputError(
                f"mode F (32-bit float) image with values in [{v.min():g}, {v.max():g}]: "
                "only floats in [0, 1] are read; save it as 8- or 16-bit"
            )
        gray = np.rint(v * 255).astype(np.uint8)
    else:
        raise InputError(f"Pillow image mode {mode!r} is not supported: save it as 8-bit RGB or grayscale")
    return Image.fromarray(gray).convert("RGB")


def eval_transform(cfg: AdaViTConfig) -> Callable[[Image], np.ndarray]:
    """timm's eval transform for ``cfg.preprocess``, without torch: 8-bit RGB PIL image -> normalised CHW float32.

    Exactly ``timm.data.create_transform(input_size, crop_pct, interpolation,
    mean, std)`` (``transforms_imagenet_eval``, crop mode ``center``), step by
    step as torchvision runs it on a PIL image: ``Resize(floor(img_size /
    crop_pct))`` scales the shorter side to that size and the longer to
    ``int(size * long / short)`` with Pillow's filter (antialiased, as Pillow
    always is); ``CenterCrop(img_size)`` cuts at ``round((side - img_size) /
    2)`` (Python's round, half to even); ``ToTensor`` divides by 255 and
    ``Normalize`` computes ``(x - mean) / std``, all in float32.
    ``tests/test_inputs.py`` checks it bitwise against timm. ``crop_pct <= 1``
    (a ``Preprocess`` invariant) means the resized image always covers the crop.
    """
    from PIL import Image

    p, size = cfg.preprocess, cfg.img_size
    resample = Image.Resampling[p.interpolation.upper()]  # one of config.INTERPOLATIONS
    scale = math.floor(size / p.crop_pct)
    mean = np.asarray(p.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(p.std, np.float32).reshape(-1, 1, 1)

    def transform(im: Image) -> np.ndarray:
        w, h = im.size
        short, long = (w, h) if w <= h else (h, w)
        resized = (scale, int(scale * long / short)) if w <= h else (int(scale * long / short), scale)
        if resized != (w, h):
            im = im.resize(resized, resample)
            w, h = resized
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
        x = np.asarray(im, np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (x - mean) / std

    return transform


def read_image(path: Path) -> Image:
    """An image file as 8-bit RGB (``to_rgb``); one line for what Pillow cannot or must not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise InputError("is empty (0 bytes)")
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: refused: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt (Pillow raises all of these)
        raise InputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def load_inputs(paths: list[Path], cfg: AdaViTConfig) -> tuple[np.ndarray, list[str]]:
    """A float32 ``(B, C, H, W)`` batch and one label per sample (file or file[i])."""
    if not paths:
        raise InputError("no inputs given")
    want = (cfg.in_chans, cfg.img_size, cfg.img_size)
    arrays, labels, transform = [], [], None
    for path in map(Path, paths):
        if path.is_dir():
            raise InputError(f"{path}: is a directory: pass the files in it (e.g. {path}/*.png)")
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise InputError(f"{path}: is empty (0 bytes)")
        if path.suffix in ARRAY_SUFFIXES:
            batch = read_images(path, want)
            labels += sample_labels(path, len(batch))
        else:
            if cfg.in_chans != 3:
                raise InputError(f"{path}: image files need a 3-channel model; pass a .npy/.npz array")
            transform = transform or eval_transform(cfg)
            batch = transform(read_image(path))[None]
            labels.append(path.name)
        arrays.append(batch)
    return np.concatenate(arrays), labels
