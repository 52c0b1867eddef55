"""``engines.json``: what the TensorRT engines of a bundle were built with, and the load-time check.

Written by ``adavit-deploy build-trt`` next to the engines (``<bundle>/trt/``
by default), read by the TensorRT backend. A serialized engine runs only on
the TensorRT version that built it and on the GPU it was built for (NVIDIA,
"Engine Compatibility"; see docs/TENSORRT.md), so the manifest records the
TensorRT version, GPU name and compute capability, and the backend refuses a
mismatch with a one-line message instead of failing inside TensorRT. Per
engine it records the ONNX it was built from (sha256), the bundle graph the
runtime knows it by, the precision and the optimization profiles.

Everything here is pure (no TensorRT, no GPU) and tested on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import Artifact, bundle_file
from ..documents import Document
from ..errors import BackendError
from .profiles import Profile

SCHEMA = "adavit-deploy/trt-engines"
SCHEMA_VERSION = 2  # 2: the dataclasses' own fields (environment, graph_file, ...), every one typed on load
ENGINES_JSON = "engines.json"
ENGINE_DIR = "trt"  # default engine directory inside a bundle
REBUILD = "rebuild them with `adavit-deploy build-trt {bundle}`"
DOCUMENT = Document(
    "engine manifest", "TensorRT engine manifest", SCHEMA, SCHEMA_VERSION,
    "rebuild the engines with `adavit-deploy build-trt`", BackendError,
)  # fmt: skip


@dataclass(frozen=True)
class TrtEnvironment:
    """What an engine is tied to: TensorRT version, GPU name, compute capability."""

    tensorrt: str
    gpu: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass
class EngineEntry:
    """One engine: its file, the ONNX it was built from, the bundle graph it serves, how."""

    file: str
    sha256: str
    graph_file: str  # the bundle artifact the runtime asks for (fp32 graph)
    graph_sha256: str
    source_file: str  # the ONNX fed to TensorRT (the graph itself, or its fp16 / Q/DQ variant)
    source_sha256: str
    precision: str
    strongly_typed: bool
    builder_flags: list[str] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)

@dataclass
class EngineManifest:
    """The ``tensorrt`` section of a bundle: environment, build settings, one entry per graph."""

    environment: TrtEnvironment
    precision: str
    max_batch: int
    token_edges: list[int]
    engines: dict[str, EngineEntry]
    workspace_bytes: int | None = None
    producer: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The document as stored: its own fields, as ``from_json`` reads them back."""
        return DOCUMENT.dumps(self)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = ENGINES_JSON) -> "EngineManifest":
        """Parse and type-check ``engines.json``: anything malformed is one ``BackendError`` line."""
        return DOCUMENT.read(text, where, cls)

    def entry_for(self, artifact: Artifact, where: str, bundle: str = "BUNDLE") -> EngineEntry:
        """The engine that serves bundle graph ``artifact`` (looked up by its file)."""
        for entry in self.engines.values():
            if entry.graph_file == artifact.file:
                return entry
        raise BackendError(f"{where}: no TensorRT engine for {artifact.file}: {REBUILD.format(bundle=bundle)}")


def is_engine_dir(path: Path) -> bool:
    """Whether ``path`` holds engines ``build-trt`` wrote (what a rebuild may replace)."""
    return (Path(path) / ENGINES_JSON).is_file()


def read_engine_manifest(engine_dir: str | Path, bundle: str = "BUNDLE") -> EngineManifest:
    path = Path(engine_dir) / ENGINES_JSON
    if not path.is_file():
        raise BackendError(f"{engine_dir}: no TensorRT engines ({ENGINES_JSON} missing): build them with `adavit-deploy build-trt {bundle}`")
    manifest = EngineManifest.from_json(path.read_bytes(), str(path))
    for entry in manifest.engines.values():  # before TensorRT reads any engine file
        bundle_file(engine_dir, entry.file, "engine", REBUILD.format(bundle=bundle))
    return manifest


def check_environment(built: TrtEnvironment, here: TrtEnvironment, where: str, bundle: str = "BUNDLE") -> None:
    """Refuse engines built by another TensorRT version or for another GPU (one line, says how to rebuild)."""
    rebuild = REBUILD.format(bundle=bundle)
    if built.tensorrt != here.tensorrt:
        raise BackendError(
            f"{where}: engines were built with TensorRT {built.tensorrt}, this is TensorRT {here.tensorrt}: {rebuild}"
        )
    if built.compute_capability != here.compute_capability or built.gpu != here.gpu:
        raise BackendError(
            f"{where}: engines were built for {built.gpu} ({built.sm}), this GPU is {here.gpu} ({here.sm}): {rebuild}"
        )


def check_entry(
    entry: EngineEntry, artifact: Artifact, where: str, bundle: str = "BUNDLE", source_sha256: str | None = None
) -> None:
    """Refuse an engine built from another export of the graph than the bundle's.

    ``source_sha256``: the bundle's sha256 of ``entry.source_file`` (an fp16 or
    Q/DQ variant) where the bundle has that file.
    """
    stale = entry.graph_sha256 != artifact.sha256 or (
        source_sha256 is not None and entry.source_sha256 != source_sha256
    )
    if stale:
        raise BackendError(
            f"{where}: engine {entry.file} was built from another {entry.source_file} than this bundle's: "
            f"{REBUILD.format(bundle=bundle)}"
        )
