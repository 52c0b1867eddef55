"""Random test models: the small architectures and their seeded, decision-spread AdaViTs.

Plain functions and constants that test files import (``pythonpath = ["tests"]``
in pyproject.toml); the fixtures that hand them out live in ``conftest.py``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from adavit_deploy.config import AdaViTConfig, T2TStem
from adavit_deploy.model import AdaViT

#: Architecture of the random test models (small enough to be instant on a CPU).
SMALL_ARCH: dict[str, Any] = dict(
    img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_hidden=96, num_classes=7
)

#: A small Ada-T2T-ViT with the same token count as SMALL_ARCH (64 px / 16 = 4 x 4 patches).
T2T_SMALL_ARCH: dict[str, Any] = dict(
    SMALL_ARCH, img_size=64, patch_size=16, qkv_bias=False, eps=1e-5, t2t=T2TStem("performer", token_dim=16, random_features=8)
)



def _spread_decisions(model: AdaViT, seed: int) -> None:
    """Re-initialise every decision head so its decisions vary with the input.

    With timm's init (tiny weights, zero bias) every sigmoid sits at ~0.5: the
    token selector (threshold 0.6) would drop every patch and the others would
    be coin flips on noise. Like the reference fixtures, each head is instead
    calibrated on a random batch, block by block (a pre-hook runs before the
    head's first use, so later blocks see the calibrated earlier decisions):
    random weights scaled to unit logit spread and a bias that puts the median
    exactly at the threshold, i.e. each decision is taken about half the time.
    """
    cfg, thr = model.cfg, model.cfg.thresholds
    gen = torch.Generator().manual_seed(seed + 1)
    heads: list[tuple[nn.Linear, float]] = []
    for block in model.blocks:
        if block.layer_select is not None:
            heads.append((block.layer_select.mlp_head, thr.layer))
        if block.head_select is not None:
            heads.append((block.head_select.mlp_head, thr.head))
        if block.attn.token_select is not None:
            heads.append((block.attn.token_select.mlp_head, thr.token))
    handles = []

    def calibrate(threshold: float, module: nn.Linear, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        w = torch.randn(module.out_features, module.in_features, generator=gen)
        z = x @ w.T
        std = z.std(dim=0).clamp_min(1e-6)
        module.weight.copy_(w / std[:, None])
        module.bias.copy_(math.log(threshold / (1 - threshold)) - torch.quantile(z, 0.5, dim=0) / std)

    for linear, threshold in heads:
        handles.append(linear.register_forward_pre_hook(partial(calibrate, threshold)))
    images = torch.randn(8, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen)
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()


def build_random_model(seed: int = 0, spread: bool = True, **config_kwargs: Any) -> AdaViT:
    torch.manual_seed(seed)
    model = AdaViT(AdaViTConfig.from_flags(**{**SMALL_ARCH, **config_kwargs})).eval()
    if spread and model.cfg.is_adaptive:
        _spread_decisions(model, seed)
    return model
