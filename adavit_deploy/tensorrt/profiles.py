"""Optimization profiles from a bundle's I/O signatures (pure; no TensorRT).

Every graph of a bundle has named dynamic axes (``bundle.TensorSpec``):
``batch`` (1..max_batch), ``tokens`` (the kept tokens of a routed call, 1..N)
and ``kept_heads`` (1..H). A profile gives each input a ``(min, opt, max)``
shape. Graphs with a ``tokens`` axis (``attn_L``, ``mlp_L``) get one profile
per token bucket, so TensorRT tunes kernels for short and long calls
separately; the runtime picks the bucket per call (``select_profile``).

``opt`` sits at the top of each range (the bucket size, max batch, all heads):
the largest call of a range is where the time goes. Calibration statistics
(the budgets' calibrated edges, ``build.budget_profile_spec``) replace the
default edges (``token_buckets.py``) through ``ProfileSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..bundle import Manifest, TensorSpec, check_max_batch
from ..errors import ConfigError, InputError
from ..graphs import BATCH, TOKENS
from ..graphs import KEPT_HEADS as HEADS
from ..token_buckets import default_token_edges

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """Shapes of one input in one profile."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))



#: One optimization profile: input name -> its shape range.
Profile = dict[str, ShapeRange]


@dataclass(frozen=True)
class AxisRange:
    lo: int
    opt: int
    hi: int


@dataclass(frozen=True)
class ProfileSpec:
    """The dynamic ranges of a bundle's graphs; ``from_manifest`` gives the defaults."""

    max_batch: int
    num_tokens: int
    num_heads: int
    token_edges: tuple[int, ...]
    opt_batch: int | None = None  # default: max_batch
    opt_heads: int | None = None  # default: num_heads

    def __post_init__(self) -> None:
        check_max_batch(self.max_batch)
        edges = self.token_edges
        if not edges or list(edges) != sorted(set(edges)) or edges[0] < 1 or edges[-1] != self.num_tokens:
            raise ConfigError(f"token bucket edges {list(edges)} must rise strictly from >= 1 to N={self.num_tokens}")
        for name, value, hi in (("opt_batch", self.opt_batch, self.max_batch), ("opt_heads", self.opt_heads, self.num_heads)):
            if value is not None and not 1 <= value <= hi:
                raise ConfigError(f"{name} {value} is outside 1..{hi}")

    @classmethod
    def from_manifest(cls, manifest: Manifest, max_batch: int | None = None, **overrides) -> "ProfileSpec":
        n = manifest.model.num_tokens
        fields = dict(
            max_batch=manifest.max_batch if max_batch is None else max_batch,
            num_tokens=n,
            num_heads=manifest.model.num_heads,
            token_edges=default_token_edges(n),
        )
        return cls(**{**fields, **overrides})

    def axes(self, token_bucket: int) -> dict[str, AxisRange]:
        """Axis ranges for the ``token_bucket``-th bucket (batch and heads do not vary)."""
        lo = 1 if token_bucket == 0 else self.token_edges[token_bucket - 1] + 1
        hi = self.token_edges[token_bucket]
        return {
            BATCH: AxisRange(1, self.opt_batch or self.max_batch, self.max_batch),
            TOKENS: AxisRange(lo, hi, hi),
            HEADS: AxisRange(1, self.opt_heads or self.num_heads, self.num_heads),
        }


def graph_profiles(inputs: Sequence[TensorSpec], spec: ProfileSpec, graph: str = "graph") -> list[Profile]:
    """The profiles of one graph: one per token bucket if an input has a ``tokens`` axis, else one."""
    dynamic = {d for t in inputs for d in t.shape if isinstance(d, str)}
    unknown = dynamic - {BATCH, TOKENS, HEADS}
    if unknown:
        raise ConfigError(f"{graph}: dynamic axes {sorted(unknown)} have no profile range; re-export the bundle")
    buckets = range(len(spec.token_edges)) if TOKENS in dynamic else range(1)
    profiles = []
    for b in buckets:
        axes = spec.axes(b)
        profile = {}
        for t in inputs:
            dims = [axes[d] if isinstance(d, str) else AxisRange(d, d, d) for d in t.shape]
            profile[t.name] = ShapeRange(
                tuple(a.lo for a in dims), tuple(a.opt for a in dims), tuple(a.hi for a in dims)
            )
        profiles.append(profile)
    return profiles


def select_profile(profiles: Sequence[Profile], shapes: dict[str, Sequence[int]], graph: str = "graph") -> int:
    """Index of the first profile whose ranges hold every input shape (a call's token bucket)."""
    for i, profile in enumerate(profiles):
        if all(name in profile and profile[name].contains(shape) for name, shape in shapes.items()):
            return i
    got = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
    raise InputError(f"{graph}: no TensorRT optimization profile holds inputs {got}: rebuild with `adavit-deploy build-trt`")


def max_batch_of(profiles: Sequence[Profile], batched: Iterable[str]) -> int:
    """The largest batch every profile accepts for the ``batched`` inputs."""
    batched = list(batched)
    if not batched:
        return 0
    return min(p[name].max[0] for p in profiles for name in batched)


def split_batch(feed: dict[str, np.ndarray], batched: Iterable[str], size: int) -> list[dict[str, np.ndarray]]:
    """Cut ``feed`` into chunks of at most ``size`` along axis 0 of the ``batched`` inputs.

    Inputs without a batch axis (``heads``) go to every chunk unchanged.
    """
    batched = [n for n in batched if n in feed]
    if size < 1:
        raise InputError(f"chunk size must be >= 1, got {size}")
    if not batched:
        return [feed]
    total = len(feed[batched[0]])
    if any(len(feed[n]) != total for n in batched):
        raise InputError(f"inputs {batched} disagree on the batch size: {[len(feed[n]) for n in batched]}")
    return [
        {k: (v[i : i + size] if k in batched else v) for k, v in feed.items()} for i in range(0, max(total, 1), size)
    ]
