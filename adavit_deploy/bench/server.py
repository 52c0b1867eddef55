"""Load on a running Triton server: concurrent clients, one image per request, as users send them.

For each concurrency level, ``concurrency`` threads (each with its own
``tritonclient`` connection) send requests back to back. The adaptive model
and, where the repository has it, its dense baseline are timed in
alternating rounds (the order rotates), so a noisy machine slows both alike.
The server's side is read from its metrics endpoint: the mean batch the
dynamic batcher formed is ``Δ nv_inference_count / Δ nv_inference_exec_count``,
and the compute and queue times per batch and request come from the same
counters. Every loop is bounded by time; every request by a network timeout.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..documents import Document, Saved
from ..errors import BackendError, ConfigError, InputError, param
from ..lists import positive_ints
from ..serving.repository import DENSE_SUFFIX
from .environment import environment

SCHEMA = "adavit-deploy/bench-serve"
SCHEMA_VERSION = 1
DOCUMENT = Document("serving report", "serving report", SCHEMA, SCHEMA_VERSION, "run `adavit-deploy bench-server --json` again", InputError)
PROTOCOLS = ("http", "grpc")
#: Random images when no --images: enough that consecutive requests differ.
DEFAULT_SAMPLES = 32
REQUEST_TIMEOUT_S = 60.0
#: Counters read per model from the metrics endpoint.
COUNTERS = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_compute_infer_duration_us",
            "nv_inference_queue_duration_us", "nv_inference_request_success")  # fmt: skip
#: Error messages kept per (model, concurrency) in the report.
ERROR_SAMPLES = 3

#: ``progress(what, done, total)``: ``done`` of ``total`` timed segments.
Progress = Callable[[str, int, int], None]


@dataclass
class ServeBenchReport(Saved):
    """What one ``bench-server`` run measured; JSON-serialisable (``docs/SERVING.md``), ``save`` / ``load``."""

    DOCUMENT: ClassVar[Document] = DOCUMENT

    results: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    settings: dict[str, Any]
    environment: dict[str, Any]

    def result(self, model: str, concurrency: int) -> dict[str, Any] | None:
        return next((r for r in self.results if r["model"] == model and r["concurrency"] == concurrency), None)


def check_address(url: str) -> None:
    """``HOST:PORT`` of a server (no scheme, a port 1..65535): checked before any client is made."""
    host, _, port = url.rpartition(":")
    if "://" in url or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"server address {url!r}: give HOST:PORT, e.g. 127.0.0.1:8000 (no http://; a port 1..65535)")


def parse_concurrency(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``: clients in flight at each load level."""
    return positive_ints(value, "concurrency", "1,8,32")


def read_metrics(url: str) -> dict[str, dict[str, float]]:
    """``{model: {counter: value}}`` summed over versions, from Triton's Prometheus text endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        raise BackendError(f"cannot read Triton's metrics at {url} ({e}): pass the server's {param('metrics_port')}") from None
    out: dict[str, dict[str, float]] = {}
    pattern = re.compile(r'^(\w+)\{[^}]*model="([^"]+)"[^}]*\}\s+(\S+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m and m.group(1) in COUNTERS:
            counters = out.setdefault(m.group(2), {})
            counters[m.group(1)] = counters.get(m.group(1), 0.0) + float(m.group(3))
    return out


def _tritonclient(protocol: str):
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except ImportError:
        raise BackendError("tritonclient is not installed: pip install 'adavit-deploy[client]'") from None


class Client:
    """One connection over ``protocol`` (``http`` or ``grpc``); ``infer`` sends one request."""

    def __init__(self, url: str, protocol: str = "http") -> None:
        self._tc, self.protocol, self._url = _tritonclient(protocol), protocol, url
        timeout = {"network_timeout": REQUEST_TIMEOUT_S} if protocol == "http" else {}
        self._client = self._tc.InferenceServerClient(url, **timeout)
        self._json = {"as_json": True} if protocol == "grpc" else {}

    def infer(self, model: str, images: np.ndarray, budget: str | None = None) -> dict[str, np.ndarray]:
        """Every output of ``model`` for ``images`` (a batch of one or more), at ``budget`` (a request
        parameter: a budget name or ``auto``; ``None``: the server's)."""
        tensor = self._tc.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        extra: dict[str, Any] = {"client_timeout": REQUEST_TIMEOUT_S} if self.protocol == "grpc" else {}
        if budget is not None:
            extra["parameters"] = {"budget": budget}
        result = self._client.infer(model, [tensor], **extra)
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response(**self._json)["outputs"]}

    def model_ready(self, model: str) -> bool:
        try:
            return bool(self._client.is_model_ready(model))
        except self._tc.InferenceServerException:  # gRPC: also when nothing listens
            return False
        except OSError as e:  # HTTP: nothing listens
            raise BackendError(f"cannot reach a Triton server at {self._url} ({e.strerror or e}): check the address (HOST:PORT) and that the server is up") from None

    def config(self, model: str) -> dict[str, Any]:
        """The model's configuration (``config.pbtxt`` as JSON)."""
        config = self._client.get_model_config(model, **self._json)
        return config.get("config", config)

    def input_shape(self, model: str) -> tuple[int, ...]:
        """The per-image shape of the model's ``images`` input."""
        return tuple(int(d) for d in self.config(model)["input"][0]["dims"])

    def close(self) -> None:
        self._client.close()


@dataclass
class Segment:
    """The requests of one model at one concurrency, over every round."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)


def _worker(url: str, protocol: str, model: str, pool: np.ndarray, start: int, stop_at: float, seg: Segment,
            lock: threading.Lock, budget: str | None) -> None:  # fmt: skip
    # a connection per thread: tritonclient's HTTP client (gevent) cannot be used from another thread
    client = Client(url, protocol)
    try:
        i = start
        while time.perf_counter() < stop_at:
            image = pool[i % len(pool)][None]
            i += 1
            t = time.perf_counter()
            try:
                client.infer(model, image, budget)
            except Exception as e:  # noqa: BLE001 - a failed request is a result to count, not a crash
                with lock:
                    seg.errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            with lock:
                seg.latencies.append(time.perf_counter() - t)
    finally:
        client.close()


def closed_loop(url: str, protocol: str, concurrency: int, model: str, pool: np.ndarray, seconds: float,
                 seg: Segment, budget: str | None = None) -> None:  # fmt: skip
    """``concurrency`` closed-loop clients for ``seconds``, each request at ``budget`` (None: the server's)."""
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds
    threads = [threading.Thread(target=_worker, args=(url, protocol, model, pool, k * 7, stop_at, seg, lock, budget),
                                daemon=True)
               for k in range(concurrency)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + REQUEST_TIMEOUT_S + 5)
    seg.seconds += time.perf_counter() - start


def _delta(after: dict[str, float], before: dict[str, float], into: dict[str, float]) -> None:
    for k in COUNTERS:
        into[k] = into.get(k, 0.0) + after.get(k, 0.0) - before.get(k, 0.0)


def _row(model: str, concurrency: int, seg: Segment) -> dict[str, Any]:
    ok = len(seg.latencies)
    c = seg.counters
    execs, count = c.get("nv_inference_exec_count", 0.0), c.get("nv_inference_count", 0.0)
    ms = np.asarray(seg.latencies) * 1e3
    latency = dict(zip(("p50", "p90", "p99"), map(float, np.percentile(ms, [50, 90, 99])))) if ok else {}
    if ok:
        latency["mean"] = float(ms.mean())
    return {
        "model": model,
        "concurrency": concurrency,
        "requests": ok + len(seg.errors),
        "errors": len(seg.errors),
        "error_samples": sorted(set(seg.errors))[:ERROR_SAMPLES],
        "seconds": seg.seconds,
        "throughput_ips": ok / seg.seconds if seg.seconds else 0.0,
        "latency_ms": latency,
        "server_batch_mean": count / execs if execs else None,
        # Triton charges every request of a batch the batch's whole compute time: per request = per batch
        "server_compute_ms_per_batch": c.get("nv_inference_compute_infer_duration_us", 0.0) / count / 1e3 if count else None,
        "server_queue_ms_per_request": c.get("nv_inference_queue_duration_us", 0.0) / count / 1e3 if count else None,
    }


def load_images(images: str | Path | np.ndarray | None, shape: tuple[int, ...], samples: int = DEFAULT_SAMPLES,
                seed: int = 0) -> tuple[np.ndarray, str]:  # fmt: skip
    """The requests' images ``(N, C, H, W)`` float32, already normalised, and where they came from.

    ``images``: an ``.npy`` / ``.npz`` (key ``images``) file, an array, or
    ``None`` for seeded normal noise of the model's input ``shape``.
    """
    from ..inputs import ARRAY_SUFFIXES, read_images, seeded_noise

    if images is None:
        return seeded_noise(tuple(shape), samples, seed)
    if isinstance(images, np.ndarray):
        return np.ascontiguousarray(images, dtype=np.float32), "array"

    path = Path(images)
    if path.suffix not in ARRAY_SUFFIXES:
        raise ConfigError(f"{param('images')} {path}: give an .npy/.npz of normalised images (key 'images') for a remote model")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return read_images(path, tuple(shape)), str(path)


def run_load(url: str, protocol: str = "http", concurrency: str | Sequence[int] = (1, 8, 32), duration: float = 10.0,
             images: str | Path | np.ndarray | None = None, model: str = "adavit", metrics_url: str | None = None,
             rounds: int = 3, warmup_s: float = 1.0, progress: Progress | None = None,
             metrics_port: int = 8002) -> ServeBenchReport:  # fmt: skip
    """Time ``model`` (and ``<model>_dense`` where served) at each concurrency for ``duration`` seconds each.

    ``metrics_url``: the server's Prometheus endpoint (default: ``metrics_port``
    of ``url``'s host). A failed request counts as an error, never stops the run.
    """
    levels = parse_concurrency(concurrency)
    check_address(url)
    if not 0 < metrics_port < 65536:
        raise ConfigError(f"{param('metrics_port')} {metrics_port}: a port is 1..65535")
    if not duration > 0:
        raise ConfigError(f"{param('duration')} must be > 0, got {duration}")
    if rounds < 1:
        raise ConfigError(f"{param('rounds')} must be >= 1, got {rounds}")
    host = url.rsplit(":", 1)[0]
    metrics_url = metrics_url or f"http://{host}:{metrics_port}/metrics"
    probe = Client(url, protocol)
    try:
        if not probe.model_ready(model):
            raise BackendError(f"model {model!r} is not ready on {url} ({protocol}): check the address, {param('protocol')} and {param('model')}")
        models = [model] + ([model + DENSE_SUFFIX] if probe.model_ready(model + DENSE_SUFFIX) else [])
        pool, source = load_images(images, probe.input_shape(model))
    finally:
        probe.close()
    read_metrics(metrics_url)  # a clear error now, not after the run
    segments = {(m, c): Segment() for c in levels for m in models}
    total, done = len(levels) * rounds * len(models), 0
    for c in levels:
        for m in models:  # warm-up: the first batches of a fresh instance are slow
            closed_loop(url, protocol, c, m, pool, warmup_s, Segment())
        for r in range(rounds):
            for k in range(len(models)):
                m = models[(k + r) % len(models)]
                if progress:
                    progress(f"{m}, concurrency {c}", done, total)
                seg = segments[(m, c)]
                before = read_metrics(metrics_url).get(m, {})
                closed_loop(url, protocol, c, m, pool, duration / rounds, seg)
                _delta(read_metrics(metrics_url).get(m, {}), before, seg.counters)
                done += 1
    results = [_row(m, c, segments[(m, c)]) for c in levels for m in models]
    comparisons = []
    if len(models) == 2:
        for c in levels:
            a, d = (next(r for r in results if r["model"] == m and r["concurrency"] == c) for m in models)
            ratio = a["throughput_ips"] / d["throughput_ips"] if d["throughput_ips"] else None
            comparisons.append({"concurrency": c, "adaptive_vs_dense_throughput": ratio})
    settings = {"url": url, "protocol": protocol, "model": model, "models": models, "concurrency": list(levels),
                "duration_s": duration, "rounds": rounds, "warmup_s": warmup_s, "metrics_url": metrics_url,
                "images": {"source": source, "count": len(pool), "shape": list(pool.shape[1:])}}  # fmt: skip
    env = environment("remote", 0)
    env["versions"]["tritonclient"] = metadata.version("tritonclient")
    return ServeBenchReport(results, comparisons, settings, env)
