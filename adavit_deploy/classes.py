"""What the logits say: the k most probable classes of each input, and the classes' names.

numpy only (``infer`` runs on a lean install); ImageNet's names come from
timm's data files where timm is installed, read without importing timm (which
imports torch: 3.6 s and 620 MiB more for a one-image ``infer``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np


def top_k(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``logits`` (N, classes): the ``k`` most probable class indices, most probable first,
    and their softmax probabilities; both (N, min(k, classes))."""
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.argsort(-probs, axis=1)[:, :k]
    return top, np.take_along_axis(probs, top, axis=1)


def _timm_info(name: str) -> str | None:
    """One of timm's ``data/_info`` files, read without importing timm (``find_spec`` locates a
    package without running it); None without timm or where its layout differs."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        return (Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name).read_text()
    except OSError:
        return None


def imagenet_synsets() -> list[str] | None:
    """ImageNet-1k's WordNet ids in class-index order (sorted: the order of its 1000 class folders)."""
    text = _timm_info("imagenet_synsets.txt")
    synsets = text.split() if text else []
    return synsets if len(synsets) == 1000 else None


def _imagenet_lemmas() -> list[str] | None:
    """The first lemma of each ImageNet-1k class, in class order."""
    synsets, text = imagenet_synsets(), _timm_info("imagenet_synset_to_lemma.txt")
    if synsets is None or text is None:
        return None
    lemmas = dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    if not all(s in lemmas for s in synsets):
        return None
    return [lemmas[s].split(",")[0] for s in synsets]


def class_names(num_classes: int) -> Callable[[int], str]:
    """ImageNet's class names for 1000 classes where timm is installed (the export extra), else ``class <i>``."""
    names = _imagenet_lemmas() if num_classes == 1000 else None
    if names is None:
        return lambda i: f"class {int(i)}"
    return lambda i: names[int(i)]
