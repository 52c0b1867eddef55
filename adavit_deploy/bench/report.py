"""What one ``bench`` run measured (``BenchReport``) and the arithmetic behind its figures.

Every figure is computed here from the raw timings and decisions, once:
latency percentiles, throughput, speed-ups as ratios of this run's own
medians, the FLOPs ratio and efficiency, routing per call. ``docs/bench.md``
documents the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..documents import Document, Saved
from ..errors import InputError
from ..runtime import RoutingStats
from .engines import split_engine

SCHEMA = "adavit-deploy/bench"
SCHEMA_VERSION = 1
DOCUMENT = Document("bench report", "bench report", SCHEMA, SCHEMA_VERSION, "run `adavit-deploy bench --json` again", InputError)


@dataclass
class BenchReport(Saved):
    """Everything one ``bench`` run measured; JSON-serialisable (``docs/bench.md``), ``save`` / ``load``."""

    DOCUMENT: ClassVar[Document] = DOCUMENT

    results: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    parity: dict[str, Any] | None
    routing: dict[str, Any]
    environment: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    gmacs: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    precision_parity: dict[str, Any] = field(default_factory=dict)  # "adaptive.int8" -> vs "adaptive"

    def result(self, engine: str, batch_size: int) -> dict[str, Any] | None:
        return next((r for r in self.results if r["engine"] == engine and r["batch_size"] == batch_size), None)


def times(x: float) -> str:
    """A ratio as ``1.52x``, keeping small ones readable (``0.0012x``)."""
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def latency(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()), "min": float(ms.min())}


def merge_parity(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Chunked ``parity.parity_report`` results as one (means weighted by samples, maxima over chunks)."""
    n = sum(p["samples"] for p in parts)
    out: dict[str, Any] = {"samples": n}
    for key in ("top1_agreement", "decision_agreement", "mean_abs_logit_diff", "mean_gmacs"):
        out[key] = float(sum(p[key] * p["samples"] for p in parts) / n)
    for key in ("max_abs_logit_diff", "dense_max_abs_logit_diff"):
        out[key] = float(max(p[key] for p in parts))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a / b) if a is not None and b else None


def result_row(name: str, b: int, timed: dict[str, Any], peak: float | None, dense: float) -> dict[str, Any]:
    """One engine at batch size ``b``: latency, throughput, GMACs (computed and executed), peak RSS."""
    lat = latency(timed["seconds"])
    gmacs = float(np.concatenate(timed["gmacs"]).mean()) if timed["gmacs"] else dense
    return {
        "engine": name,
        "batch_size": b,
        "latency_ms": lat,
        "throughput_ips": b / (lat["p50"] / 1e3),
        "gmacs_mean": gmacs,
        # the reference masks: it computes the whole dense model whatever it decides
        "gmacs_executed_mean": gmacs if split_engine(name)[0] == "adaptive" else dense,
        "peak_rss_mib": peak,
        "iterations": len(timed["seconds"]),
    }


def routing_row(b: int, stats: RoutingStats, iterations: int) -> dict[str, Any]:
    """How the timed adaptive calls at batch size ``b`` were split, per call of the runtime."""
    return {
        "batch_size": b,
        "graph_calls_per_batch": stats.calls / iterations,
        "graph_calls_per_image": stats.calls / (iterations * b),
        "constant_adds_per_batch": stats.constant_adds / iterations,
        "inputs_per_graph_call": sum(stats.paths.values()) / stats.calls if stats.calls else 0.0,
        "padding_waste": stats.padding_waste,
        "calls_per_batch_by_tactic": {t: n / iterations for t, n in sorted(stats.tactics.items())},
    }


def routing_report(stats: RoutingStats, by_batch_size: list[dict[str, Any]]) -> dict[str, Any]:
    """Per batch size, and over every input: how many inputs took each execution path."""
    counts = list(stats.paths.values())
    return {
        "by_batch_size": by_batch_size,
        "distinct_paths": len(counts),
        "inputs_per_path": {"mean": float(np.mean(counts)) if counts else 0.0, "max": max(counts, default=0)},
        "paths": dict(sorted(stats.paths.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def comparison(b: int, rows: dict[str, dict[str, Any]], dense_g: float) -> dict[str, Any]:
    """Per batch size, from this run's own medians: speedups are ratios of the reported p50 latencies."""
    p50 = {name: row["latency_ms"]["p50"] for name, row in rows.items()}
    adaptive = rows.get("adaptive")
    speedup = _ratio(p50.get("dense"), p50.get("adaptive"))
    flops = _ratio(dense_g, adaptive["gmacs_mean"]) if adaptive else None
    peak = {name: row["peak_rss_mib"] for name, row in rows.items()}
    return {
        "batch_size": b,
        "speedup_vs_dense": speedup,
        "flops_ratio": flops,
        "efficiency": _ratio(speedup, flops),
        "reference_speedup_vs_dense": _ratio(p50.get("dense"), p50.get("reference")),
        "speedup_vs_reference": _ratio(p50.get("reference"), p50.get("adaptive")),
        "memory_ratio_vs_dense": _ratio(peak.get("adaptive"), peak.get("dense")),
        # a reduced-precision engine against its own fp32 self, e.g. "adaptive.int8" vs "adaptive"
        "speedup_vs_fp32": {
            name: _ratio(p50[split_engine(name)[0]], t)
            for name, t in p50.items()
            if split_engine(name)[1] != "fp32" and split_engine(name)[0] in p50 and "@" not in name
        },
        **_against_fastest_dense(p50),
    }


def _against_fastest_dense(p50: dict[str, float]) -> dict[str, Any]:
    """Per precision, every dense engine's p50 and the fastest; each adaptive engine's speed-up over
    the fastest dense engine at its precision (the honest baseline)."""
    dense: dict[str, dict[str, float]] = {}
    for name, t in p50.items():
        base, precision = split_engine(name)
        if base == "dense":
            dense.setdefault(precision, {})[name] = t
    fastest = {precision: min(engines, key=engines.get) for precision, engines in dense.items()}
    return {
        "dense_p50_ms": dense,
        "fastest_dense": fastest,
        "speedup_vs_fastest_dense": {
            name: _ratio(p50[fastest[split_engine(name)[1]]], t)
            for name, t in p50.items()
            if split_engine(name)[0] == "adaptive" and split_engine(name)[1] in fastest
        },
    }


def model_name(cfg) -> str:
    return f"ViT {cfg.embed_dim}d x{cfg.depth} blocks, {cfg.num_heads} heads, {cfg.img_size}px/{cfg.patch_size}"
