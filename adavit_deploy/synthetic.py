"""Random-weight AdaViT checkpoints whose decisions vary per input at a chosen cost.

No trained Ada-DeiT-S or Ada-T2T-ViT-19 can be downloaded here, yet speed
must be measured on their shapes at the paper's ~50% (DeiT-S) and ~46%
(T2T-ViT-19: 3.9 of 8.5 GMACs) of dense. This makes such a model, of any
config and either family (``config.preset``): timm's random
init, decision heads rescaled so their logits are ~N(0, 1) across inputs
(decisions really depend on the image), and one bias offset found by
bisection so the mean cost hits ``target`` of the dense GMACs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import AdaViTConfig
from .cost import dense_gmacs, sample_gmacs
from .model import AdaViT, save_checkpoint

TOKEN_LOGIT = float(np.log(0.6 / 0.4))  # sigmoid(z) > 0.6  <=>  z > this


@torch.no_grad()
def _gmacs_ratio(model: AdaViT, images: torch.Tensor) -> float:
    out = model(images)
    g = sample_gmacs(model.cfg, out.head_select.numpy(), out.layer_select.numpy(), out.token_select.numpy())
    return float(g.mean() / dense_gmacs(model.cfg))


@torch.no_grad()
def _set_offset(model: AdaViT, offset: float) -> None:
    for block in model.blocks:
        if block.head_select is not None:
            block.head_select.mlp_head.bias.fill_(offset + 0.5)
        if block.layer_select is not None:
            block.layer_select.mlp_head.bias.fill_(offset + 1.5)
        if block.attn.token_select is not None:
            block.attn.token_select.mlp_head.bias.fill_(TOKEN_LOGIT + offset)


@torch.no_grad()
def random_adavit(cfg: AdaViTConfig, target: float = 0.5, seed: int = 0, samples: int = 8, steps: int = 14) -> AdaViT:
    """A random AdaViT whose mean GMACs on normal-noise images is ``target`` x dense.

    ``steps`` bisection steps set the logit offset to within ``8 / 2**steps``
    (one masked forward of ``samples`` images each: what a test at 224 px pays for).
    """
    torch.manual_seed(seed)
    model = AdaViT(cfg).eval()
    images = torch.randn(samples, cfg.in_chans, cfg.img_size, cfg.img_size)
    x = model.embed(images)
    for block in model.blocks:  # scale each head to its input's spread on the dense path
        p = block.policy_input(x)
        for head in (block.head_select, block.layer_select):
            if head is not None:
                w = torch.randn_like(head.mlp_head.weight)
                head.mlp_head.weight.copy_(w / (p @ w.t()).std(0, keepdim=True).t().clamp_min(1e-6))
        if block.attn.token_select is not None:
            w = torch.randn_like(block.attn.token_select.mlp_head.weight)
            block.attn.token_select.mlp_head.weight.copy_(w / cfg.embed_dim**0.5)
        x, _ = block(x, cfg.thresholds, force_dense=True)
    if cfg.is_adaptive:
        lo, hi = -4.0, 4.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            _set_offset(model, mid)
            lo, hi = (lo, mid) if _gmacs_ratio(model, images) > target else (mid, hi)
        _set_offset(model, (lo + hi) / 2)
    return model


def random_checkpoint(cfg: AdaViTConfig, path: str | Path, target: float = 0.5, seed: int = 0) -> Path:
    """Write ``random_adavit(cfg, target, seed)`` in the reference checkpoint format."""
    save_checkpoint(random_adavit(cfg, target, seed), path)
    return Path(path)
