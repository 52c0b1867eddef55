"""Bundle -> TensorRT engines: one engine per graph, optimization profiles per token bucket.

The build itself is Polygraphy's loaders (the ``gpu`` extra), one chain per engine:
``SaveEngine(EngineFromNetwork(NetworkFromOnnxPath(onnx, strongly_typed=...),
CreateConfig(profiles=..., tf32=..., fp16=..., load_timing_cache=...),
save_timing_cache=...), path)()``. Polygraphy sets the network flags per
TensorRT version (the ``STRONGLY_TYPED`` flag is required on 10 and ignored on
11), parses with ``parse_from_file`` (external weights), reports parser
errors, and locks the timing-cache file while it merges each engine's
tactics into it, so concurrent builds can share one cache. Around it, pure
functions decide *what* to build, tested on CPU:

- ``plan_build``: which ONNX feeds each engine and with which builder
  settings, per precision and TensorRT major version. TensorRT 11 builds
  strongly typed networks only (no FP16/INT8 builder flags, no calibrators),
  so ``--fp16`` and ``--int8`` look up the FP16 and Q/DQ variants of each
  graph in the bundle manifest (``variant_key``: ``attn_0.fp16``,
  ``attn_0.int8``); on TensorRT 10 ``--fp16`` falls back to the (deprecated)
  FP16 builder flag on the fp32 graphs when the bundle has no FP16 variants.
- ``profiles.graph_profiles``: the profiles, from the manifest's I/O signatures.

Engines and their ``engines.json`` (``manifest.py``) are written to a
staging directory and renamed into place (``<bundle>/trt/`` by default), so an
interrupted build leaves the previous engines intact. One engine per graph
(not one fused engine): the runtime calls graphs separately, per block and
per routed group, and a dense graph nobody runs costs nothing but disk.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..atomic import staged_directory
from ..bundle import Manifest, check_max_batch, check_precision, read_manifest, resolve_bundle, sha256, variant_key
from ..errors import BackendError, BundleError, ConfigError, param
from ..graphs import graphs
from .environment import MIN_TENSORRT, current_environment, import_polygraphy_trt, import_tensorrt, tensorrt_major
from .manifest import ENGINE_DIR, ENGINES_JSON, EngineEntry, EngineManifest, is_engine_dir
from .profiles import Profile, ProfileSpec, graph_profiles

Progress = Callable[[str], None]


# -- what to build (pure) --------------------------------------------------------------


def resolve_precision(fp16: bool = False, int8: bool = False) -> str:
    if fp16 and int8:
        raise ConfigError(f"{param('fp16')} and {param('int8')} exclude each other: choose one ({param('int8')} graphs keep float where they need it)")
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def validate_build_args(
    max_batch: int | None = None, workspace_gib: float | None = None, timing_cache: Path | None = None, out: Path | None = None
) -> None:
    """One-line errors for arguments that are wrong whatever the bundle and TensorRT."""
    if max_batch is not None:
        check_max_batch(max_batch)
    if workspace_gib is not None and not workspace_gib > 0:
        raise ConfigError(f"{param('workspace_gib', 'workspace')} must be > 0 GiB, got {workspace_gib}")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise ConfigError(f"{param('timing_cache')} {timing_cache} is a directory: give a file path")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"{param('out')} {out} is a file: give a directory for the engines")


def budget_profile_spec(manifest: Manifest, budgets: list[str] | None, max_batch: int | None = None) -> ProfileSpec:
    """Profile ranges covering ``budgets`` (names in the manifest; ``None``: the defaults).

    Token bucket edges are the union of the budgets' calibrated edges (each
    budget's calls land in buckets sized for them); ``opt`` heads is the first
    budget's most common kept-head count.
    """
    if not budgets:
        return ProfileSpec.from_manifest(manifest, max_batch)
    chosen = [manifest.budget(b) for b in budgets]
    missing = [b for b, c in zip(budgets, chosen) if not c.token_edges]
    if missing:
        raise BundleError(
            f"budget {missing[0]} has no calibration statistics: re-export the bundle with {param('calibration', 'calib')} to size its profiles"
        )
    edges = sorted({e for c in chosen for e in c.token_edges})
    return ProfileSpec.from_manifest(manifest, max_batch, token_edges=tuple(edges), opt_heads=chosen[0].opt_heads)


def graph_names(manifest: Manifest) -> list[str]:
    """The bundle's fp32 graphs (``graphs.graphs`` of its config; ``read_manifest`` checked they are all there)."""
    return list(graphs(manifest.model))


@dataclass(frozen=True)
class GraphPlan:
    """How one engine is built."""

    graph: str  # the bundle graph the runtime asks for
    source: str  # manifest key of the ONNX fed to TensorRT
    precision: str  # what the engine computes in
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (TensorRT 10; always on in 11)
    fp16_flag: bool = False  # BuilderFlag.FP16 (TensorRT 10 only, weak typing, deprecated)
    tf32: bool = True  # TensorRT's default; off for fp32 engines (decisions are thresholds)

    @property
    def builder_flags(self) -> list[str]:
        return (["FP16"] if self.fp16_flag else []) + ([] if self.tf32 else ["-TF32"])


def plan_build(manifest: Manifest, precision: str, trt_major: int, bundle: str | Path = "BUNDLE") -> list[GraphPlan]:
    """Per graph: the ONNX to parse and the builder settings, for ``precision`` on TensorRT ``trt_major``.

    - fp32: the graphs as exported, strongly typed, TF32 off (bit-level closeness to ONNX Runtime).
    - fp16 / int8: the ``variant_key`` graphs when the bundle has them (strongly typed: the
      graph's own types decide; what stays fp32 is the exporter's call).
    - fp16 on TensorRT 10 without FP16 graphs: the fp32 graphs with ``BuilderFlag.FP16``;
      policy graphs stay fp32 (a flipped decision costs more than a slow op).
    - otherwise a one-line error: the bundle needs re-exporting with ``--fp16/--int8``.
    """
    check_precision(precision)
    names = graph_names(manifest)
    if precision == "fp32":
        return [GraphPlan(g, g, "fp32", strongly_typed=True, tf32=False) for g in names]
    have = [g for g in names if variant_key(g, precision) in manifest.artifacts]
    if len(have) == len(names):
        return [GraphPlan(g, variant_key(g, precision), precision, strongly_typed=True) for g in names]
    if have:
        missing = [g for g in names if g not in have]
        raise BundleError(
            f"{bundle}: the bundle has {precision} graphs for {len(have)} of {len(names)} graphs "
            f"(none for {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}): re-export it"
        )
    if precision == "fp16" and trt_major == 10:
        return [
            GraphPlan(g.name, g.name, "fp16", strongly_typed=False, fp16_flag=True)
            if g.converts_to("fp16")
            else GraphPlan(g.name, g.name, "fp32", strongly_typed=True, tf32=False)
            for g in graphs(manifest.model).values()
        ]
    why = {
        "fp16": f"TensorRT {trt_major} builds strongly typed networks only, with no FP16 builder flag",
        "int8": "INT8 engines are built from Q/DQ graphs, not with calibrators",
    }[precision]
    raise BundleError(
        f"{bundle}: the bundle has no {precision} graphs ({why}): re-export it with "
        f"`adavit-deploy export --{precision}`, then run build-trt again"
    )


# -- the build (Polygraphy's loaders) -------------------------------------------------


def engine_loader(
    polygraphy_trt: Any,
    onnx: Path,
    plan: GraphPlan,
    profiles: list[Profile],
    path: Path,
    memory_pool_limits: dict[Any, int] | None = None,
    timing_cache: Path | None = None,
) -> Callable[[], Any]:
    """The loader chain that builds ``plan``'s engine from ``onnx`` and saves it to ``path`` when called.

    ``EngineFromNetwork`` deserializes the built engine before ``SaveEngine``
    writes it, so an engine this GPU cannot load fails the build, not the first run.
    """
    p = polygraphy_trt
    trt_profiles = []
    for profile in profiles:
        tp = p.Profile()
        for name, r in profile.items():
            tp.add(name, min=r.min, opt=r.opt, max=r.max)
        trt_profiles.append(tp)
    cache = str(timing_cache) if timing_cache is not None else None  # Polygraphy locks ``<cache>.lock``
    config = p.CreateConfig(
        tf32=plan.tf32,
        fp16=plan.fp16_flag,
        profiles=trt_profiles,
        memory_pool_limits=memory_pool_limits,
        load_timing_cache=cache,
    )
    network = p.NetworkFromOnnxPath(str(onnx), strongly_typed=plan.strongly_typed)
    return p.SaveEngine(p.EngineFromNetwork(network, config, save_timing_cache=cache), str(path))


def build_engines(
    bundle: str | Path | None = None,
    *,
    precision: str = "fp32",
    max_batch: int | None = None,
    workspace_gib: float | None = None,
    timing_cache: str | Path | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    budgets: list[str] | None = None,
    **profile_overrides: Any,
) -> Path:
    """Build one engine per graph of ``bundle`` into ``out`` (default ``<bundle>/trt``); return ``out``.

    ``budgets``: size the token-bucket profiles from these budgets' calibration
    statistics (``budget_profile_spec``); default: equal-width buckets.

    Arguments, the bundle and (for ``int8``) its Q/DQ graphs are checked before
    TensorRT is imported, so a machine without it still gets the specific error.
    ``profile_overrides`` go to ``ProfileSpec`` (``token_edges``, ``opt_batch``, ``opt_heads``).
    """
    step = progress or (lambda _: None)
    timing_cache = Path(timing_cache) if timing_cache is not None else None
    out = Path(out) if out is not None else None
    validate_build_args(max_batch, workspace_gib, timing_cache, out)
    check_precision(precision)
    bundle = resolve_bundle(bundle)
    manifest = read_manifest(bundle)
    spec = budget_profile_spec(manifest, budgets, max_batch)
    if profile_overrides:
        spec = dataclasses.replace(spec, **profile_overrides)
    if precision == "int8":  # needs Q/DQ graphs whatever the TensorRT version
        plan_build(manifest, precision, MIN_TENSORRT, bundle)

    trt = import_tensorrt()
    polygraphy_trt = import_polygraphy_trt()
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    environment = current_environment(trt)
    plan = plan_build(manifest, precision, tensorrt_major(trt), bundle)
    out = out if out is not None else bundle / ENGINE_DIR
    workspace = int(workspace_gib * (1 << 30)) if workspace_gib is not None else None
    pools = {trt.MemoryPoolType.WORKSPACE: workspace} if workspace is not None else None
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)  # Polygraphy's lock file goes beside it
    engines = {}
    with staged_directory(out, overwrite=True, ours=is_engine_dir, what="an engine directory written by build-trt") as stage:
        for i, g in enumerate(plan):
            source, graph = manifest.artifacts[g.source], manifest.artifacts[g.graph]
            profiles = graph_profiles(source.inputs, spec, g.source)
            step(f"{i + 1}/{len(plan)} {g.graph}: {g.precision}, {len(profiles)} profile(s)")
            path = stage / f"{g.graph}.engine"
            try:
                with G_LOGGER.verbosity(G_LOGGER.WARNING):
                    engine_loader(polygraphy_trt, bundle / source.file, g, profiles, path, pools, timing_cache)()
            except PolygraphyException as e:
                detail = " ".join(str(e).split()) or "see its log above"
                raise BackendError(f"{g.graph}: TensorRT could not build an engine from {source.file}: {detail}") from None
            engines[g.graph] = EngineEntry(
                file=path.name,
                sha256=sha256(path),
                graph_file=graph.file,
                graph_sha256=graph.sha256,
                source_file=source.file,
                source_sha256=source.sha256,
                precision=g.precision,
                strongly_typed=g.strongly_typed,
                builder_flags=g.builder_flags,
                profiles=profiles,
            )
        result = EngineManifest(
            environment=environment,
            precision=precision,
            max_batch=spec.max_batch,
            token_edges=list(spec.token_edges),
            engines=engines,
            workspace_bytes=workspace,
            producer={"adavit_deploy": __version__, "python": platform.python_version()},
        )
        (stage / ENGINES_JSON).write_text(result.to_json())
    return out
