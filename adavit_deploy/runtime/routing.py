"""Routing: group the samples of a batch by execution path (pure numpy).

A *path* for one stage of one block is the set of kept heads and the tactic
that runs it (``tactics.py``): samples that share it run in one call on a
dense ``(G, K, C)`` tensor of their kept tokens. The ``masked`` tactic takes
every head set in one call, so its samples share one path. Token counts
differ between samples, so a group is padded to its longest member (padded
keys are masked with -inf: exact) and split where the padding would waste
more than ``max_pad`` of the group's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoutingStats:
    """How the batch was split: graph calls, and token slots computed vs padded."""

    calls: int = 0
    constant_adds: int = 0
    token_slots: int = 0
    padded_slots: int = 0
    paths: dict[str, int] = field(default_factory=dict)  # "block:stage:heads" (or "...:masked") -> samples
    tactics: dict[str, int] = field(default_factory=dict)  # tactic -> graph calls

    def merge(self, other: "RoutingStats") -> None:
        self.calls += other.calls
        self.constant_adds += other.constant_adds
        self.token_slots += other.token_slots
        self.padded_slots += other.padded_slots
        for mine, theirs in ((self.paths, other.paths), (self.tactics, other.tactics)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    @property
    def padding_waste(self) -> float:
        return self.padded_slots / self.token_slots if self.token_slots else 0.0


@dataclass
class Group:
    """Samples that run one graph call together.

    ``index`` (G, K) holds each slot's row in the flattened ``(B*N, C)``
    token buffer; padding slots repeat the sample's class token (any finite
    row does: padded keys are masked and padded outputs are never written back).
    """

    samples: np.ndarray  # (G,) indices into the batch
    heads: np.ndarray  # (k,) int64 kept head indices of the first sample (every sample's, on a gather path)
    index: np.ndarray  # (G, K) int64 rows of the flattened token buffer
    valid: np.ndarray  # (G, K) bool, False on padding

    @property
    def padding(self) -> int:
        """Padded token slots in this call."""
        return int(self.valid.size - self.valid.sum())


def route(
    active: np.ndarray, heads: np.ndarray, tokens: np.ndarray, paths: np.ndarray | None = None, max_pad: float = 0.125
) -> list[Group]:
    """Group the ``active`` samples by path, then by token count.

    ``active`` (B,) bool: the stage runs for this sample; ``heads`` (B,H) bool;
    ``tokens`` (B,N) bool; ``paths`` (B, m): samples with equal rows share a
    path (default: ``heads``, one path per head set). Within a path, samples
    are sorted by token count and cut into runs whose padding stays under
    ``max_pad`` of the run.
    """
    running = np.flatnonzero(active)
    if not running.size:
        return []
    if running.size == 1:  # batch 1 (or one sample on this stage): no grouping, no padding
        s = int(running[0])
        return [_group([s], np.flatnonzero(heads[s]).astype(np.int64), tokens)]
    counts = tokens.sum(axis=1)
    keys = np.ascontiguousarray(heads if paths is None else paths)
    by_path: dict[bytes, list[int]] = {}
    for s in running:
        by_path.setdefault(keys[s].tobytes(), []).append(int(s))
    groups = []
    for members in by_path.values():
        head_idx = np.flatnonzero(heads[members[0]]).astype(np.int64)
        order = sorted(members, key=lambda s: -counts[s])  # stable: ties keep batch order
        run: list[int] = []
        used = 0
        for s in order:
            width = counts[run[0]] if run else counts[s]
            if run and 1 - (used + counts[s]) / (width * (len(run) + 1)) > max_pad:
                groups.append(_group(run, head_idx, tokens))
                run, used = [], 0
            run.append(s)
            used += counts[s]
        groups.append(_group(run, head_idx, tokens))
    return groups


def _group(samples: list[int], heads: np.ndarray, tokens: np.ndarray) -> Group:
    N = tokens.shape[1]
    if len(samples) == 1:
        pos = np.flatnonzero(tokens[samples[0]])
        return Group(np.asarray(samples), heads, (pos + samples[0] * N)[None], np.ones((1, len(pos)), bool))
    kept = tokens[samples]  # (G, N)
    K = int(kept.sum(axis=1).max())
    # kept positions first, in order (a stable argsort of "not kept"), then padding
    pos = np.argsort(~kept, axis=1, kind="stable")[:, :K]
    valid = np.take_along_axis(kept, pos, axis=1)
    pos = np.where(valid, pos, 0)  # padding -> the class token (always kept)
    index = pos + (np.asarray(samples) * N)[:, None]
    return Group(np.asarray(samples), heads, index.astype(np.int64), valid)


def gather(x: np.ndarray, group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Kept tokens of the group's samples as ``(G, K, C)`` plus the key bias ``(G, K)`` (-inf on padding)."""
    flat = x.reshape(-1, x.shape[-1])
    bias = np.where(group.valid, np.float32(0), np.float32(-np.inf))
    return np.take(flat, group.index, axis=0), bias


def scatter(x: np.ndarray, group: Group, values: np.ndarray) -> None:
    """Write the group's results back into the full token buffer, in place (padding is dropped)."""
    flat = x.reshape(-1, x.shape[-1])
    if group.valid.all():
        flat[group.index.ravel()] = values.reshape(-1, values.shape[-1])
    else:
        flat[group.index[group.valid]] = values[group.valid]
