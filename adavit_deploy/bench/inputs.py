"""The benchmark's inputs: batch sizes normalised once, the input pool in memory, batches cut from it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..lists import positive_ints
from ..runtime import AdaptiveRuntime

DEFAULT_BATCH_SIZES = (1, 16)
#: Random inputs when no --images: at least this many, so batches differ and decisions vary.
DEFAULT_SAMPLES = 32
#: At most this many images of a folder or array are held in memory (a seeded random subset: no labels
#: are read): enough for routing to vary as it does on the whole, and an ImageNet folder does not fill
#: the machine.
MAX_POOL = 256


def parse_batch_sizes(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"1,16"`` (or ints) -> ``(1, 16)``: positive, duplicates dropped, order kept."""
    return positive_ints(value, "batch_sizes", "1,16")


def load_pool(
    images: str | Path | np.ndarray | None, rt: AdaptiveRuntime, samples: int, seed: int = 0
) -> tuple[np.ndarray, str]:
    """The benchmark inputs, all in memory: ``(N, C, H, W)`` float32 and where they came from
    (a folder or array: at most ``MAX_POOL`` of its images).

    None given: the demo's sample digits for the demo model (noise would route
    unlike any digit), else ``samples`` seeded normal ones.
    """
    from ..collection import open_files
    from ..demo import is_demo, sample_images
    from ..inputs import load_inputs, seeded_noise

    cfg = rt.cfg
    if images is None and is_demo(cfg):
        return load_inputs(sample_images(), cfg)[0], "the demo's sample digits"
    if images is None:
        return seeded_noise((cfg.in_chans, cfg.img_size, cfg.img_size), samples, seed)
    if isinstance(images, np.ndarray):
        return rt.check_images(images), "array"

    collection = open_files([Path(images)])
    subset = collection.subset(MAX_POOL, seed, what=None)
    capped = f" ({len(subset)} of its {len(collection)} images, seeded)" if len(subset) < len(collection) else ""
    return subset.read_all(cfg), f"{images}{capped}"


def cycled_batches(pool: np.ndarray, batch_size: int, count: int) -> list[np.ndarray]:
    """The first ``count`` distinct batches of ``pool`` read as an endless cycle (contiguous copies)."""
    n = len(pool)
    distinct = n // np.gcd(n, batch_size)  # after this many batches the cycle repeats
    return [np.ascontiguousarray(pool[(k * batch_size + np.arange(batch_size)) % n]) for k in range(min(count, distinct))]
