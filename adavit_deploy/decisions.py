"""The three decisions in the reference's shapes, and their per-block view.

The reference returns each decision only for the blocks that make it:
``head_select`` (B, blocks with head selection, H), ``layer_select``
(B, blocks with sub-layer selection, 2), ``token_select`` (B, blocks with
token selection, N), 0/1 floats. Which blocks and widths is ``layout``;
``per_block`` spreads a decision over every block (those that do not decide
run everything: ones), which is what GMACs counts and figures draw.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import AdaViTConfig

#: The decision outputs, in the reference's order.
NAMES = ("head_select", "layer_select", "token_select")


def layout(cfg: AdaViTConfig) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each decision's deciding blocks and width."""
    return {
        "head_select": (cfg.head_select, cfg.num_heads),
        "layer_select": (cfg.layer_select, 2),
        "token_select": (cfg.token_select, cfg.num_tokens),
    }


def select(cfg: AdaViTConfig, name: str, every_block: Sequence[np.ndarray], batch: int) -> np.ndarray:
    """(B, W) per block, every block -> the reference's (B, deciding blocks, W) float32."""
    blocks, width = layout(cfg)[name]
    if not blocks:
        return np.zeros((batch, 0, width), np.float32)
    return np.stack([every_block[b] for b in blocks], axis=1).astype(np.float32)


def per_block(cfg: AdaViTConfig, name: str, decided: np.ndarray) -> np.ndarray:
    """The reference's (B, deciding blocks, W) -> (B, depth, W) float64, ones where a block does not decide."""
    blocks, width = layout(cfg)[name]
    out = np.ones((len(decided), cfg.depth, width))
    out[:, list(blocks)] = decided
    return out


def ffn_tokens(cfg: AdaViTConfig, tokens: np.ndarray) -> np.ndarray:
    """The tokens a block's FFN sees: the MSA's kept ones with ``token_with_mlp``, else every token."""
    return tokens if cfg.token_with_mlp else np.ones_like(tokens)
