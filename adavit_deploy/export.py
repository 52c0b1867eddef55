"""Checkpoint -> bundle: trace every graph to ONNX, write the manifest, check parity.

The graph split (``model/pruned.py``): ``stem``, per block ``policy_L``
(stage 1) and ``attn_L`` / ``mlp_L`` (stage 2, dynamic batch, token and
head axes), ``head``, and ``dense`` (the baseline). ``constants.npz`` holds
what a block adds when every head is dropped.

We trace with the TorchScript exporter (``dynamo=False``): these are small
static modules, it exports each in ~0.1 s where the dynamo exporter takes
~4 s, and it emits opset-17 ``LayerNormalization`` as one op.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch

from . import __version__
from .bundle import Artifact, Manifest, TensorSpec, sha256, staged_directory
from .errors import ConfigError
from .model import AdaViT, load_model
from .model.pruned import Classifier, DenseViT, Policy, PrunedAttention, PrunedMlp, Stem, block_constants
from .runtime.adaptive import AdaptiveRuntime
from .runtime.backends import get_backend

DEFAULT_OUT = Path("export/bundles")
MIN_OPSET = 17

Progress = Callable[[str], None]


def _graphs(model: AdaViT) -> list[tuple[str, torch.nn.Module, dict[str, torch.Tensor], list[str], dict]]:
    """(name, module, example inputs, output names, dynamic axes) of every graph."""
    cfg = model.cfg
    B, N, C = 2, cfg.num_tokens, cfg.embed_dim
    images = torch.zeros(B, cfg.in_chans, cfg.img_size, cfg.img_size)
    x = torch.randn(B, N, C)
    heads = torch.arange(cfg.num_heads, dtype=torch.int64)
    tokens_axes = {"x": {0: "batch", 1: "tokens"}, "y": {0: "batch", 1: "tokens"}}
    graphs = [("stem", Stem(model), {"images": images}, ["tokens"], {"images": {0: "batch"}, "tokens": {0: "batch"}})]
    for i, block in enumerate(model.blocks):
        policy = Policy(block, cfg.thresholds)
        if policy.outputs:
            axes = {"x": {0: "batch"}, **{o: {0: "batch"} for o in policy.outputs}}
            graphs.append((f"policy_{i}", policy, {"x": x}, policy.outputs, axes))
        select = i in cfg.head_select
        head_in = {"heads": heads} if select else {}
        head_axes = {"heads": {0: "kept_heads"}} if select else {}
        attn_in = {"x": x, **head_in}
        attn_axes = {**tokens_axes, **head_axes}
        if i in cfg.token_select:
            attn_in["key_bias"] = torch.zeros(B, N)
            attn_axes["key_bias"] = {0: "batch", 1: "tokens"}
        graphs.append((f"attn_{i}", PrunedAttention(block), attn_in, ["y"], attn_axes))
        graphs.append((f"mlp_{i}", PrunedMlp(block), {"x": x, **head_in}, ["y"], {**tokens_axes, **head_axes}))
    graphs.append(("head", Classifier(model), {"cls": x[:, 0]}, ["logits"], {"cls": {0: "batch"}, "logits": {0: "batch"}}))
    graphs.append(("dense", DenseViT(model), {"images": images}, ["logits"], {"images": {0: "batch"}, "logits": {0: "batch"}}))
    return graphs


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


def export_onnx(module: torch.nn.Module, inputs: dict[str, torch.Tensor], outputs: list[str], axes: dict, path: Path, opset: int) -> Artifact:
    """Trace one module to ``path`` and describe it as a bundle artifact."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            _as_args(inputs),
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    graph = onnx.load(str(path), load_external_data=False).graph
    return Artifact(path.name, sha256(path), _specs(graph.input), _specs(graph.output))


def parity_report(model: AdaViT, runtime: AdaptiveRuntime, images: np.ndarray) -> dict[str, Any]:
    """PyTorch masked model vs the bundle on the same inputs."""
    with torch.no_grad():
        ref = model(torch.from_numpy(images))
        dense_ref = model(torch.from_numpy(images), force_dense=True).logits.numpy()
    got = runtime.infer(images)
    agree, total = 0, 0
    for key in ("head_select", "layer_select", "token_select"):
        a, b = getattr(ref, key).numpy(), getattr(got, key)
        agree += int((a == b).sum())
        total += a.size
    return {
        "samples": int(len(images)),
        "max_abs_logit_diff": float(np.abs(ref.logits.numpy() - got.logits).max()),
        "top1_agreement": float((ref.logits.numpy().argmax(1) == got.logits.argmax(1)).mean()),
        "decision_agreement": float(agree / total) if total else 1.0,
        "dense_max_abs_logit_diff": float(np.abs(dense_ref - runtime.dense(images)).max()),
        "mean_gmacs": float(got.gmacs.mean()),
    }


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
    **overrides: Any,
) -> Path:
    """Export ``checkpoint`` to a verified bundle directory and return its path.

    ``overrides`` are those of ``infer_config`` (``num_heads``,
    ``token_with_mlp``, thresholds). ``parity_images`` default to 8 seeded
    normal samples; ``threads`` sizes ONNX Runtime's pool for the parity check
    (it is sized once per process, so pass what the process will run with).
    """
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    if max_batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
    step = progress or (lambda _: None)
    checkpoint = Path(checkpoint)
    step("loading checkpoint")
    model, ckpt = load_model(checkpoint, **overrides)
    cfg = model.cfg
    out = Path(out) if out else DEFAULT_OUT / checkpoint.name.split(".")[0]
    with staged_directory(out, overwrite) as stage:
        artifacts = {}
        for name, module, inputs, outputs, axes in _graphs(model):
            step(f"tracing {name}")
            artifacts[name] = export_onnx(module, inputs, outputs, axes, stage / f"{name}.onnx", opset)
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
            source={"checkpoint": str(checkpoint), "sha256": sha256(checkpoint), "kind": ckpt.kind},
        )
        step("checking parity")
        if parity_images is None:
            rng = np.random.default_rng(0)
            parity_images = rng.standard_normal((8, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)
        runtime = AdaptiveRuntime(stage, manifest, get_backend("ort", threads))
        manifest.parity = parity_report(model, runtime, parity_images)
        (stage / "manifest.json").write_text(manifest.to_json())
    return out
