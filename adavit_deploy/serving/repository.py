"""A Triton model repository for a bundle: ``config.pbtxt``, ``1/model.py`` and the bundle itself.

The repository is self-contained, so the same folder serves on one box
(``adavit-deploy serve``) and on a Triton cluster: each model's version folder
holds a copy of the bundle (the dense model's hard-linked to the adaptive one's), whose
sha256 sums the runtime verifies when Triton loads the model. Everything
the Python backend needs to know (budget, precision, threads, backend,
adaptive or dense) is a ``parameters`` entry of ``config.pbtxt``, so a user can
retune a deployed repository without rewriting ``model.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..atomic import staged_directory
from ..bundle import budget_name, check_precision, read_manifest
from ..config import AdaViTConfig
from ..errors import ConfigError, param
from ..runtime.backends import BACKENDS, resolve_threads
from .slo import check_slo, ladder

#: The dense baseline model's name is the adaptive model's plus this (``--with-dense``).
DENSE_SUFFIX = "_dense"
#: The bundle's folder inside a model's version folder (``<model>/1/bundle``).
BUNDLE_DIR = "bundle"
#: First line of every config.pbtxt we write: what `triton-repo --overwrite` may replace.
MARK = "# written by adavit-deploy triton-repo"
VERSION = "1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RepositoryOptions:
    """How the model is served: batching, instances, and the runtime's settings."""

    name: str = "adavit"
    max_batch: int = 32
    queue_delay_us: int = 0
    instances: int = 1
    threads: int = 0
    backend: str = "ort"
    budget: str = "native"
    precision: str = "fp32"
    with_dense: bool = False
    #: > 0: requests without a budget get the SLO controller's (``serving/slo.py``), down to ``min_budget``.
    slo_ms: float = 0.0
    min_budget: str | None = None

    @property
    def models(self) -> list[str]:
        """The models the repository serves: ``name``, and its dense twin with ``--with-dense``."""
        return [self.name] + ([self.name + DENSE_SUFFIX] if self.with_dense else [])

    def check(self) -> None:
        """One-line errors for values Triton or the runtime would refuse later, less clearly."""
        if not _NAME.match(self.name):
            raise ConfigError(f"model name {self.name!r}: use letters, digits, '_', '-' or '.' (at most 64)")
        for what, value, low in ((param("max_batch"), self.max_batch, 1), (param("instances"), self.instances, 1),
                                 (param("queue_delay_us"), self.queue_delay_us, 0)):  # fmt: skip
            if value < low:
                raise ConfigError(f"{what} must be >= {low}, got {value}")
        resolve_threads(self.threads)  # what the runtime will accept, checked before writing
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        check_precision(self.precision)
        if self.precision == "bf16" and self.backend != "ov":
            raise ConfigError(f"precision bf16 runs on the ov backend (OpenVINO), not on {self.backend}")
        if self.slo_ms:
            check_slo(self.slo_ms)
        elif self.min_budget is not None:
            raise ConfigError(f"{param('min_budget')} is the SLO controller's floor: give {param('slo_ms')} too")


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


def _tensor(name: str, shape: tuple[int, ...], dtype: str = "TYPE_FP32") -> str:
    return f'  {{ name: "{name}", data_type: {dtype}, dims: [ {_dims(shape)} ] }}'


def _outputs(cfg: AdaViTConfig, dense: bool) -> list[tuple[str, tuple[int, ...]]]:
    """Per-sample output shapes (Triton adds the batch axis); ``gmacs`` is ``(1,)`` per image."""
    if dense:
        return [("logits", (cfg.num_classes,))]
    return [
        ("logits", (cfg.num_classes,)),
        ("head_select", (len(cfg.head_select), cfg.num_heads)),
        ("layer_select", (len(cfg.layer_select), 2)),
        ("token_select", (len(cfg.token_select), cfg.num_tokens)),
        ("gmacs", (1,)),
        ("budget", (1,)),  # the budget applied, by name (TYPE_STRING)
    ]


def model_config(name: str, cfg: AdaViTConfig, options: RepositoryOptions, dense: bool) -> str:
    """``config.pbtxt`` of the adaptive model, or of the dense baseline (``dense=True``)."""
    params = {
        "mode": "dense" if dense else "adaptive",
        "bundle": BUNDLE_DIR,
        "backend": options.backend,
        "threads": str(options.threads),
        "budget": budget_name(options.budget),
        "precision": options.precision,
        "slo_ms": f"{options.slo_ms:g}",
        "min_budget": budget_name(options.min_budget) if options.min_budget else "",
    }
    outputs = ",\n".join(_tensor(n, s, "TYPE_STRING" if n == "budget" else "TYPE_FP32") for n, s in _outputs(cfg, dense))
    parameters = "\n".join(f'parameters: {{ key: "{k}", value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return f"""{MARK}
name: "{name}"
backend: "python"
max_batch_size: {options.max_batch}
input [
{_tensor("images", (cfg.in_chans, cfg.img_size, cfg.img_size))}
]
output [
{outputs}
]
dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}
# the runtime picks its own device (ort-cuda / trt: GPU 0): one GPU per server, scale GPUs with replicas
instance_group [ {{ count: {options.instances}, kind: KIND_CPU }} ]
{parameters}
"""


def _link_or_copy(src: str, dst: str) -> None:
    """The dense model's bundle: hard links to the adaptive model's copy, inside the repository (no space)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_model(repo: Path, name: str, bundle: Path, cfg: AdaViTConfig, options: RepositoryOptions, dense: bool) -> None:
    version = repo / name / VERSION
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(model_config(name, cfg, options, dense))
    (version / "model.py").write_text(resources.files(__package__).joinpath("model.py").read_text())
    # the user's bundle is copied, never linked: editing the repository must not change it
    shutil.copytree(bundle, version / BUNDLE_DIR, copy_function=_link_or_copy if dense else shutil.copy2)


def _is_repository(path: Path) -> bool:
    """Whether ``path`` holds a model repository this command wrote (what ``--overwrite`` may replace)."""
    return any(c.read_text(errors="replace").startswith(MARK) for c in path.glob("*/config.pbtxt"))


def write_repository(bundle: str | Path, out: str | Path, options: RepositoryOptions = RepositoryOptions(),
                     overwrite: bool = False) -> Path:  # fmt: skip
    """Write a Triton model repository serving ``bundle`` into ``out``, atomically.

    The bundle is verified first (sha256) and its budget and precision checked,
    so a repository that is written is one Triton can load.
    """
    options.check()
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    manifest.budget(options.budget)
    manifest.check_precision(options.precision, bundle)
    if options.slo_ms:
        ladder(manifest, options.min_budget)  # --min-budget names a rung
    with staged_directory(Path(out), overwrite, ours=_is_repository, what="a repository written by triton-repo") as stage:
        _write_model(stage, options.name, bundle, manifest.model, options, dense=False)
        if options.with_dense:
            adaptive_copy = stage / options.name / VERSION / BUNDLE_DIR
            _write_model(stage, options.name + DENSE_SUFFIX, adaptive_copy, manifest.model, options, dense=True)
    return Path(out)
