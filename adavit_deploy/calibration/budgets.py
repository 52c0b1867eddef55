"""Budgets: decision thresholds that make the model spend a target share of dense GMACs.

The search (documented in ``calibration/README.md``): every decision keeps a
unit when ``sigmoid(logit) > t``. Shifting a threshold in logit space,
``t(s) = sigmoid(logit(t_native) + s * w)``, moves that decision's keep rate
monotonically, and mean GMACs fall as ``s`` grows. For each *mix* ``w``
(which decisions move: all three together, or tokens, heads or sub-layers
alone) we bisect ``s`` on the calibration set until the mean GMACs are within
1% of the target (3% is the contract). Among the mixes that get there, we
keep the one whose top-1 predictions agree most with the native budget's: a
label-free proxy for accuracy, so any image folder can calibrate. A target
outside what any mix reaches is an error, never a clamp.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..bundle import NATIVE, Budget, budget_name
from ..config import AdaViTConfig, Thresholds
from ..cost import dense_gmacs
from ..errors import ConfigError, param
from ..lists import comma_items
from ..runtime.adaptive import AdaptiveRuntime, InferResult
from ..token_buckets import buckets_from_counts

#: Logit-shift weights per decision, in ``Thresholds`` order (head, layer, token).
MIXES: dict[str, tuple[float, float, float]] = {
    "all": (1.0, 1.0, 1.0),
    "tokens": (0.0, 0.0, 1.0),
    "heads": (1.0, 0.0, 0.0),
    "layers": (0.0, 1.0, 0.0),
}
TOLERANCE = 0.03  # the contract: mean GMACs within 3% of the target
AIM = 0.01  # where the bisection stops
SPAN = 24.0  # |s| at which a float32 sigmoid threshold keeps everything / nothing
MAX_STEPS = 30

Progress = Callable[[str], None]


def parse_budgets(spec: str | list[str]) -> list[str]:
    """``"native,0.7,0.5"`` -> ``["native", "0.7", "0.5"]``; each a fraction of dense GMACs in (0, 1]."""
    names = [budget_name(item) for item in comma_items(spec)]
    if not names:
        raise ConfigError(f"{param('budgets')} is empty: give e.g. native,0.7,0.5")
    return list(dict.fromkeys(names))


def shifted(native: Thresholds, mix: tuple[float, float, float], s: float) -> Thresholds:
    """The native thresholds moved by ``s * mix`` in logit space."""

    def move(t: float, w: float) -> float:
        return float(1 / (1 + math.exp(-(math.log(t / (1 - t)) + s * w)))) if w else t

    return Thresholds(*(move(t, w) for t, w in zip((native.head, native.layer, native.token), mix)))


def _mixes(cfg: AdaViTConfig) -> dict[str, tuple[float, float, float]]:
    """The mixes that move at least one decision this model has."""
    has = (bool(cfg.head_select), bool(cfg.layer_select), bool(cfg.token_select))
    return {k: w for k, w in MIXES.items() if any(h and x for h, x in zip(has, w))}


def specialize(cfg: AdaViTConfig, result: InferResult) -> tuple[list[int], int]:
    """Backbone specialization from a calibration run: kept-token bucket edges and the usual kept-head count."""
    tokens = result.token_select.sum(-1).astype(np.int64).ravel()
    full_blocks = cfg.depth - len(cfg.token_select)
    counts = np.concatenate([tokens, np.full(full_blocks * len(result.logits), cfg.num_tokens)])
    heads = result.head_select.sum(-1).astype(np.int64).ravel()
    heads = heads[heads > 0]
    opt_heads = int(np.bincount(heads).argmax()) if heads.size else cfg.num_heads
    return list(buckets_from_counts(counts, cfg.num_tokens)), opt_heads


def describe(cfg: AdaViTConfig, result: InferResult) -> dict[str, object]:
    """Per-block statistics of one calibration run (the manifest's ``calibration.budgets``)."""
    dense = dense_gmacs(cfg)
    return {
        "gmacs_fraction_mean": float(result.gmacs.mean() / dense),
        "gmacs_fraction_std": float(result.gmacs.std() / dense),
        "kept_tokens_mean": dict(zip(map(str, cfg.token_select), result.token_select.sum(-1).mean(0).round(2).tolist())),
        "kept_heads_mean": dict(zip(map(str, cfg.head_select), result.head_select.sum(-1).mean(0).round(3).tolist())),
        "msa_on_rate": dict(zip(map(str, cfg.layer_select), result.layer_select[..., 0].mean(0).round(3).tolist())),
        "ffn_on_rate": dict(zip(map(str, cfg.layer_select), result.layer_select[..., 1].mean(0).round(3).tolist())),
    }


def search_budget(
    runtime: AdaptiveRuntime,
    images: np.ndarray,
    target: float,
    reference_top1: np.ndarray,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> tuple[Budget, InferResult]:
    """Thresholds that bring mean GMACs on ``images`` within ``TOLERANCE`` of ``target`` (fraction of dense)."""
    step = progress or (lambda _: None)
    cfg, native = runtime.cfg, runtime.manifest.budget(NATIVE).thresholds
    dense = dense_gmacs(cfg)
    found, tried, reach = [], {}, []
    for name, mix in _mixes(cfg).items():
        cache: dict[float, tuple[float, InferResult]] = {}

        def frac(s: float, mix: tuple[float, float, float] = mix, cache: dict = cache) -> float:
            if s not in cache:
                result = runtime.infer(images, batch_size, budget=shifted(native, mix, s))
                cache[s] = (float(result.gmacs.mean() / dense), result)
            return cache[s][0]

        lo, hi = -SPAN, SPAN  # frac(lo) = most kept, frac(hi) = least
        reach.append((frac(hi), frac(lo)))
        if target > frac(lo) * (1 + TOLERANCE) or target < frac(hi) * (1 - TOLERANCE):
            tried[name] = f"reaches only {frac(hi):.3f}..{frac(lo):.3f}"
            continue
        for _ in range(MAX_STEPS):
            mid = (lo + hi) / 2
            if abs(frac(mid) - target) <= AIM * target:
                break
            lo, hi = (mid, hi) if frac(mid) > target else (lo, mid)
        s = min(cache, key=lambda k: abs(cache[k][0] - target))
        f, result = cache[s]
        if abs(f - target) > TOLERANCE * target:
            tried[name] = f"jumps past the target (closest {f:.3f} at shift {s:+.3f})"
            continue
        agreement = float((result.logits.argmax(1) == reference_top1).mean())
        tried[name] = {"shift": s, "gmacs_fraction": f, "native_top1_agreement": agreement, "passes": len(cache)}
        found.append((agreement, -len(found), name, s, f, result))
        step(f"budget {target:g}: mix {name} -> {f:.3f} of dense GMACs, {agreement:.1%} top-1 agreement with native")
    if not found:
        lo_all, hi_all = min(r[0] for r in reach), max(r[1] for r in reach)
        raise ConfigError(
            f"budget {target:g} is unreachable: on this calibration set the model spends "
            f"{lo_all:.3f}..{hi_all:.3f} of dense GMACs whatever the thresholds"
        )
    _, _, name, s, f, result = max(found)
    edges, opt_heads = specialize(cfg, result)
    budget = Budget(
        thresholds=shifted(native, MIXES[name], s),
        target=target,
        gmacs_fraction=f,
        token_edges=edges,
        opt_heads=opt_heads,
        search={"method": "logit-shift bisection", "mix": name, "shift": s, "mixes": tried},
    )
    return budget, result


def calibrate_budgets(
    runtime: AdaptiveRuntime, images: np.ndarray, names: list[str], batch_size: int = 32, progress: Progress | None = None
) -> tuple[dict[str, Budget], dict[str, dict]]:
    """Every budget of ``names`` (``native`` first, always) and the statistics of each on ``images``."""
    cfg = runtime.cfg
    native = runtime.infer(images, batch_size, budget=NATIVE)
    top1 = native.logits.argmax(1)
    edges, opt_heads = specialize(cfg, native)
    frac = float(native.gmacs.mean() / dense_gmacs(cfg))
    budgets = {NATIVE: Budget(cfg.thresholds, None, frac, edges, opt_heads, {"method": "checkpoint thresholds"})}
    stats = {NATIVE: describe(cfg, native)}
    for name in names:
        if name == NATIVE:
            continue
        budgets[name], result = search_budget(runtime, images, float(name), top1, batch_size, progress)
        stats[name] = {**describe(cfg, result), "native_top1_agreement": float((result.logits.argmax(1) == top1).mean())}
    return budgets, stats
