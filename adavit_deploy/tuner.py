"""The tuner: time every tactic of every stage on this machine, keep the fastest (``tactics.json``).

For each batch size, the bundle runs on seeded inputs (or the user's
images). Before each block, each stage runs on a copy of the block's real
input, for every sample that runs it, through the runtime's own routing
(``AdaptiveRuntime.run_stages``): what is timed is what inference does,
the head-set split of ``gather`` and the one-call batching of ``masked``
included. With kept-head counts k1 > k2 > ... in the batch, the options are
"masked where kept >= t" for t = none, k1, k2, ...: the key (block, stage,
k_i, batch size) compares the option that masks k_i with the one just
before it (which gathers k_i, with the larger counts masked), so a count's
choice is measured in the company it runs in. At batch 1 that is simply
one sample, masked or gathered. Options alternate within each repetition
(a noisy machine slows all alike) and each keeps its fastest repetition.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import check_writable
from .decisions import ffn_tokens
from .errors import InputError, param
from .runtime.adaptive import AdaptiveRuntime, load_bundle
from .runtime.routing import RoutingStats
from .runtime.tactics import FILE, MARGIN, STAGES, TACTICS, TacticTable, Timing, write_table

#: inputs per batch size, at least (batch 1 needs several images to see several head counts)
MIN_SAMPLES = 16


def tune(
    bundle: str | Path,
    batch_sizes: str | Sequence[int] = (1, 16),
    *,
    budget: str | float = "native",
    precision: str = "fp32",
    backend: str = "ort",
    threads: int = 0,
    images: str | Path | np.ndarray | None = None,
    reps: int = 3,
    margin: float = MARGIN,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[TacticTable, Path]:
    """Time the tactics of ``bundle`` at ``batch_sizes`` and write its ``tactics.json``; return the table and file.

    ``images``: the inputs to route, an array or what ``bench --images`` takes
    (default: seeded normal noise, as ``bench``);
    ``margin``: how much faster ``masked`` must be to be picked (it holds a
    second copy of its block's weights); ``progress(what, done, total)`` is
    called once per batch.
    """
    from .bench import load_pool, parse_batch_sizes

    batch_sizes = parse_batch_sizes(batch_sizes)
    if reps < 1:
        raise InputError(f"{param('reps')} must be >= 1, got {reps}")
    if not 0 <= margin < 1:
        raise InputError(f"{param('margin')} must be in [0, 1), got {margin}")
    with load_bundle(bundle, backend, threads, budget, precision, tactic="gather") as rt:
        check_writable(Path(bundle) / FILE, "the tactics file")  # before the timing, not after it
        if max(batch_sizes) > rt.manifest.max_batch:  # a typo (100000) would fill memory with inputs
            raise InputError(
                f"{param('batch_sizes')} {max(batch_sizes)} is above the bundle's max batch {rt.manifest.max_batch}: "
                f"tune up to it (larger batches use its choices) or re-export with a larger {param('max_batch')}"
            )
        cfg = rt.cfg
        images, _ = load_pool(images, rt, max(MIN_SAMPLES, max(batch_sizes)))
        totals: dict[tuple[int, str, int, int], dict[str, float]] = defaultdict(lambda: dict.fromkeys(TACTICS, 0.0))
        samples: dict[tuple[int, str, int, int], int] = defaultdict(int)
        batches: dict[tuple[int, str, int, int], int] = defaultdict(int)
        plan = [(b, i) for b in batch_sizes for i in range(0, max(len(images) - b + 1, 1), b)]
        for done, (b, start) in enumerate(plan):
            if progress:
                progress(f"batch size {b}", done, len(plan))
            batch = images[start : start + b]
            if len(batch) < b:  # fewer images than the batch size: repeat them
                batch = np.resize(batch, (b, *batch.shape[1:]))

            def visit(block: int, x: np.ndarray, layer: np.ndarray, heads: np.ndarray, tokens: np.ndarray, b: int = b) -> None:
                if block not in cfg.head_select:
                    return
                kept = heads.sum(axis=1)
                stage_tokens = {"attn": tokens, "mlp": ffn_tokens(cfg, tokens)}
                for s, stage in enumerate(STAGES):
                    on = layer[:, s] & (kept > 0)
                    counts = sorted({int(k) for k in kept[on]}, reverse=True)
                    if not counts:
                        continue
                    options = [cfg.num_heads + 1, *counts]  # masked where kept >= t; the first masks none
                    best = _time_options(rt, block, stage, x, on, heads, stage_tokens[stage], kept, options, reps)
                    for before, k in zip(options, counts):
                        key = (block, stage, k, b)
                        totals[key]["gather"] += best[before]
                        totals[key]["masked"] += best[k]
                        batches[key] += 1
                        samples[key] += int((on & (kept == k)).sum())

            rt.walk(batch, visit, budget)
        if progress:
            progress("done", len(plan), len(plan))
        timings = []
        for key in sorted(totals):
            ms = {t: totals[key][t] * 1e3 / batches[key] for t in TACTICS}
            timings.append(Timing(*key, ms=ms, samples=samples[key], tactic=Timing.pick(ms, margin)))
        table = TacticTable(rt.backend.fingerprint(), rt.precision, timings, margin)
    return table, write_table(bundle, table)


def _time_options(
    rt: AdaptiveRuntime,
    block: int,
    stage: str,
    x: np.ndarray,
    active: np.ndarray,
    heads: np.ndarray,
    tokens: np.ndarray,
    kept: np.ndarray,
    options: list[int],
    reps: int,
) -> dict[int, float]:
    """The fastest of ``reps`` runs of ``stage`` on ``x``'s ``active`` samples for each option
    ("masked where kept >= t"), options alternating."""
    best = dict.fromkeys(options, float("inf"))
    for rep in range(reps + 1):  # the first round loads each graph's session: not timed
        for t in options:
            masked = {s: kept >= t for s in STAGES}
            y = x.copy()
            t0 = time.perf_counter()
            rt.run_stages(block, (stage,), y, active, heads, tokens, masked, RoutingStats())
            if rep:
                best[t] = min(best[t], time.perf_counter() - t0)
    return best
