"""What a checkpoint is, as a JSON-serialisable report (``adavit-deploy info``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .cost import dense_gmacs
from .model import build_model, infer_config, read_checkpoint


def describe_checkpoint(path: str | Path, **overrides: Any) -> dict[str, Any]:
    """Architecture, flags, thresholds, parameter count and dense GMACs."""
    ckpt = read_checkpoint(path)
    cfg = infer_config(ckpt, **overrides)
    model = build_model(cfg, ckpt.state_dict)  # proves the weights fit the config
    return {
        "path": str(path),
        "kind": ckpt.kind,
        "architecture": {
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "patch_size": cfg.patch_size,
            "img_size": cfg.img_size,
            "num_classes": cfg.num_classes,
            "mlp_hidden": cfg.mlp_hidden,
            "num_tokens": cfg.num_tokens,
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
