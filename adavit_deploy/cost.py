"""Exact multiply-accumulate counts of the pruned execution (ADAVIT.md).

Per block and sample, with K kept tokens, k kept heads (kd = k*d channels)
and MLP hidden size M: MSA ``3*K*C*kd + 2*K*K*kd + K*kd*C``; FFN
``K'*kd*M + K'*M*C`` where K' is K when the FFN is token-masked, else N.
With no head kept the FFN input is all zero, so its output is the constant
``fc2(gelu(b1))``: 0 MACs, as the runtime adds that constant. Stem (patch
projection) and classifier are added once. Norms, softmax and the decision
heads are not counted (under 0.1% for DeiT-S), as in the paper's tables.
"""

from __future__ import annotations

import numpy as np

from .config import AdaViTConfig


def block_macs(cfg: AdaViTConfig, tokens, heads, attn_on, mlp_on):
    """MACs of one block. Arguments broadcast: scalars, numpy arrays or torch
    tensors (the demo model's training differentiates through this)."""
    C, M, N = cfg.embed_dim, cfg.mlp_hidden, cfg.num_tokens
    K = tokens * 1.0
    kd = heads * float(cfg.head_dim)
    msa = 3 * K * C * kd + 2 * K * K * kd + K * kd * C
    k_ffn = K if cfg.token_with_mlp else K * 0 + N
    ffn = (k_ffn * kd * M + k_ffn * M * C) * (kd > 0)
    return attn_on * msa + mlp_on * ffn


def fixed_macs(cfg: AdaViTConfig) -> float:
    """Stem (patch projection) plus classifier: paid by every sample."""
    stem = cfg.num_patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
    return float(stem + cfg.embed_dim * cfg.num_classes)


def dense_gmacs(cfg: AdaViTConfig) -> float:
    """GMACs with every decision on (the plain ViT of the same weights)."""
    per_block = block_macs(cfg, np.float64(cfg.num_tokens), np.float64(cfg.num_heads), 1, 1)
    return (cfg.depth * float(per_block) + fixed_macs(cfg)) / 1e9


def sample_gmacs(cfg: AdaViTConfig, head_select, layer_select, token_select):
    """GMACs per sample (B,) from decisions in the reference's shapes (numpy or torch)."""
    if isinstance(token_select, np.ndarray):  # count in float64, whatever the decisions' dtype
        head_select, layer_select, token_select = (np.asarray(a, np.float64) for a in (head_select, layer_select, token_select))
    total = fixed_macs(cfg) + 0.0 * token_select.sum((1, 2))  # (B,), whatever the array type
    for block in range(cfg.depth):
        heads = head_select[:, cfg.head_select.index(block)].sum(-1) if block in cfg.head_select else cfg.num_heads
        tokens = token_select[:, cfg.token_select.index(block)].sum(-1) if block in cfg.token_select else cfg.num_tokens
        attn_on = mlp_on = 1
        if block in cfg.layer_select:
            layer = layer_select[:, cfg.layer_select.index(block)]
            attn_on, mlp_on = layer[:, 0], layer[:, 1]
        total = total + block_macs(cfg, tokens, heads, attn_on, mlp_on)
    return total / 1e9
