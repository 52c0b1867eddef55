"""Token buckets: ranges of kept-token counts that routed calls are grouped into (pure; no TensorRT).

A routed ``attn_L`` / ``mlp_L`` call keeps K of the N tokens. Budgets record
the bucket edges their calibration set produced (``calibration/budgets.py``),
and TensorRT builds one optimization profile per bucket
(``tensorrt/profiles.py``); both read the edges from here, so calibrating a
budget needs no TensorRT.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from .errors import ConfigError


def default_token_edges(num_tokens: int, buckets: int = 4) -> tuple[int, ...]:
    """Upper edges of ``buckets`` equal-width token buckets over 1..N (last edge N)."""
    if num_tokens < 1 or buckets < 1:
        raise ConfigError(f"token buckets need N >= 1 and >= 1 bucket, got N={num_tokens}, buckets={buckets}")
    return tuple(sorted({max(1, math.ceil(num_tokens * (i + 1) / buckets)) for i in range(buckets)}))


def buckets_from_counts(counts: Iterable[int], num_tokens: int, buckets: int = 4) -> tuple[int, ...]:
    """Bucket edges at the quantiles of observed kept-token counts per call.

    ``counts``: the token width K of routed calls measured on a calibration set.
    Each bucket then holds about the same number of calls; the last edge is
    always N, so every shape stays covered.
    """
    counts = np.asarray(list(counts), dtype=np.int64)
    if counts.size == 0:
        return default_token_edges(num_tokens, buckets)
    if counts.min() < 1 or counts.max() > num_tokens:
        raise ConfigError(f"kept-token counts must lie in 1..{num_tokens}, got {counts.min()}..{counts.max()}")
    qs = np.quantile(counts, [(i + 1) / buckets for i in range(buckets - 1)], method="higher")
    return tuple(sorted({int(q) for q in qs} | {num_tokens}))
