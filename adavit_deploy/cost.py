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


def block_macs(cfg: AdaViTConfig, tokens: np.ndarray, heads: np.ndarray, attn_on: np.ndarray, mlp_on: np.ndarray) -> np.ndarray:
    """MACs of one block; arguments broadcast (per sample arrays or scalars)."""
    C, M, N = cfg.embed_dim, cfg.mlp_hidden, cfg.num_tokens
    K = np.asarray(tokens, dtype=np.float64)
    kd = np.asarray(heads, dtype=np.float64) * cfg.head_dim
    msa = 3 * K * C * kd + 2 * K * K * kd + K * kd * C
    k_ffn = K if cfg.token_with_mlp else np.full_like(K, N)
    ffn = np.where(kd > 0, k_ffn * kd * M + k_ffn * M * C, 0.0)
    return np.asarray(attn_on) * msa + np.asarray(mlp_on) * ffn


def fixed_macs(cfg: AdaViTConfig) -> float:
    """Stem (patch projection) plus classifier: paid by every sample."""
    stem = cfg.num_patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2
    return float(stem + cfg.embed_dim * cfg.num_classes)


def dense_gmacs(cfg: AdaViTConfig) -> float:
    """GMACs with every decision on (the plain ViT of the same weights)."""
    per_block = block_macs(cfg, cfg.num_tokens, cfg.num_heads, 1, 1)
    return (cfg.depth * float(per_block) + fixed_macs(cfg)) / 1e9


def sample_gmacs(cfg: AdaViTConfig, head_select: np.ndarray, layer_select: np.ndarray, token_select: np.ndarray) -> np.ndarray:
    """GMACs per sample (B,) from decisions in the reference's shapes."""
    B = len(head_select) if len(head_select) else len(token_select) if len(token_select) else len(layer_select)
    total = np.full(B, fixed_macs(cfg))
    for block in range(cfg.depth):
        heads = head_select[:, cfg.head_select.index(block)].sum(-1) if block in cfg.head_select else cfg.num_heads
        layer = layer_select[:, cfg.layer_select.index(block)] if block in cfg.layer_select else np.ones((B, 2))
        tokens = token_select[:, cfg.token_select.index(block)].sum(-1) if block in cfg.token_select else cfg.num_tokens
        total += block_macs(cfg, tokens, heads, layer[:, 0], layer[:, 1])
    return total / 1e9
