"""Exact multiply-accumulate counts of the pruned execution (ADAVIT.md).

Per block and sample, with K kept tokens, k kept heads (kd = k*d channels)
and MLP hidden size M: MSA ``3*K*C*kd + 2*K*K*kd + K*kd*C``; FFN
``K'*kd*M + K'*M*C`` where K' is K when the FFN is token-masked, else N.
With no head kept the FFN input is all zero, so its output is the constant
``fc2(gelu(b1))``: 0 MACs, as the runtime adds that constant. Stem (patch
projection) and classifier are added once. Norms, softmax and the decision
heads are not counted (under 0.1% for DeiT-S), as in the paper's tables;
the T2T stem is counted like the reference's fvcore table (``t2t_stem_macs``).
"""

from __future__ import annotations

import numpy as np

from .config import T2T_SOFT_SPLITS, AdaViTConfig
from .decisions import per_block


def block_macs(cfg: AdaViTConfig, tokens, heads, attn_on, mlp_on):
    """MACs of one block. Arguments broadcast: scalars or numpy arrays."""
    C, M, N = cfg.embed_dim, cfg.mlp_hidden, cfg.num_tokens
    K = tokens * 1.0
    kd = heads * float(cfg.head_dim)
    msa = 3 * K * C * kd + 2 * K * K * kd + K * kd * C
    k_ffn = K if cfg.token_with_mlp else K * 0 + N
    ffn = (k_ffn * kd * M + k_ffn * M * C) * (kd > 0)
    return attn_on * msa + mlp_on * ffn


#: MACs per element of an affine LayerNorm as fvcore counts it (mean, variance, normalise, scale, shift).
LAYERNORM_MACS = 5


def t2t_stem_macs(cfg: AdaViTConfig) -> float:
    """The tokens-to-token stem (``model/t2t.py``), counted like the reference's fvcore table.

    Every matmul of the two token attentions and the projection, plus their
    LayerNorms (5 per element): the stem's tokens are many (3136 at 224 px)
    and wide (147, 576 channels), so its norms are 2% of it (0.006 of the
    performer stem's 0.312 GMACs), where the blocks' are ~0.2% and not counted.
    The soft splits only copy; ``exp`` and the attention's divisions are not counted.
    """
    stem = cfg.t2t
    e, m = stem.token_dim, stem.random_features
    (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = T2T_SOFT_SPLITS
    side1 = (cfg.img_size + 2 * p0 - k0) // s0 + 1
    side2 = (side1 + 2 * p1 - k1) // s1 + 1
    side3 = (side2 + 2 * p2 - k2) // s2 + 1
    macs = side3 * side3 * e * k2 * k2 * cfg.embed_dim  # project
    for T, d in ((side1 * side1, cfg.in_chans * k0 * k0), (side2 * side2, e * k1 * k1)):
        macs += T * d * 3 * e + T * e * e + 2 * T * e * e  # kqv, proj, MLP (ratio 1)
        macs += LAYERNORM_MACS * T * (d + e)  # norm1, norm2
        if stem.attention == "performer":  # prm(k), prm(q); kp^T v, qp (kp^T v); qp . sum(kp)
            macs += 2 * T * e * m + 2 * T * m * e + T * m
        else:  # one head over all T tokens: q k^T, attn v
            macs += 2 * T * T * e
    return float(macs)


def fixed_macs(cfg: AdaViTConfig) -> float:
    """Stem (patch projection, or the T2T stem) plus classifier: paid by every sample."""
    if cfg.t2t is None:
        stem = float(cfg.num_patches * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2)
    else:
        stem = t2t_stem_macs(cfg)
    return float(stem + cfg.embed_dim * cfg.num_classes)


def dense_gmacs(cfg: AdaViTConfig) -> float:
    """GMACs with every decision on (the plain ViT of the same weights)."""
    block = block_macs(cfg, np.float64(cfg.num_tokens), np.float64(cfg.num_heads), 1, 1)
    return (cfg.depth * float(block) + fixed_macs(cfg)) / 1e9


def sample_gmacs(cfg: AdaViTConfig, head_select, layer_select, token_select) -> np.ndarray:
    """GMACs per sample (B,) from numpy decisions in the reference's shapes."""
    heads = per_block(cfg, "head_select", head_select).sum(-1)  # (B, depth), counted in float64
    layers = per_block(cfg, "layer_select", layer_select)
    tokens = per_block(cfg, "token_select", token_select).sum(-1)
    macs = block_macs(cfg, tokens, heads, layers[..., 0], layers[..., 1])
    total = np.full(len(macs), fixed_macs(cfg))
    for block in range(cfg.depth):  # block by block, as the runtime adds them
        total = total + macs[:, block]
    return total / 1e9
