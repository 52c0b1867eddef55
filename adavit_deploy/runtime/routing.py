"""Routing: group the samples of a batch by execution path (pure numpy).

A *path* for one stage of one block is the set of kept heads; samples that
share it run in one call on a dense ``(G, K, C)`` tensor of their kept
tokens. Token counts differ between samples, so a group is padded to its
longest member (padded keys are masked with -inf: exact) and split where the
padding would waste more than ``max_pad`` of the group's work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Group:
    """Samples that run one graph call together."""

    samples: np.ndarray  # (G,) indices into the batch
    heads: np.ndarray  # (k,) int64 kept head indices
    tokens: list[np.ndarray]  # per sample, kept token indices (class token first)

    @property
    def width(self) -> int:
        return max(len(t) for t in self.tokens)

    @property
    def padding(self) -> int:
        """Padded token slots in this call."""
        return self.width * len(self.tokens) - sum(len(t) for t in self.tokens)


def route(active: np.ndarray, heads: np.ndarray, tokens: np.ndarray, max_pad: float = 0.125) -> list[Group]:
    """Group the ``active`` samples by kept-head set, then by token count.

    ``active`` (B,) bool: the stage runs for this sample; ``heads`` (B,H) bool;
    ``tokens`` (B,N) bool. Within a head set, samples are sorted by token
    count and cut into runs whose padding stays under ``max_pad`` of the run.
    """
    by_heads: dict[bytes, list[int]] = {}
    for s in np.flatnonzero(active):
        by_heads.setdefault(heads[s].tobytes(), []).append(int(s))
    groups = []
    for members in by_heads.values():
        head_idx = np.flatnonzero(heads[members[0]]).astype(np.int64)
        counts = tokens[members].sum(axis=1)
        order = [members[i] for i in np.argsort(-counts, kind="stable")]
        run: list[int] = []
        for s in order:
            candidate = run + [s]
            width = tokens[candidate[0]].sum()
            used = tokens[candidate].sum()
            if run and 1 - used / (width * len(candidate)) > max_pad:
                groups.append(_group(run, head_idx, tokens))
                candidate = [s]
            run = candidate
        groups.append(_group(run, head_idx, tokens))
    return groups


def _group(samples: list[int], heads: np.ndarray, tokens: np.ndarray) -> Group:
    return Group(np.asarray(samples), heads, [np.flatnonzero(tokens[s]) for s in samples])


def gather(x: np.ndarray, group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Kept tokens of the group's samples as ``(G, K, C)`` plus the key bias ``(G, K)``."""
    if len(group.samples) == 1:  # the common case at small batch: no padding, one fancy index
        t = group.tokens[0]
        return x[group.samples[0], t][None], np.zeros((1, len(t)), np.float32)
    G, K, C = len(group.samples), group.width, x.shape[-1]
    out = np.zeros((G, K, C), dtype=x.dtype)
    bias = np.full((G, K), -np.inf, dtype=np.float32)
    for i, (s, t) in enumerate(zip(group.samples, group.tokens)):
        out[i, : len(t)] = x[s, t]
        bias[i, : len(t)] = 0.0
    return out, bias


def scatter(x: np.ndarray, group: Group, values: np.ndarray) -> None:
    """Write the group's results back into the full token buffer, in place."""
    for i, (s, t) in enumerate(zip(group.samples, group.tokens)):
        x[s, t] = values[i, : len(t)]
