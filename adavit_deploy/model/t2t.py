"""The tokens-to-token stem of the T2T-ViT family, reproducing the reference (ADAVIT.md).

``images -> unfold(7, 4, 2) -> token attention 1 -> square map -> unfold(3, 2, 1)
-> token attention 2 -> square map -> unfold(3, 2, 1) -> project``: (B, P, C)
patch tokens, P = (img_size / 16)^2. Parameter names are the reference's
(``tokens_to_token.*``), so its checkpoints load as they are.

The soft split is written as one constant-index gather rather than
``nn.Unfold``: the same values bit for bit, and it traces to ``Reshape``,
``Gather``, ``Mul`` and ``Transpose``, which ONNX Runtime and TensorRT both
run (docs/PERFORMANCE.md, "The T2T-ViT family").
Read top to bottom: soft split, the two token attentions, the stem.
"""

from __future__ import annotations

import math

import torch
from timm.layers import Mlp
from torch import nn

from ..config import T2T_EPS, T2T_SOFT_SPLITS, T2TStem
from ..errors import CheckpointError


class SoftSplit(nn.Module):
    """``nn.Unfold(kernel, stride=stride, padding=padding)`` of a ``size`` x ``size`` map, then ``.transpose(1, 2)``.

    (B, C, size, size), or (B, size*size, C) tokens of that grid, -> (B, L, C*k*k),
    channel-major like torch (feature ``c*k*k + i*k + j`` is pixel (i, j) of
    channel c's window). One ``Gather`` of the flattened map by a constant
    index built here from Python ints, times a constant 0/1 mask that zeroes
    the window cells in the padding (they gather pixel 0): bit for bit
    ``nn.Unfold`` for finite inputs, and only ``Reshape``, ``Gather``, ``Mul``
    and ``Transpose`` in the traced graph: no shape arithmetic, no ``Pad``
    (whose pads the exporter computes at run time).
    """

    def __init__(self, size: int, channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.channels, self.kernel = size, channels, kernel
        self.out_size = (size + 2 * padding - kernel) // stride + 1
        # (k*k * L) positions, window offset-major then output position, as rows/cols of the unpadded map
        start = torch.arange(self.out_size) * stride - padding
        rows = (torch.arange(kernel)[:, None] + start[None, :])[:, None, :, None]  # (k, 1, out, 1)
        cols = (torch.arange(kernel)[:, None] + start[None, :])[None, :, None, :]  # (1, k, 1, out)
        inside = ((rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)).reshape(-1)
        index = (rows.clamp(0, size - 1) * size + cols.clamp(0, size - 1)).reshape(-1)
        self.register_buffer("index", torch.where(inside, index, 0), persistent=False)
        self.register_buffer("inside", inside.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = self.channels
        if x.dim() == 3:  # tokens of the square grid -> channel-major map
            x = x.transpose(1, 2)
        cols = x.reshape(-1, C, self.size * self.size).index_select(2, self.index) * self.inside  # (B, C, k*k*L)
        return cols.reshape(-1, C * self.kernel**2, self.out_size**2).transpose(1, 2)


class TokenPerformer(nn.Module):
    """Linear-time single-head attention with positive random features (the released stem).

    ``k, q, v = kqv(norm1(x))`` (rows k, q, v in that order, width ``token_dim``);
    ``prm(z) = exp(z @ w.T - |z|^2 / 2) / sqrt(m)``;
    ``y = v + proj(qp @ (kp.T @ v) / (qp @ sum(kp) + 1e-8))`` (residual on v);
    ``out = y + mlp(norm2(y))``. No attention scale.
    """

    def __init__(self, dim: int, stem: T2TStem) -> None:
        super().__init__()
        emb = stem.token_dim
        self.norm1 = nn.LayerNorm(dim, eps=T2T_EPS)
        self.kqv = nn.Linear(dim, 3 * emb)
        self.proj = nn.Linear(emb, emb)
        self.norm2 = nn.LayerNorm(emb, eps=T2T_EPS)
        self.mlp = nn.Sequential(nn.Linear(emb, emb), nn.GELU(), nn.Linear(emb, emb))  # keys mlp.0 / mlp.2
        # orthogonal rows of norm sqrt(m), as the reference draws them; checkpoints store their own
        w = nn.init.orthogonal_(torch.empty(stem.random_features, emb)) * math.sqrt(stem.random_features)
        self.w = nn.Parameter(w, requires_grad=False)

    def prm(self, z: torch.Tensor) -> torch.Tensor:
        m = self.w.shape[0]
        return torch.exp(z @ self.w.t() - (z * z).sum(-1, keepdim=True) / 2) / math.sqrt(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(self.norm1(x)).chunk(3, dim=-1)
        kp, qp = self.prm(k), self.prm(q)  # (B, T, m)
        norm = qp @ kp.sum(dim=1)[:, :, None]  # (B, T, 1)
        a = (qp @ (kp.transpose(1, 2) @ v)) / (norm + 1e-8)
        y = v + self.proj(a)
        return y + self.mlp(self.norm2(y))


class TokenAttention(nn.Module):
    """One head over all ``dim`` input channels to ``token_dim``, scale dim^-0.5, fused q/k/v without bias."""

    def __init__(self, dim: int, emb: int) -> None:
        super().__init__()
        self.scale = dim**-0.5  # the input width (147 or 576), not token_dim: the reference's choice
        self.qkv = nn.Linear(dim, 3 * emb, bias=False)
        self.proj = nn.Linear(emb, emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = ((q * self.scale) @ k.transpose(1, 2)).softmax(dim=-1)
        return v + self.proj(attn @ v)  # residual on v: the input has another width


class TokenTransformer(nn.Module):
    """``y = attn(norm1(x))``; ``out = y + mlp(norm2(y))`` (MLP ratio 1)."""

    def __init__(self, dim: int, stem: T2TStem) -> None:
        super().__init__()
        emb = stem.token_dim
        self.norm1 = nn.LayerNorm(dim, eps=T2T_EPS)
        self.attn = TokenAttention(dim, emb)
        self.norm2 = nn.LayerNorm(emb, eps=T2T_EPS)
        self.mlp = Mlp(emb, emb, act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x))
        return y + self.mlp(self.norm2(y))


TOKEN_ATTENTIONS = {"performer": TokenPerformer, "transformer": TokenTransformer}


class TokensToToken(nn.Module):
    """The T2T stem: images (B, in_chans, S, S) -> patch tokens (B, (S/16)^2, C)."""

    def __init__(self, stem: T2TStem, img_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        block = TOKEN_ATTENTIONS[stem.attention]
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = T2T_SOFT_SPLITS
        self.soft_split0 = SoftSplit(img_size, in_chans, k0, s0, p0)
        self.soft_split1 = SoftSplit(self.soft_split0.out_size, stem.token_dim, k1, s1, p1)
        self.soft_split2 = SoftSplit(self.soft_split1.out_size, stem.token_dim, k2, s2, p2)
        self.attention1 = block(in_chans * k0 * k0, stem)
        self.attention2 = block(stem.token_dim * k1 * k1, stem)
        self.project = nn.Linear(stem.token_dim * k2 * k2, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.attention1(self.soft_split0(images))
        x = self.attention2(self.soft_split1(x))
        return self.project(self.soft_split2(x))


def stem_from_state(state_dict: dict[str, torch.Tensor]) -> tuple[T2TStem, int]:
    """The stem's token attention, ``token_dim`` and input channels, read off ``tokens_to_token.*``.

    A performer stores its random features (``attention1.w``), a transformer
    its fused ``attention1.attn.qkv``; the widths come from the tensors.
    """
    p = "tokens_to_token.attention1."
    if f"{p}w" in state_dict and f"{p}proj.weight" in state_dict:
        stem = T2TStem("performer", state_dict[f"{p}proj.weight"].shape[0], state_dict[f"{p}w"].shape[0])
    elif f"{p}attn.qkv.weight" in state_dict and f"{p}attn.proj.weight" in state_dict:
        stem = T2TStem("transformer", state_dict[f"{p}attn.proj.weight"].shape[0])
    else:
        raise CheckpointError(
            "tokens_to_token.* holds neither a performer stem (attention1.w, attention1.proj) "
            "nor a transformer stem (attention1.attn.qkv, attention1.attn.proj)"
        )
    kernel = T2T_SOFT_SPLITS[0][0]
    norm = state_dict.get(f"{p}norm1.weight")
    in_chans, rest = divmod(0 if norm is None else norm.shape[0], kernel * kernel)
    if rest or not in_chans:
        raise CheckpointError(f"tokens_to_token.attention1.norm1 is not {kernel}x{kernel} windows of whole channels")
    return stem, in_chans
