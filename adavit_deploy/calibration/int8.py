"""INT8 (explicit Q/DQ) variants of a bundle's graphs, calibrated on real feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import Artifact
from ..runtime.adaptive import AdaptiveRuntime
from ..runtime.backends.base import Backend, Runner

Feeds = dict[str, list[dict[str, np.ndarray]]]


class _Recording(Runner):
    """A runner that keeps a copy of every feed it is given (Polygraphy's data loader, inverted)."""

    def __init__(self, inner: Runner, store: list) -> None:
        super().__init__(inner.artifact)
        self.inner, self.store = inner, store

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.store.append({k: np.array(v) for k, v in feed.items()})
        return self.inner.run(feed)


class _RecordingBackend(Backend):
    def __init__(self, inner: Backend, feeds: Feeds) -> None:
        self.inner, self.feeds, self.name = inner, feeds, inner.name

    def runner(self, bundle: Path, artifact: Artifact) -> Runner:
        graph = artifact.file.removesuffix(".onnx")
        return _Recording(self.inner.runner(bundle, artifact), self.feeds.setdefault(graph, []))


def record_feeds(runtime: AdaptiveRuntime, images: np.ndarray, batch_size: int = 16) -> Feeds:
    """Every graph's inputs while ``runtime`` (fp32) runs ``images`` at each of its budgets, and the dense graph."""
    feeds: Feeds = {}
    recording = AdaptiveRuntime(runtime.bundle, runtime.manifest, _RecordingBackend(runtime.backend, feeds))
    for b in recording.manifest.budgets:
        recording.infer(images, batch_size, budget=b)
    for i in range(0, len(images), batch_size):
        recording.dense(images[i : i + batch_size])
    return feeds


def quantize_graph(src: Path, feeds: list[dict[str, np.ndarray]], dst: Path) -> None:
    """Write the Q/DQ version of ``src`` calibrated on ``feeds`` to ``dst``."""
    import shutil

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not feeds:  # never run on the calibration set: nothing to calibrate with, stay float
        shutil.copyfile(src, dst)
        return

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
