"""The pruned execution graphs, as small torch modules that ``export`` traces.

The masked model computes everything and multiplies by 0; these modules
compute only what a decision keeps, from the same weights:

- ``Stem``: patch embedding (or the T2T stem) + class token + position table.
- ``Policy``: ADAVIT.md steps 1-4 of one block (stage 1), outputs the
  decision probabilities; the host thresholds them, so one graph serves
  every budget (``calibration/budgets.py``).
- ``PrunedAttention`` / ``PrunedMlp``: steps 5 and 6 on a dense tensor of the
  kept tokens only, with the kept heads' weights gathered by an index input
  (stage 2). One graph serves every head count and token count.
- ``MaskedAttention`` / ``MaskedMlp``: the same stages over every head from
  constant weights, a per-sample mask zeroing the dropped heads (the
  ``masked`` tactic, ``runtime/tactics.py``).
- ``Classifier``: final norm + head on the class token.
- ``DenseViT``: every decision on, the baseline of the same weights.

Data-dependent ops (NonZero, TopK) stay on the host: the graphs only see
dense tensors and index vectors, which TensorRT handles as well as ORT.
"""

from __future__ import annotations

import torch
from torch import nn

from .adavit import AdaBlock, AdaViT


class Stem(nn.Module):
    def __init__(self, model: AdaViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


class Policy(nn.Module):
    """One block's decision probabilities: ``layer`` (B,2), ``heads`` (B,H), ``patches`` (B,P).

    ``sigmoid(logits)``, which the host compares with the budget's thresholds
    exactly as the reference does (``p > threshold`` in float32). Only the
    outputs the block has are produced (see ``outputs``); the class token's
    "kept" bit is added by the host.
    """

    def __init__(self, block: AdaBlock) -> None:
        super().__init__()
        self.block = block
        self.outputs = [
            name
            for name, present in (
                ("layer", block.layer_select is not None),
                ("heads", block.head_select is not None),
                ("patches", block.attn.token_select is not None),
            )
            if present
        ]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, out = self.block, []
        p = b.policy_input(x)
        if b.layer_select is not None:
            out.append(torch.sigmoid(b.layer_select.mlp_head(p)))
        if b.head_select is not None:
            out.append(torch.sigmoid(b.head_select.mlp_head(p)))
        if b.attn.token_select is not None:
            out.append(torch.sigmoid(b.attn.token_select.mlp_head(b.norm1(x[:, 1:]))).squeeze(-1))
        return tuple(out)


def _kept_rows(w: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
    """(H, d, out) -> (k*d, out): the weight rows fed by the kept heads' channels.

    ``out`` is a Python int in the traced graph (not read off the gathered
    tensor), so ORT knows the product's last dim and fuses the bias (+GELU).
    """
    out = int(w.shape[-1])
    if heads is not None:
        w = w.index_select(0, heads)
    return w.reshape(-1, out)


class PrunedAttention(nn.Module):
    """``x + MSA(norm1(x))`` on kept tokens ``x`` (G,K,C) and kept ``heads`` (k,).

    q, k and v weights are stacked so the kept heads' rows of all three are
    gathered at once and projected by one MatMul.
    ``key_bias`` (G,K) is 0 for real tokens and -inf for padding, so groups of
    samples with different token counts share one call exactly.
    """

    def __init__(self, block: AdaBlock) -> None:
        super().__init__()
        a, H = block.attn, block.num_heads
        C = a.proj.weight.shape[0]
        self.norm1 = block.norm1
        self.scale = a.scale
        self.head_dim = C // H  # a Python int: the traced graph must not read it off the gathered weight
        lins = (a.query, a.key, a.value)
        # (H, 3, d, C): each head's q/k/v rows are one contiguous block, so the
        # gather is k memcpys (heads on axis 1 made it a quarter of the call)
        self.register_buffer("wqkv", torch.stack([l.weight.detach().reshape(H, -1, C) for l in lins], 1).contiguous())
        biases = None if a.query.bias is None else torch.stack([l.bias.detach().reshape(H, -1) for l in lins], 1)
        self.register_buffer("bqkv", None if biases is None else biases.contiguous())  # T2T-ViT has none
        self.register_buffer("wp", a.proj.weight.detach().t().reshape(H, -1, C).contiguous())
        self.register_buffer("bp", a.proj.bias.detach())

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, heads, key_bias)

    def attend(
        self, x: torch.Tensor, heads: torch.Tensor | None, key_bias: torch.Tensor | None, head_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Kept ``heads`` (gathered weights) or every head, ``head_mask`` (G,H) zeroing the dropped ones."""
        G, K, _ = x.shape
        C = int(self.wqkv.shape[-1])  # static in the graph, as in _kept_rows
        w = self.wqkv if heads is None else self.wqkv.index_select(0, heads)
        qkv = self.norm1(x) @ w.reshape(-1, C).t()
        if self.bqkv is not None:
            qkv = qkv + (self.bqkv if heads is None else self.bqkv.index_select(0, heads)).reshape(-1)
        d = self.head_dim
        q, k, v = qkv.reshape(G, K, -1, 3, d).permute(3, 0, 2, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if key_bias is not None:
            scores = scores + key_bias[:, None, None, :]
        out = scores.softmax(dim=-1) @ v  # (G, heads, K, d)
        if head_mask is not None:
            # a dropped head outputs 0 (ADAVIT.md step 5); Where, not a product: an
            # overflow in a head we discard must not become NaN in the sum
            out = torch.where(head_mask[:, :, None, None] > 0, out, 0.0)
        out = out.transpose(1, 2).reshape(G, K, -1)
        return x + out @ _kept_rows(self.wp, heads) + self.bp


class MaskedAttention(PrunedAttention):
    """The ``masked`` tactic of ``PrunedAttention``: every head, from constant weights.

    The dropped heads are computed and then zeroed per sample by
    ``head_mask`` (G,H), so ORT pre-packs the weights and one call serves
    samples of any head set, at the price of the dropped heads' FLOPs.
    """

    def forward(self, x: torch.Tensor, head_mask: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, None, key_bias, head_mask)


class PrunedMlp(nn.Module):
    """``x + FFN(norm2(x))`` where fc1 sees only the kept heads' channels."""

    def __init__(self, block: AdaBlock) -> None:
        super().__init__()
        m, H = block.mlp, block.num_heads
        self.norm2 = block.norm2
        self.register_buffer("w1", m.fc1.weight.detach().t().reshape(H, -1, m.fc1.weight.shape[0]).contiguous())
        self.register_buffer("b1", m.fc1.bias.detach())
        self.act = m.act
        self.fc2 = m.fc2

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        z = self.norm2(x)
        if heads is not None:
            z = z.reshape(*z.shape[:-1], *self.w1.shape[:2]).index_select(-2, heads).flatten(-2)
        return x + self.fc2(self.act(z @ _kept_rows(self.w1, heads) + self.b1))


class MaskedMlp(PrunedMlp):
    """The ``masked`` tactic of ``PrunedMlp``: fc1 over every channel (constant, pre-packed,
    bias+GELU fused), the dropped heads' channels zeroed per sample by ``head_mask`` (G,H)."""

    def forward(self, x: torch.Tensor, head_mask: torch.Tensor) -> torch.Tensor:
        G, K, _ = x.shape
        H, d = int(self.w1.shape[0]), int(self.w1.shape[1])  # static in the graph: ORT fuses bias+GELU
        z = (self.norm2(x).reshape(G, K, H, d) * head_mask[:, None, :, None]).reshape(G, K, H * d)
        return x + self.fc2(self.act(z @ _kept_rows(self.w1, None) + self.b1))


class Classifier(nn.Module):
    def __init__(self, model: AdaViT) -> None:
        super().__init__()
        self.norm, self.head = model.norm, model.head

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(cls))


class DenseViT(nn.Module):
    """The plain ViT of the same weights: the benchmark baseline."""

    def __init__(self, model: AdaViT) -> None:
        super().__init__()
        self.stem = Stem(model)
        self.attn = nn.ModuleList(PrunedAttention(b) for b in model.blocks)
        self.mlp = nn.ModuleList(PrunedMlp(b) for b in model.blocks)
        self.classifier = Classifier(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        for attn, mlp in zip(self.attn, self.mlp):
            x = mlp(attn(x))
        return self.classifier(x[:, 0])


def block_constants(block: AdaBlock) -> dict[str, torch.Tensor]:
    """What a block adds when every head is dropped (ADAVIT.md step 7).

    q = k = v = 0 so MSA adds the proj bias to kept tokens; fc1 sees zeros so
    the FFN adds ``fc2(gelu(b1))``. The runtime adds these without a graph call.
    """
    mlp = block.mlp
    with torch.no_grad():
        ffn = mlp.fc2(mlp.act(mlp.fc1.bias[None]))[0]
    return {"attn": block.attn.proj.bias.detach().clone(), "mlp": ffn}
