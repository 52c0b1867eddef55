"""The bundle: a directory of graphs plus the one manifest that describes it.

``manifest.json`` is the single source of truth a runtime needs: model config
and flags, preprocessing, the budgets (decision thresholds per compute
budget), every artifact with its sha256 and I/O signature (precision
variants as ``<graph>.fp16`` / ``<graph>.int8``), opset and producer
versions, and the parity measured at export. Bundles are
written into a hidden staging directory and renamed into place only when
complete, so an interrupted export never leaves something that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .config import AdaViTConfig, Thresholds
from .errors import BundleError, ConfigError

#: Where bundles go by default (relative to the working directory), and the demo model's bundle name.
DEFAULT_OUT = Path("export/bundles")
DEMO_BUNDLE_NAME = "ada_digits"
SCHEMA = "adavit-deploy/bundle"
SCHEMA_VERSION = 2  # 2: policy graphs output probabilities; budgets
MANIFEST = "manifest.json"


def check_schema(d: dict[str, Any], schema: str, version: int, what: str, fix: str, error: type[Exception]) -> None:
    """One check for every versioned JSON document we write: right kind, right version."""
    if d.get("schema") != schema:
        raise error(f"not an adavit-deploy {what}")
    if d.get("schema_version") != version:
        raise error(f"{what} version {d.get('schema_version')} is not {version}: {fix}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        return cls(
            file=d["file"],
            sha256=d["sha256"],
            inputs=[TensorSpec(**t) for t in d.get("inputs", [])],
            outputs=[TensorSpec(**t) for t in d.get("outputs", [])],
        )


NATIVE = "native"
PRECISIONS = ("fp32", "fp16", "int8")


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
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def variant_key(graph: str, precision: str) -> str:
    """Manifest key of ``graph`` at ``precision``: ``attn_0``, ``attn_0.fp16``, ``attn_0.int8``.

    ``export --fp16/--int8`` registers its variants under these keys; the
    runtime and ``build-trt`` find them with this lookup and nothing else.
    """
    return graph if check_precision(precision) == "fp32" else f"{graph}.{precision}"


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Budget":
        return cls(**{**d, "thresholds": Thresholds(**d["thresholds"])})


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
    calibration: dict[str, Any] = field(default_factory=dict)  # summary; the full record is calibration.json

    def __post_init__(self) -> None:
        self.budgets.setdefault(NATIVE, Budget(self.model.thresholds))

    @property
    def precisions(self) -> list[str]:
        """Precisions the bundle has graphs for (fp32 always)."""
        return [p for p in PRECISIONS if p == "fp32" or any(k.endswith(f".{p}") for k in self.artifacts)]

    def budget(self, name: str | float) -> Budget:
        try:
            key = budget_name(name)
        except ConfigError as e:
            raise ConfigError(f"{e}: this bundle's budgets are {', '.join(self.budgets)}") from None
        if key not in self.budgets:
            raise BundleError(
                f"this bundle has no budget {key} (it has {', '.join(self.budgets)}): "
                f"re-export with --budgets {','.join([*self.budgets, key])}"
            )
        return self.budgets[key]

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
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
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        try:
            d = json.loads(text)
            check_schema(d, SCHEMA, SCHEMA_VERSION, f"bundle manifest ({where})", "re-export it", BundleError)
            return cls(
                model=AdaViTConfig.from_dict(d["model"]),
                artifacts={k: Artifact.from_dict(v) for k, v in d["artifacts"].items()},
                opset=d["opset"],
                max_batch=d["max_batch"],
                producer=d["producer"],
                source=d.get("source", {}),
                parity=d.get("parity", {}),
                budgets={k: Budget.from_dict(v) for k, v in d.get("budgets", {}).items()},
                calibration=d.get("calibration", {}),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BundleError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from None


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read and (by default) verify every artifact's sha256 against the manifest."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: not a bundle (no {MANIFEST}); create one with `adavit-deploy export`")
    manifest = Manifest.from_json(path.read_text(), str(path))
    if verify:
        for name, art in manifest.artifacts.items():
            f = bundle / art.file
            if not f.is_file():
                raise BundleError(f"{bundle}: artifact {art.file} ({name}) is missing: re-export the bundle")
            if sha256(f) != art.sha256:
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


@contextmanager
def staged_directory(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging dir beside ``final``; rename it into place on success.

    On any error (or Ctrl-C) the staging dir is removed and ``final`` is left
    as it was.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise BundleError(f"{final} already exists: pass --overwrite or choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield stage
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
