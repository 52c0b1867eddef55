"""TensorRT backend: one deserialized engine + execution context per bundle graph.

Engines come from ``adavit-deploy build-trt`` (``tensorrt/build.py``) and live with
their ``engines.json`` in ``<bundle>/trt/`` unless another directory is given.
``runtime.backends.get_backend("trt")`` returns this backend. Loading checks
that manifest first (TensorRT version, GPU, source graph: ``tensorrt/manifest.py``). A call goes: pick the optimization
profile whose ranges hold the input shapes (the token bucket of a routed
call), ``set_optimization_profile_async`` if it changed, ``set_input_shape``
and ``set_tensor_address`` for every input, output buffers sized from
``get_tensor_shape``, ``execute_async_v3`` on the runner's CUDA stream, copy
back. Device buffers are torch CUDA tensors (torch comes with the gpu extra;
its caching allocator makes the per-call buffers cheap). A batch larger than
the engines' max batch is run in chunks.

``tensorrt`` is imported lazily: without it this module still imports, and
``TrtBackend()`` says in one line what to install. The API calls used, per
TensorRT version and with the documentation each follows: docs/TENSORRT.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ...bundle import Artifact, read_manifest
from ...errors import BackendError, InputError
from ...tensorrt.environment import current_environment, import_tensorrt
from ...tensorrt.manifest import ENGINE_DIR, EngineEntry, EngineManifest, check_entry, check_environment, read_engine_manifest
from ...tensorrt.profiles import BATCH, max_batch_of, select_profile, split_batch
from .base import Backend, Runner

def torch_dtypes(trt: Any) -> dict[Any, Any]:
    """TensorRT ``DataType`` -> torch dtype, for the types an engine's I/O can have."""
    import torch

    names = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
    }
    return {getattr(trt.DataType, n): t for n, t in names.items() if hasattr(trt.DataType, n)}


class EngineFromPath:
    """Loader: ``()`` -> ``ICudaEngine`` deserialized from a file whose sha256 is checked first."""

    def __init__(self, runtime: Any, path: Path, sha256: str, rebuild: str) -> None:
        self.runtime, self.path, self.sha256, self.rebuild = runtime, Path(path), sha256, rebuild

    def __call__(self) -> Any:
        if not self.path.is_file():
            raise BackendError(f"{self.path}: engine file is missing: {self.rebuild}")
        data = self.path.read_bytes()  # hashed and deserialized from one read: the file cannot change in between
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise BackendError(f"{self.path}: engine fails its sha256 check: {self.rebuild}")
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendError(f"{self.path}: TensorRT could not deserialize the engine (see its log above): {self.rebuild}")
        return engine


class TrtRunner(Runner):
    """Runs one engine on host arrays; selects the optimization profile per call."""

    def __init__(self, artifact: Artifact, entry: EngineEntry, engine: Any, backend: "TrtBackend") -> None:
        super().__init__(artifact)
        import torch

        self.torch, self.entry, self.engine = torch, entry, engine
        self.where = f"{entry.file} ({artifact.file})"
        if engine.num_optimization_profiles != len(entry.profiles):
            raise BackendError(
                f"{self.where}: engine has {engine.num_optimization_profiles} profiles, "
                f"engines.json lists {len(entry.profiles)}: rebuild with `adavit-deploy build-trt`"
            )
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.where}: TensorRT could not create an execution context (out of GPU memory?)")
        dtypes, self.dtypes = torch_dtypes(backend.trt), {}
        for n in (*self.input_names, *self.output_names):
            dt = engine.get_tensor_dtype(n)
            if dt not in dtypes:
                raise BackendError(f"{self.where}: I/O tensor {n} has type {dt}, which this backend cannot feed")
            self.dtypes[n] = dtypes[dt]
        self.batched = [t.name for t in artifact.inputs if t.shape and t.shape[0] == BATCH]
        self.max_batch = max_batch_of(entry.profiles, self.batched)
        self.device = torch.device("cuda", backend.device)
        self.stream = torch.cuda.Stream(self.device)
        self.profile = 0  # a new context starts on profile 0
        self.profile_calls = [0] * len(entry.profiles)  # calls per profile (token bucket), for diagnostics

    def _release(self) -> None:
        """Wait for the stream, then drop the context before its engine (TensorRT's object lifetimes:
        an execution context must not outlive its engine, nor an engine the runtime that made it;
        the Python objects free their TensorRT object when their last reference goes)."""
        self.stream.synchronize()
        self.context = None
        self.engine = None
        self.stream = None

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.batched and len(feed[self.batched[0]]) > self.max_batch:
            parts = [self._run(chunk) for chunk in split_batch(feed, self.batched, self.max_batch)]
            return [np.concatenate(outs) for outs in zip(*parts)]
        return self._run(feed)

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch, ctx = self.torch, self.context
        index = select_profile(self.entry.profiles, {k: v.shape for k, v in feed.items()}, self.where)
        self.profile_calls[index] += 1
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            handle = self.stream.cuda_stream
            if index != self.profile:
                if not ctx.set_optimization_profile_async(index, handle):
                    raise BackendError(f"{self.where}: TensorRT refused optimization profile {index}")
                self.profile = index
            inputs = []  # kept alive until the stream is done with them
            for name in self.input_names:
                host_in = np.ascontiguousarray(feed[name])
                if not host_in.flags.writeable:  # torch.from_numpy wants a writable array
                    host_in = host_in.copy()
                t = torch.from_numpy(host_in).to(self.device, self.dtypes[name], non_blocking=True)
                inputs.append(t)
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    raise InputError(f"{self.where}: TensorRT refused shape {tuple(t.shape)} for input {name}")
                ctx.set_tensor_address(name, t.data_ptr())
            outputs = []
            for name in self.output_names:
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise BackendError(f"{self.where}: output {name} has unresolved shape {shape}")
                out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                ctx.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not ctx.execute_async_v3(handle):
                raise BackendError(f"{self.where}: TensorRT execution failed (see its log above)")
            # a blocking copy on this stream: waits for the engine, then the host owns the data
            host = [(o.float() if o.is_floating_point() else o).cpu() for o in outputs]
        return [h.numpy() for h in host]


class TrtBackend(Backend):
    """Runners from the TensorRT engines of a bundle (``<bundle>/trt/`` or ``engines``).

    Fails in one line without TensorRT or a CUDA GPU, and on engines built by
    another TensorRT version, for another GPU, or from other graphs.
    """

    name = "trt"

    def __init__(self, engines: str | Path | None = None, device: int = 0) -> None:
        super().__init__()
        self.trt = import_tensorrt()
        self.device = device
        self.environment = current_environment(self.trt, device)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.engines = Path(engines) if engines is not None else None
        self._loaded: dict[Path, tuple[EngineManifest, dict[str, str]]] = {}

    def fingerprint(self) -> dict[str, Any]:
        """A tactic timing on TensorRT holds for this GPU and TensorRT version, as its engines do."""
        env = self.environment
        return {**super().fingerprint(), "tensorrt": env.tensorrt, "gpu": env.gpu, "sm": env.sm}

    def engine_dir(self, bundle: Path) -> Path:
        return self.engines if self.engines is not None else Path(bundle) / ENGINE_DIR

    def _manifest(self, bundle: Path, engine_dir: Path) -> tuple[EngineManifest, dict[str, str]]:
        key = engine_dir.resolve()
        if key not in self._loaded:
            manifest = read_engine_manifest(engine_dir, str(bundle))
            check_environment(manifest.environment, self.environment, str(engine_dir), str(bundle))
            graphs = read_manifest(bundle, verify=False).artifacts.values()  # load_bundle verified them
            self._loaded[key] = manifest, {a.file: a.sha256 for a in graphs}
        return self._loaded[key]

    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> Runner:
        engine_dir = self.engine_dir(bundle)
        manifest, sources = self._manifest(bundle, engine_dir)
        entry = manifest.entry_for(artifact, str(engine_dir), str(bundle))
        check_entry(entry, artifact, str(engine_dir), str(bundle), sources.get(entry.source_file))
        rebuild = f"rebuild with `adavit-deploy build-trt {bundle}`"
        engine = EngineFromPath(self.runtime, engine_dir / entry.file, entry.sha256, rebuild)()
        return TrtRunner(artifact, entry, engine, self)

    def _release(self) -> None:
        """After ``close`` closed every runner (their engines): the runtime that deserialized them."""
        self.runtime = None
        self._loaded.clear()
