"""What a checkpoint is, as a JSON-serialisable report (``adavit-deploy info``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import AdaViTConfig
from .cost import dense_gmacs
from .model import build_model, infer_config, read_checkpoint
from .model.checkpoint import qk_scale_rule


def describe_checkpoint(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """Architecture, flags, thresholds, parameter count and dense GMACs."""
    ckpt = read_checkpoint(path)
    cfg = infer_config(ckpt, **overrides)
    model = build_model(cfg, ckpt.state_dict)  # proves the weights fit the config
    return {
        "path": str(path),
        "kind": ckpt.kind,
        "architecture": {
            "family": "T2T-ViT" if cfg.t2t else "DeiT",
            "stem": _stem(cfg),
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "patch_size": cfg.patch_size,
            "img_size": cfg.img_size,
            "num_classes": cfg.num_classes,
            "mlp_hidden": cfg.mlp_hidden,
            "num_tokens": cfg.num_tokens,
            "qkv_bias": cfg.qkv_bias,
            "layernorm_eps": cfg.eps,
            "attention_scale": f"{cfg.attn_scale:.6g} ({qk_scale_rule(ckpt.args, overrides, cfg.embed_dim, cfg.t2t is not None)[1]})",
        },
        "flags": cfg.flags(),
        "decision_blocks": {
            "head_select": list(cfg.head_select),
            "layer_select": list(cfg.layer_select),
            "token_select": list(cfg.token_select),
            "norm_policy": list(cfg.norm_policy),
        },
        "thresholds": dataclasses.asdict(cfg.thresholds),
        "checkpoint_args": {k: v for k, v in ckpt.args.items() if isinstance(v, (bool, int, float, str))},
        "parameters": sum(p.numel() for p in model.parameters()),
        "dense_gmacs": round(dense_gmacs(cfg), 4),
    }


def _stem(cfg: AdaViTConfig) -> str:
    if cfg.t2t is None:
        return f"patch embedding {cfg.patch_size}x{cfg.patch_size}"
    return f"tokens-to-token, {cfg.t2t.attention} token attention, token_dim {cfg.t2t.token_dim}"
