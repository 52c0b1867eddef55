"""Checkpoint -> bundle: trace every graph to ONNX, write the manifest, check parity.

The graph split (``model/pruned.py``): ``stem``, per block ``policy_L``
(stage 1) and ``attn_L`` / ``mlp_L`` (stage 2, dynamic batch, token and
head axes), ``head``, and ``dense`` (the baseline). ``constants.npz`` holds
what a block adds when every head is dropped.

Export writes the fp32 bundle and nothing else; parity against the PyTorch
model, the budgets' thresholds and the FP16 / INT8 variants are measured on
the finished (still staged) bundle by ``calibrate.py``, which opens it
through ``load_bundle`` like any other: the data flows one way.

We trace with the TorchScript exporter (``dynamo=False``): these are small
static modules, it exports each in ~0.1 s where the dynamo exporter takes
~4 s, and it emits opset-17 ``LayerNormalization`` as one op.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch

from . import __version__
from .atomic import staged_directory
from .bundle import DEFAULT_OUT, MANIFEST, NATIVE, Artifact, Manifest, check_max_batch, is_bundle, sha256
from .calibrate import calibrate_bundle, check_bf16, check_needs, graph_artifact
from .calibration import load_calibration, parse_budgets
from .config import AdaViTConfig
from .errors import ConfigError, param
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
    return graph_artifact(path)


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
    bf16: bool = False,
    **overrides: Any,
) -> Path:
    """Export ``checkpoint`` to a verified bundle directory and return its path.

    ``overrides`` are those of ``infer_config`` (``num_heads``,
    ``token_with_mlp``, thresholds). ``parity_images`` default to 8 seeded
    normal samples; ``threads`` sizes ONNX Runtime's pool for the parity check
    (it is sized once per process, so pass what the process will run with).
    ``budgets`` other than ``native`` and ``int8`` need ``calibration``: a
    folder of images, an ``.npz``/``.npy`` or ``"demo"`` (``calibration/data.py``).
    The fp32 bundle is written first; parity, budgets and the ``fp16`` / ``int8``
    graphs (and ``bf16``'s agreement, on OpenVINO) are then measured on it by
    ``calibrate.calibrate_bundle``, before the bundle is renamed into place.
    """
    if not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(
            f"{param('opset')} {opset} is not supported: choose {MIN_OPSET} (LayerNormalization as one op) "
            f"to {max_opset()} (the newest torch {torch.__version__} exports)"
        )
    check_max_batch(max_batch)
    names = parse_budgets(budgets)
    check_needs(names, int8, calibration)
    check_bf16(bf16, threads)
    step = progress or (lambda _: None)
    checkpoint = Path(checkpoint)
    step("loading checkpoint")
    model, ckpt = load_model(checkpoint, **overrides)
    cfg = model.cfg
    calib = None
    if calibration is not None:  # read before the export: a bad path costs nothing
        step("reading the calibration set")
        calib = load_calibration(calibration, cfg, calib_count)
    out = Path(out) if out else DEFAULT_OUT / checkpoint.name.split(".")[0]
    with staged_directory(out, overwrite, ours=is_bundle, what="a bundle") as stage:
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
        (stage / MANIFEST).write_text(manifest.to_json())  # the fp32 bundle, complete
        # then measured as any finished bundle is: parity against the model, budgets, variants
        calibrate_bundle(
            stage, budgets=names, calibration=calib, fp16=fp16, int8=int8, bf16=bf16, threads=threads, progress=step,
            model=model, parity_images=parity_images, staged=False,
        )  # fmt: skip
    return out
