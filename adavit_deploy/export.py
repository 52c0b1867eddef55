"""Checkpoint -> bundle: trace every graph to ONNX, write the manifest, check parity.

The graph split (``model/pruned.py``): ``stem``, per block ``policy_L``
(stage 1) and ``attn_L`` / ``mlp_L`` (stage 2, dynamic batch, token and
head axes), ``head``, and ``dense`` (the baseline). ``constants.npz`` holds
what a block adds when every head is dropped.

With a calibration set, export also finds the thresholds of each budget
(``calibration/budgets.py``) and records what they were calibrated on in the
manifest (``calibration``); ``fp16`` and
``int8`` add a variant of every graph (``<graph>.fp16`` / ``<graph>.int8``),
each checked against the fp32 graphs on the calibration images.

We trace with the TorchScript exporter (``dynamo=False``): these are small
static modules, it exports each in ~0.1 s where the dynamo exporter takes
~4 s, and it emits opset-17 ``LayerNormalization`` as one op.
"""

from __future__ import annotations

import platform
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch

from . import __version__
from .atomic import staged_directory
from .bundle import DEFAULT_OUT, NATIVE, Artifact, Manifest, TensorSpec, check_max_batch, is_bundle, sha256, variant_key
from .calibration import CalibrationSet, calibrate_budgets, load_calibration, parse_budgets
from .config import AdaViTConfig
from .errors import ConfigError
from .graphs import BATCH, TOKENS, Graph, Port, graphs
from .model import AdaViT, load_model
from .model.pruned import (
    Classifier,
    DenseViT,
    MaskedAttention,
    MaskedMlp,
    Policy,
    PrunedAttention,
    PrunedMlp,
    Stem,
    block_constants,
)
from .parity import compare, parity_report
from .runtime.adaptive import AdaptiveRuntime
from .runtime.backends import get_backend

MIN_OPSET = 17

Progress = Callable[[str], None]


def max_opset() -> int:
    """The newest opset the TorchScript exporter of this torch writes."""
    from torch.onnx import _constants

    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)


def _example(port: Port, cfg: AdaViTConfig) -> torch.Tensor:
    """A tracing input for ``port``: batch 2, every token, every head (indices for ``heads``)."""
    if port.name == "heads":
        return torch.arange(cfg.num_heads, dtype=torch.int64)
    if port.name == "head_mask":
        return torch.ones(2, cfg.num_heads)
    sizes = {BATCH: 2, TOKENS: cfg.num_tokens}
    return torch.randn(*(sizes.get(d, d) for d in port.shape))


def _graphs(model: AdaViT) -> list[tuple[Graph, torch.nn.Module]]:
    """Every graph of ``graphs(cfg)`` with the module that computes it."""
    modules = {
        "stem": lambda g: Stem(model),
        "policy": lambda g: Policy(model.blocks[g.block]),
        "attn": lambda g: PrunedAttention(model.blocks[g.block]),
        "mlp": lambda g: PrunedMlp(model.blocks[g.block]),
        "attn_masked": lambda g: MaskedAttention(model.blocks[g.block]),
        "mlp_masked": lambda g: MaskedMlp(model.blocks[g.block]),
        "head": lambda g: Classifier(model),
        "dense": lambda g: DenseViT(model),
    }
    return [(g, modules[g.kind](g)) for g in graphs(model.cfg).values()]


def _specs(values: Any) -> list[TensorSpec]:
    return [
        TensorSpec(
            v.name,
            str(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
            [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
        )
        for v in values
    ]


def _as_args(inputs: dict[str, torch.Tensor]) -> tuple:
    """First input positional, the rest by keyword (optional inputs differ per block)."""
    first, *rest = inputs
    return (inputs[first], {k: inputs[k] for k in rest}) if rest else (inputs[first],)


def export_onnx(module: torch.nn.Module, graph: Graph, cfg: AdaViTConfig, path: Path, opset: int) -> Artifact:
    """Trace one module to ``path`` with ``graph``'s names and dynamic axes; describe it as a bundle artifact."""
    inputs = {p.name: _example(p, cfg) for p in graph.inputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            _as_args(inputs),
            str(path),
            input_names=list(inputs),
            output_names=[p.name for p in graph.outputs],
            dynamic_axes=graph.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path), load_external_data=False).graph
    return Artifact(path.name, sha256(path), _specs(proto.input), _specs(proto.output))


def add_variants(
    runtime: AdaptiveRuntime, precision: str, calib: CalibrationSet | None, step: Progress
) -> list[str]:
    """Write the ``precision`` variant of every graph into ``stage`` and register it in ``manifest``.

    A graph that stays float at this precision (``graphs.VARIANTS``: the
    policy graphs always, the classifier at int8; a graph the calibration set
    never ran, which has no activation ranges) gets its fp32 file as its
    variant, so every graph has one (what ``build-trt`` needs).
    Those are listed in ``manifest.parity["vs_fp32"][precision]["kept_float"]``.
    """
    from .calibration import fp16, int8

    stage, manifest = runtime.bundle, runtime.manifest
    calibrators = {}
    if precision == "int8":
        step(f"int8: calibrating activation ranges on {len(calib.images)} images")
        calibrators = int8.calibrate(runtime, calib.images)
    kept_float = []
    for name, graph in graphs(manifest.model).items():
        src = manifest.artifacts[name]
        dst = stage / f"{name}.{precision}.onnx"
        unobserved = precision == "int8" and not (name in calibrators and calibrators[name].observed)
        if not graph.converts_to(precision) or unobserved:
            manifest.artifacts[variant_key(name, precision)] = src
            kept_float.append(name)
            continue
        step(f"{precision}: {name}")
        if precision == "fp16":
            fp16.convert_fp16(stage / src.file, dst)
        else:
            calibrators[name].quantize(dst)
        proto = onnx.load(str(dst), load_external_data=False).graph
        manifest.artifacts[variant_key(name, precision)] = Artifact(dst.name, sha256(dst), _specs(proto.input), _specs(proto.output))
    return kept_float


def export_bundle(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    opset: int = MIN_OPSET,
    max_batch: int = 32,
    overwrite: bool = False,
    parity_images: np.ndarray | None = None,
    threads: int = 0,
    progress: Progress | None = None,
    budgets: str | Sequence[str] = (NATIVE,),
    calibration: str | Path | None = None,
    calib_count: int = 256,
    fp16: bool = False,
    int8: bool = False,
    **overrides: Any,
) -> Path:
    """Export ``checkpoint`` to a verified bundle directory and return its path.

    ``overrides`` are those of ``infer_config`` (``num_heads``,
    ``token_with_mlp``, thresholds). ``parity_images`` default to 8 seeded
    normal samples; ``threads`` sizes ONNX Runtime's pool for the parity check
    (it is sized once per process, so pass what the process will run with).
    ``budgets`` other than ``native`` and ``int8`` need ``calibration``: a
    folder of images, an ``.npz``/``.npy`` or ``"demo"`` (``calibration/data.py``).
    """
    if not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(
            f"--opset {opset} is not supported: choose {MIN_OPSET} (LayerNormalization as one op) "
            f"to {max_opset()} (the newest torch {torch.__version__} exports)"
        )
    check_max_batch(max_batch)
    names = parse_budgets(budgets)
    needs = [f"--budgets {n}" for n in names if n != NATIVE] + (["--int8"] if int8 else [])
    if needs and calibration is None:
        raise ConfigError(f"{' and '.join(needs[:2])} need a calibration set: pass --calib (a folder of images, an .npz, or demo)")
    step = progress or (lambda _: None)
    checkpoint = Path(checkpoint)
    step("loading checkpoint")
    model, ckpt = load_model(checkpoint, **overrides)
    cfg = model.cfg
    calib = None
    if calibration is not None:
        step("reading the calibration set")
        calib = load_calibration(calibration, cfg, calib_count)
    out = Path(out) if out else DEFAULT_OUT / checkpoint.name.split(".")[0]
    with staged_directory(out, overwrite, ours=is_bundle, what="a bundle") as stage, ExitStack() as opened:  # sessions close first
        artifacts = {}
        for graph, module in _graphs(model):
            step(f"tracing {graph.name}")
            artifacts[graph.name] = export_onnx(module, graph, cfg, stage / f"{graph.name}.onnx", opset)
        consts = {}
        for i, block in enumerate(model.blocks):
            for stage_name, value in block_constants(block).items():
                consts[f"{stage_name}_{i}"] = value.numpy()
        np.savez(stage / "constants.npz", **consts)
        artifacts["constants"] = Artifact("constants.npz", sha256(stage / "constants.npz"))
        manifest = Manifest(
            model=cfg,
            artifacts=artifacts,
            opset=opset,
            max_batch=max_batch,
            producer={
                "adavit_deploy": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "python": platform.python_version(),
            },
            # absolute: bench's reference engine finds it from any working directory
            source={"checkpoint": str(checkpoint.resolve()), "sha256": sha256(checkpoint), "kind": ckpt.kind},
        )
        step("checking parity")
        if parity_images is None:
            rng = np.random.default_rng(0)
            parity_images = rng.standard_normal((8, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
        runtime = opened.enter_context(AdaptiveRuntime(stage, manifest, get_backend("ort", threads), owns_backend=True))
        manifest.parity = parity_report(model, runtime, parity_images)
        if calib is not None:
            step(f"calibrating budgets {', '.join(names)} on {len(calib.images)} images")
            manifest.budgets, stats = calibrate_budgets(runtime, calib.images, names, progress=step)
            manifest.calibration = {**calib.record, "budgets": stats}
        check = calib.images if calib is not None else parity_images
        fp32 = runtime.infer(check, batch_size=32) if fp16 or int8 else None
        for precision, wanted in (("fp16", fp16), ("int8", int8)):
            if wanted:
                kept_float = add_variants(runtime, precision, calib, step)
                variant = opened.enter_context(AdaptiveRuntime(stage, manifest, runtime.backend, precision=precision))
                got = variant.infer(check, batch_size=32)
                manifest.parity.setdefault("vs_fp32", {})[precision] = {**compare(fp32, got), "kept_float": kept_float}
        (stage / "manifest.json").write_text(manifest.to_json())
    return out
