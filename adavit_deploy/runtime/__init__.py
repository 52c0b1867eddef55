"""The two-stage adaptive runtime and its backends."""

from .adaptive import AdaptiveRuntime, InferResult, RoutingStats, load_bundle

__all__ = ["AdaptiveRuntime", "InferResult", "RoutingStats", "load_bundle"]
