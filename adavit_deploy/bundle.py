"""The bundle: a directory of graphs plus the one manifest that describes it.

``manifest.json`` is the single source of truth a runtime needs: model config
and flags, preprocessing, the budgets (decision thresholds per compute
budget), every artifact with its sha256 and I/O signature (precision
variants as ``<graph>.fp16`` / ``<graph>.int8``), opset and producer
versions, and the parity measured at export. Bundles are
written into a hidden staging directory and renamed into place only when
complete (``atomic.staged_directory``), so an interrupted export never leaves
something that looks whole.

A manifest is untrusted input when read: parsed with type checks (one-line
errors), every artifact path confined to the bundle before any file is read,
and its artifacts checked to be exactly the graphs its config implies
(``graphs.py``); the runners then check each graph file against it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import AdaViTConfig, Thresholds
from .documents import Document
from .errors import BundleError, ConfigError, param
from .graphs import Port, agrees, describe, graphs

#: Where bundles go by default (relative to the working directory), and the demo model's bundle name.
DEFAULT_OUT = Path("export/bundles")
DEMO_BUNDLE_NAME = "ada_digits"
SCHEMA = "adavit-deploy/bundle"
SCHEMA_VERSION = 3  # 2: policy graphs output probabilities; budgets. 3: masked-tactic graphs
MANIFEST = "manifest.json"
MANIFEST_DOCUMENT = Document("manifest", "bundle manifest", SCHEMA, SCHEMA_VERSION, "re-export the bundle", BundleError)


def check_max_batch(max_batch: int) -> int:
    """The largest batch a bundle's graphs (and engines) are built for: ``--max-batch``, at least 1."""
    if max_batch < 1:
        raise ConfigError(f"{param('max_batch')} must be >= 1, got {max_batch}")
    return max_batch


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: A file changed less than this long before it is checked is hashed again at every check: a
#: filesystem's clock ticks coarsely (a jiffy on ext4 before Linux 6.13, 1 s on ext3 and HFS+, 2 s on
#: FAT), so a second write within the tick leaves the stat as it was (git's "racily clean" files).
RACY_NS = 2_000_000_000


def verified_sha256(path: Path) -> str:
    """``sha256(path)``, hashed once per version of the file in this process: a bundle loaded again
    (``evaluate``, ``bench``, ``tune`` and ``serve`` open several runtimes of one bundle) is not read
    again unless a file changed."""
    now = time.time_ns()  # before the stat: a write after it is stamped a tick or more past an old ctime
    st = path.stat()  # ctime too: a write changes it, and unlike mtime it cannot be set back (POSIX; Windows: creation time)
    if now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return sha256(path)
    return _sha256_of(str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, device: int, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    return sha256(Path(path))


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int | str]  # str = a dynamic axis


@dataclass
class Artifact:
    """One file of the bundle and, for graphs, its I/O signature."""

    file: str
    sha256: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)

    @property
    def signature(self) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
        """(inputs, outputs) as ``graphs.Port``s, comparable with what ``graphs`` derives from the config."""

        def ports(specs: list[TensorSpec]) -> tuple[Port, ...]:
            return tuple(Port(t.name, t.dtype, tuple(t.shape)) for t in specs)

        return ports(self.inputs), ports(self.outputs)


NATIVE = "native"
#: Graph precisions: the variants a bundle holds (``export --fp16/--int8``).
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
#: What a runtime can run at: the graphs' precisions, and ``bf16``, the fp32 graphs run in bfloat16 by a
#: backend that can (OpenVINO on a CPU with bf16 instructions).
PRECISIONS = (*GRAPH_PRECISIONS, "bf16")


def budget_name(value: str | float) -> str:
    """Canonical key of a budget: ``native`` or the fraction of dense GMACs in (0, 1] as ``%g`` (``0.70`` -> ``0.7``)."""
    if isinstance(value, str) and value.strip() == NATIVE:
        return NATIVE
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0 < fraction <= 1:
        raise ConfigError(f"budget {value!r} is neither 'native' nor a fraction of dense GMACs in (0, 1]")
    return f"{fraction:g}"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a one-line error naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def variant_key(graph: str, precision: str) -> str:
    """Manifest key of ``graph`` at ``precision``: ``attn_0``, ``attn_0.fp16``, ``attn_0.int8``
    (``bf16`` runs the fp32 graph: ``attn_0``).

    ``export --fp16/--int8`` registers its variants under these keys; the
    runtime and ``build-trt`` find them with this lookup and nothing else.
    """
    return graph if check_precision(precision) in ("fp32", "bf16") else f"{graph}.{precision}"


def split_precision(key: str, precisions: tuple[str, ...] = PRECISIONS) -> tuple[str, str]:
    """``NAME.PRECISION`` -> ``(NAME, PRECISION)``, no suffix: fp32. A graph key (the inverse of
    ``variant_key``: ``attn_0.int8``, checked against ``GRAPH_PRECISIONS``) or an engine (``adaptive.bf16``)."""
    name, _, precision = key.partition(".")
    if precision and precision not in precisions:
        raise ConfigError(f"{key!r}: {precision!r} is not one of {', '.join(precisions[1:])}")
    return name, precision or "fp32"


@dataclass
class Budget:
    """The decision thresholds that hold one compute budget, and the shapes it runs at.

    ``target`` is a fraction of dense GMACs (``None`` for ``native``, the
    checkpoint's own thresholds). The rest is measured on the calibration set:
    ``gmacs_fraction`` (mean), ``token_edges`` (kept-token bucket edges, the
    TensorRT profile ranges), ``opt_heads`` (most common kept-head count) and
    ``search`` (how the thresholds were found).
    """

    thresholds: Thresholds
    target: float | None = None
    gmacs_fraction: float | None = None
    token_edges: list[int] = field(default_factory=list)
    opt_heads: int | None = None
    search: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # an edited manifest: TensorRT profiles and reports read these
        if any(x is not None and not 0 <= x < math.inf for x in (self.target, self.gmacs_fraction)):
            raise ConfigError(f"budget target {self.target} / gmacs_fraction {self.gmacs_fraction}: need finite values >= 0")
        if list(self.token_edges) != sorted(set(self.token_edges)) or any(e < 1 for e in self.token_edges):
            raise ConfigError(f"budget token_edges {self.token_edges}: need increasing counts >= 1")
        if self.opt_heads is not None and self.opt_heads < 1:
            raise ConfigError(f"budget opt_heads {self.opt_heads} is not >= 1")


@dataclass
class Manifest:
    model: AdaViTConfig
    artifacts: dict[str, Artifact]
    opset: int
    max_batch: int
    producer: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, Budget] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # what the budgets were calibrated on (calibration/data.py)

    def __post_init__(self) -> None:
        check_max_batch(self.max_batch)  # TensorRT profiles and Triton's batcher are sized from it
        self.budgets.setdefault(NATIVE, Budget(self.model.thresholds))

    @property
    def precisions(self) -> list[str]:
        """Graph precisions the bundle has graphs for (fp32 always)."""
        return [p for p in GRAPH_PRECISIONS if p == "fp32" or any(k.endswith(f".{p}") for k in self.artifacts)]

    def check_precision(self, precision: str, bundle: str | Path) -> str:
        """``precision`` if the bundle has graphs for it (``bf16``: the fp32 ones), else a one-line
        error saying how to add them."""
        if check_precision(precision) not in (*self.precisions, "bf16"):
            raise ConfigError(
                f"{bundle}: the bundle has no {precision} graphs (it has {', '.join(self.precisions)}): "
                f"add them with `adavit-deploy calibrate {bundle} --{precision}` (or re-export with --{precision})"
            )
        return precision

    def budget(self, name: str | float) -> Budget:
        try:
            key = budget_name(name)
        except ConfigError as e:
            raise ConfigError(f"{e}: this bundle's budgets are {', '.join(self.budgets)}") from None
        if key not in self.budgets:
            raise BundleError(
                f"this bundle has no budget {key} (it has {', '.join(self.budgets)}): "
                f"add it with `adavit-deploy calibrate BUNDLE --budgets {','.join([*self.budgets, key])} --calib ...`"
            )
        return self.budgets[key]

    def to_json(self) -> str:
        """The manifest as stored (``flags`` derived from the config, for readers; recomputed on load)."""
        return MANIFEST_DOCUMENT.dumps(
            {
                "producer": self.producer,
                "source": self.source,
                "model": self.model.to_dict(),
                "flags": self.model.flags(),
                "opset": self.opset,
                "max_batch": self.max_batch,
                "budgets": {k: asdict(v) for k, v in self.budgets.items()},
                "artifacts": {k: asdict(v) for k, v in self.artifacts.items()},
                "calibration": self.calibration,
                "parity": self.parity,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest") -> "Manifest":
        """Parse and type-check a manifest: anything malformed is one ``BundleError`` line."""
        return MANIFEST_DOCUMENT.read(text, where, cls, derived=("flags",))


def bundle_file(bundle: str | Path, name: str, what: str = "artifact", fix: str = "re-export the bundle") -> Path:
    """``bundle / name``, refused unless it resolves (symlinks followed) inside ``bundle``.

    Checked before anything is read: a manifest must not make us hash, load
    or run a file elsewhere (``../../etc/passwd``, another bundle's graph).
    """
    bundle = Path(bundle)
    path = bundle / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(bundle.resolve()):
        raise BundleError(f"{bundle}: {what} path {name!r} points outside {bundle}: refused; {fix}")
    return path


def check_graphs(manifest: Manifest, where: str) -> None:
    """Refuse a manifest whose artifacts are not exactly the graphs its model config implies.

    Each fp32 graph of ``graphs(config)`` must be there with that graph's
    signature, and so must its variant at every precision the bundle has
    (the fp32 graph itself where the graph stays float); nothing else but
    ``constants`` (and ``calibration``: bundles that kept the record in a file). An edited head count, depth or a
    graph recorded under another graph's name fails here.
    """
    cfg, arts = manifest.model, manifest.artifacts
    fix = "the manifest disagrees with its model config: re-export the bundle"
    if 2 * cfg.depth > len(arts):  # every block has an attn and an mlp graph; an edited depth of 10**9 is not enumerated
        raise BundleError(f"{where}: {len(arts)} artifacts cannot hold a {cfg.depth}-block model: {fix}")
    expected = graphs(cfg)
    for key, art in arts.items():
        if key in ("constants", "calibration"):
            continue
        try:
            name, precision = split_precision(key, GRAPH_PRECISIONS)
        except ConfigError:
            raise BundleError(f"{where}: artifact {key!r} has an unknown precision suffix: re-export the bundle") from None
        graph = expected.get(name)
        if graph is None:
            raise BundleError(f"{where}: artifact {key!r} is not a graph of a {cfg.depth}-block model: {fix}")
        ins, outs = art.signature
        same_types = [p.dtype for p in (*ins, *outs)] == [p.dtype for p in (*graph.inputs, *graph.outputs)]
        declared = [(p.name, p.shape) for p in ins], [(p.name, p.shape) for p in outs]
        if not (same_types and agrees(graph.inputs, declared[0]) and agrees(graph.outputs, declared[1])):
            raise BundleError(
                f"{where}: {key} takes {describe(ins)} -> {describe(outs)}, the config implies "
                f"{describe(graph.inputs)} -> {describe(graph.outputs)}: {fix}"
            )
        if not graph.converts_to(precision) and name in arts and art.file != arts[name].file:
            raise BundleError(f"{where}: {key} must be the fp32 graph ({graph.kind} graphs stay float): re-export the bundle")
    wanted = ["constants", *(variant_key(g, p) for p in manifest.precisions for g in expected)]
    missing = [k for k in wanted if k not in arts]
    if missing:
        raise BundleError(f"{where}: no artifact {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}: {fix}")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` looks like a bundle we wrote (what ``export --overwrite`` may replace)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read a manifest, check it against its config, and (by default) every artifact's sha256.

    Every artifact path is checked to stay inside the bundle before any file is read.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        why = "no such bundle directory" if not bundle.exists() else "is a file, not a bundle directory"
        raise BundleError(f"{bundle}: {why}; create one with `adavit-deploy export`")
    if not path.is_file():
        raise BundleError(f"{bundle}: not a bundle (no {MANIFEST}); create one with `adavit-deploy export`")
    manifest = Manifest.from_json(path.read_bytes(), str(path))
    files = {name: bundle_file(bundle, art.file) for name, art in manifest.artifacts.items()}
    check_graphs(manifest, str(path))
    if verify:
        for name, art in manifest.artifacts.items():
            f = files[name]
            if not f.is_file():
                raise BundleError(f"{bundle}: artifact {art.file} ({name}) is missing: re-export the bundle")
            if verified_sha256(f) != art.sha256:
                raise BundleError(f"{bundle}: artifact {art.file} ({name}) fails its sha256 check: re-export the bundle")
    return manifest


def resolve_bundle(bundle: str | Path | None) -> Path:
    """``bundle``, or the demo's default bundle (what ``adavit-deploy export`` writes with no checkpoint);
    a clear error if it is not there."""
    if bundle is None:
        path = DEFAULT_OUT / DEMO_BUNDLE_NAME
        if not path.is_dir():
            raise BundleError(
                f"no BUNDLE given and the default bundle {path} does not exist: "
                "create it with `adavit-deploy export`, or pass a bundle directory"
            )
        return path
    path = Path(bundle)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory: create one with `adavit-deploy export`")
    return path
