"""What the logits say: the k most probable classes of each input, and the classes' names.

numpy only (``infer`` runs on a lean install); ImageNet's names come from
timm where it is installed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def top_k(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``logits`` (N, classes): the ``k`` most probable class indices, most probable first,
    and their softmax probabilities; both (N, min(k, classes))."""
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.argsort(-probs, axis=1)[:, :k]
    return top, np.take_along_axis(probs, top, axis=1)


def class_names(num_classes: int) -> Callable[[int], str]:
    """ImageNet's class names for 1000 classes where timm is installed (the export extra), else ``class <i>``."""
    info = None
    if num_classes == 1000:
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
        except ImportError:  # a lean inference install
            pass
    if info is None:
        return lambda i: f"class {int(i)}"
    return lambda i: info.index_to_description(int(i)).split(",")[0]
