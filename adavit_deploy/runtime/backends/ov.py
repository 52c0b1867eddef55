"""OpenVINO backend (CPU): the bundle's own ONNX graphs, compiled by OpenVINO, exact in fp32.

OpenVINO reads the ONNX graphs as they are (no re-export). Its CPU plugin
runs in bf16 by default on a CPU with bf16 instructions, which changes
decisions, so every graph is compiled with an explicit inference precision:
``f32`` for the ``fp32`` / ``fp16`` / ``int8`` graphs and ``bf16`` only for
the ``bf16`` precision (the fp32 graphs, run in bf16: no export flag). A CPU
without bf16 instructions refuses ``bf16`` in one line: OpenVINO would ignore
the hint there and run f32, which is ``fp32`` under another name.

Per-call cost: the runtime alternates between dozens of small compiled
models. Each has one stream (``PERFORMANCE_HINT=LATENCY``, ``NUM_STREAMS=1``)
of ``threads`` threads, unpinned (pinning every model's stream to the same
cores makes them fight). The policy and classifier graphs run on one thread
(``base.CALLER_THREAD_GRAPHS``), as on ONNX Runtime. docs/PERFORMANCE.md has the
measurements.

Compiled models can be cached (``cache_dir``): one blob per graph, named by
the graph's sha256, the OpenVINO version, the CPU, the precision and the
threads, so a cached blob is never stale; blobs are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_file
from ...bundle import Artifact, bundle_file
from ...errors import BackendError, ConfigError, param
from ...machine import cpu_flags, cpu_model
from .base import Backend, Runner, graph_threads, resolve_threads

#: The bundle precision -> OpenVINO's inference precision; ``bf16`` runs the fp32 graphs.
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}
#: CPU flags (``/proc/cpuinfo``) with native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
OV_HINT = "pip install 'adavit-deploy[ov]'"


def _openvino():
    try:
        import openvino
    except ImportError:
        raise BackendError(f"openvino is not installed: {OV_HINT}") from None
    return openvino


class OvRunner(Runner):
    """One compiled model and its infer request."""

    def __init__(self, artifact: Artifact, compiled: Any) -> None:
        super().__init__(artifact)
        self.compiled = compiled
        inputs = [(_name(p, self.input_names), _dims(p)) for p in compiled.inputs]
        self.check_graph(inputs, [(_name(p, self.output_names), _dims(p)) for p in compiled.outputs])
        self.request = compiled.create_infer_request()
        self._order = [name for name, _ in inputs]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # share_inputs: no copy in; outputs are copied out, the request reuses its buffers
        self.request.infer([feed[n] for n in self._order], share_inputs=True)
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.output_names))]

    def _release(self) -> None:
        self.request = None
        self.compiled = None


def _cache_dir(cache_dir: str | Path | None) -> Path | None:
    """The compiled-model cache directory, made now (``~`` expanded): a bad one is one line before any compile."""
    if cache_dir is None:
        return None
    if not isinstance(cache_dir, (str, Path)) or not str(cache_dir).strip():
        raise ConfigError(f"{param('cache_dir')} {cache_dir!r}: give a directory path (or None: no cache)")
    path = Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{param('cache_dir')} {path}: cannot make it a directory ({e.strerror or type(e).__name__})") from None
    return path


def _name(port: Any, expected: list[str]) -> str:
    """The port's ONNX tensor name: OpenVINO gives a port every name its tensor had (an output may
    also be ``/Add_2_output_0``), so the manifest's name if it is one of them."""
    names = port.get_names()
    return next((n for n in expected if n in names), port.get_any_name())


def _dims(port: Any) -> list[Any]:
    """A port's shape as ``check_graph`` compares it: ints, and ``None`` where dynamic."""
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


class OvBackend(Backend):
    """OpenVINO compiled models on the CPU; ``threads=0``: one per core.

    ``cache_dir``: where compiled models are cached (``None``: no cache).
    """

    name = "ov"

    def __init__(self, threads: int = 0, *, cache_dir: str | Path | None = None, device: str = "CPU") -> None:
        super().__init__()
        ov = _openvino()
        self.threads = resolve_threads(threads)
        self.device = device
        self.core = ov.Core()
        if device not in self.core.available_devices:
            raise BackendError(f"OpenVINO has no {device} device here (it has {', '.join(self.core.available_devices)})")
        self.version = ov.get_version()
        self.cache_dir = _cache_dir(cache_dir)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "openvino": self.version, "device": self.device, "threads": self.threads}

    def check_precision(self, precision: str) -> str:
        """Every graph precision, and ``bf16`` where the CPU has bfloat16 instructions (OpenVINO's
        ``OPTIMIZATION_CAPABILITIES``): elsewhere OpenVINO would ignore the hint and silently run f32."""
        if precision == "bf16" and not self.has_bf16():
            flags = sorted(set(BF16_FLAGS) & (cpu_flags() or frozenset())) or ["none"]
            raise BackendError(
                f"precision bf16: this CPU ({cpu_model()}) has no bfloat16 instructions (of {', '.join(BF16_FLAGS)} "
                f"it has {', '.join(flags)}): OpenVINO would ignore the bf16 hint and run f32 here; use fp32"
            )
        return precision

    def has_bf16(self) -> bool:
        return "BF16" in self.core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")

    def config(self, artifact: Artifact, precision: str) -> dict[str, str]:
        """The compile properties of one graph at one precision (every one explicit: no plugin default leaks in)."""
        return {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(graph_threads(artifact, self.threads)),
            "ENABLE_CPU_PINNING": "NO",
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "EXECUTION_MODE_HINT": "PERFORMANCE" if precision == "bf16" else "ACCURACY",
        }

    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> OvRunner:
        config = self.config(artifact, precision)
        blob = self._blob(artifact, config)
        compiled = self._import(blob, config) if blob is not None and blob.is_file() else None
        if compiled is None:
            path = bundle_file(bundle, artifact.file)
            try:
                compiled = self.core.compile_model(str(path), self.device, config)
            except RuntimeError as e:  # OpenVINO's errors are multi-line: the first says what
                raise BackendError(f"{path}: OpenVINO cannot compile it: {str(e).strip().splitlines()[0]}") from None
            if blob is not None:  # the directory was made with the backend
                with atomic_file(blob, "the OpenVINO cache") as tmp:
                    tmp.write_bytes(compiled.export_model().getvalue())
        return OvRunner(artifact, compiled)

    def _import(self, blob: Path, config: dict[str, str]) -> Any:
        """A cached compiled model, or ``None`` when OpenVINO cannot read the blob (it is compiled again)."""
        try:
            return self.core.import_model(io.BytesIO(blob.read_bytes()), self.device, config)
        except RuntimeError:
            return None

    def _blob(self, artifact: Artifact, config: dict[str, str]) -> Path | None:
        """The cache file of one compiled graph: a name that changes with anything the blob depends on."""
        if self.cache_dir is None:
            return None
        key = "|".join([artifact.sha256, self.version, self.device, cpu_model(), *sorted(f"{k}={v}" for k, v in config.items())])
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(artifact.file).stem)
        return self.cache_dir / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.blob"

    def _release(self) -> None:
        self.core = None
