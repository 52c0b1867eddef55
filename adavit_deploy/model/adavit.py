"""AdaViT (DeiT and T2T-ViT families) in PyTorch, reproducing the reference's eval semantics.

This is the *masked* formulation of ``ADAVIT.md``: every token and head is
computed and the decisions are applied as multiplicative masks, exactly as the
public reference does. It is the ground truth the exported, pruned runtime is
compared against, and the ``reference`` engine of ``bench``. Read top to
bottom: decision head, attention, block, model. The families differ only in
the stem (``patch_embed``, or ``tokens_to_token`` from ``model/t2t.py``),
LayerNorm eps, q/k/v bias and attention scale, all read from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import Mlp, PatchEmbed, trunc_normal_
from torch import nn

from ..config import AdaViTConfig, Thresholds
from ..decisions import NAMES, layout
from .t2t import TokensToToken


class SelectHead(nn.Module):
    """A decision head: one linear layer whose sigmoid is thresholded.

    Named ``mlp_head`` inside to keep the reference's checkpoint keys. In
    training mode (only used to train the demo model) it samples a Gumbel
    sigmoid and passes gradients straight through the hard 0/1 decision, as
    the reference trains; ``noise`` scales the Gumbel noise (the demo's recipe
    anneals it to 0, the deterministic policy of inference, at the end).
    """

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.mlp_head = nn.Linear(dim, out)
        self.noise = 1.0

    def forward(self, x: torch.Tensor, threshold: float) -> torch.Tensor:
        logits = self.mlp_head(x)
        if not self.training:
            return torch.sigmoid(logits) > threshold
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid(logits + self.noise * (torch.log(u) - torch.log1p(-u)))
        return (soft > threshold).float() + soft - soft.detach()


class AdaAttention(nn.Module):
    """MSA with separate q/k/v (reference layout), head and token masks."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, scale: float, token_select: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = scale
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key = nn.Linear(dim, dim, bias=qkv_bias)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.token_select = SelectHead(dim, 1) if token_select else None

    def forward(self, y: torch.Tensor, channels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``y`` (B,N,C) normed input; ``channels`` (B,C) and ``tokens`` (B,N) 0/1 masks."""
        B, N, C = y.shape
        c = channels[:, None, :]
        q, k, v = (
            (lin(y) * c).reshape(B, N, self.num_heads, -1).transpose(1, 2)
            for lin in (self.query, self.key, self.value)
        )
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if self.token_select is not None:
            kept = tokens.bool()
            # a kept token sees kept tokens only; a dropped token sees only itself
            allowed = (kept[:, :, None] & kept[:, None, :]) | torch.eye(N, dtype=torch.bool, device=y.device)
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out * c) * tokens[:, :, None]


@dataclass
class BlockDecisions:
    """One block's decisions for a batch, each a 0/1 float tensor."""

    layer: torch.Tensor  # (B, 2): MSA on, FFN on
    heads: torch.Tensor  # (B, H)
    tokens: torch.Tensor  # (B, N), class token always 1


class AdaBlock(nn.Module):
    def __init__(self, cfg: AdaViTConfig, index: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.token_with_mlp = cfg.token_with_mlp
        self.norm_policy = nn.LayerNorm(dim, eps=cfg.eps) if index in cfg.norm_policy else None
        self.norm1 = nn.LayerNorm(dim, eps=cfg.eps)
        self.attn = AdaAttention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_scale, index in cfg.token_select)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.eps)
        self.mlp = Mlp(dim, cfg.mlp_hidden, act_layer=nn.GELU)
        self.head_select = SelectHead(dim, cfg.num_heads) if index in cfg.head_select else None
        self.layer_select = SelectHead(dim, 2) if index in cfg.layer_select else None

    def policy_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the head and layer decisions read (ADAVIT.md step 1): the class token, through
        ``norm_policy`` where the block has one. One definition for the model, the exported
        policy graph and ``synthetic``'s decision-head scaling."""
        return x[:, 0] if self.norm_policy is None else self.norm_policy(x[:, 0])

    def decide(self, x: torch.Tensor, y: torch.Tensor, thr: Thresholds) -> BlockDecisions:
        """ADAVIT.md steps 1-4: the policy. ``y`` is ``norm1(x)``."""
        B, N, _ = x.shape
        ones = x.new_ones
        p = self.policy_input(x)
        layer = self.layer_select(p, thr.layer).float() if self.layer_select else ones(B, 2)
        heads = self.head_select(p, thr.head).float() if self.head_select else ones(B, self.num_heads)
        if self.attn.token_select is not None:
            patches = self.attn.token_select(y[:, 1:], thr.token).squeeze(-1).float()
            tokens = torch.cat([ones(B, 1), patches], dim=1)
        else:
            tokens = ones(B, N)
        return BlockDecisions(layer, heads, tokens)

    def forward(self, x: torch.Tensor, thr: Thresholds, force_dense: bool = False) -> tuple[torch.Tensor, BlockDecisions]:
        y = self.norm1(x)
        d = self.decide(x, y, thr)
        if force_dense:
            d = BlockDecisions(*(torch.ones_like(t) for t in (d.layer, d.heads, d.tokens)))
        channels = d.heads.repeat_interleave(x.shape[-1] // self.num_heads, dim=1)
        x = x + self.attn(y, channels, d.tokens) * d.layer[:, 0, None, None]
        # quirk of the reference: head decisions also prune fc1's input channels
        mlp = self.mlp(self.norm2(x) * channels[:, None, :])
        if self.token_with_mlp and self.attn.token_select is not None:
            mlp = mlp * d.tokens[:, :, None]
        return x + mlp * d.layer[:, 1, None, None], d


@dataclass
class AdaViTOutput:
    """Logits and decisions in the reference's shapes (0/1 floats)."""

    logits: torch.Tensor  # (B, classes)
    head_select: torch.Tensor  # (B, blocks with head selection, H)
    layer_select: torch.Tensor  # (B, blocks with sub-layer selection, 2)
    token_select: torch.Tensor  # (B, blocks with token selection, N)


class AdaViT(nn.Module):
    """Stem (patch embedding or tokens-to-token), class token + position table, AdaBlocks, norm, head."""

    def __init__(self, cfg: AdaViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        if cfg.t2t is None:
            self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, C)
        else:
            self.tokens_to_token = TokensToToken(cfg.t2t, cfg.img_size, cfg.in_chans, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, C))
        self.blocks = nn.ModuleList(AdaBlock(cfg, i) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(C, eps=cfg.eps)
        self.head = nn.Linear(C, cfg.num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's ViT init; only used for random checkpoints (tests, benchmarks)."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images) if self.cfg.t2t is None else self.tokens_to_token(images)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed

    def forward(self, images: torch.Tensor, force_dense: bool = False) -> AdaViTOutput:
        """``force_dense`` turns every decision on: a plain ViT of the same weights."""
        x = self.embed(images)
        decisions = []
        for block in self.blocks:
            x, d = block(x, self.cfg.thresholds, force_dense)
            decisions.append(d)
        logits = self.head(self.norm(x)[:, 0])

        def select(name: str, attr: str) -> torch.Tensor:
            blocks, width = layout(self.cfg)[name]
            if not blocks:
                return logits.new_zeros(len(logits), 0, width)
            return torch.stack([getattr(decisions[i], attr) for i in blocks], dim=1)

        return AdaViTOutput(logits, *(select(name, attr) for name, attr in zip(NAMES, ("heads", "layer", "tokens"))))

