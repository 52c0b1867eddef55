"""The graphs of a bundle: which exist for a config, what each takes and returns, which get variants.

One definition, derived from ``AdaViTConfig`` alone, that export traces
against (names and dynamic axes), the manifest is checked against (a bundle
whose artifacts are not exactly these graphs with these signatures is
refused), and the precision tools read (which graphs get FP16 / INT8
variants). Kinds:

- ``stem``: ``images (B, C_in, S, S)`` -> ``tokens (B, N, C)``.
- ``policy_i`` (blocks with a decision): ``x (B, N, C)`` -> probabilities
  ``layer (B, 2)``, ``heads (B, H)``, ``patches (B, N-1)``, those the block has.
- ``attn_i``: ``x (G, K, C)`` [, ``heads (k,)`` int64] [, ``key_bias (G, K)``] -> ``y (G, K, C)``.
- ``mlp_i``: ``x (G, K, C)`` [, ``heads (k,)`` int64] -> ``y (G, K, C)``.
- ``attn_masked_i`` / ``mlp_masked_i`` (blocks with a head decision): the same
  with every head computed from constant weights and ``head_mask (G, H)``
  (0/1 per sample) zeroing the dropped heads: the ``masked`` tactic
  (``runtime/tactics.py``), which ORT can pre-pack and fuse and which one
  call serves for samples of different head sets.
- ``head``: ``cls (B, C)`` -> ``logits (B, classes)``; ``dense``: ``images`` -> ``logits``.

Policy graphs stay float at every precision: they end in the decision
probabilities, and a flipped decision costs more than a slow op. The
classifier stays float at INT8 (its logits are the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

from .config import AdaViTConfig

#: Dynamic axes, by the names the exported graphs give them.
BATCH, TOKENS, KEPT_HEADS = "batch", "tokens", "kept_heads"

#: Reduced precisions each kind of graph is converted to (the others keep the fp32 graph as their variant).
VARIANTS: dict[str, tuple[str, ...]] = {
    "stem": ("fp16", "int8"),
    "policy": (),
    "attn": ("fp16", "int8"),
    "mlp": ("fp16", "int8"),
    "attn_masked": ("fp16", "int8"),
    "mlp_masked": ("fp16", "int8"),
    "head": ("fp16",),
    "dense": ("fp16", "int8"),
}


class Port(NamedTuple):
    """One graph input or output: name, numpy dtype name, shape (a ``str`` dim is dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Graph:
    """One graph of the bundle: its name (the manifest key), kind, block and I/O signature."""

    name: str
    kind: str
    block: int | None
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def converts_to(self, precision: str) -> bool:
        """Whether the ``precision`` variant is a converted graph (else it is the fp32 graph itself)."""
        return precision == "fp32" or precision in VARIANTS[self.kind]

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes``: every ``str`` dim of every port."""
        return {p.name: {i: d for i, d in enumerate(p.shape) if isinstance(d, str)} for p in (*self.inputs, *self.outputs)}


def graphs(cfg: AdaViTConfig) -> dict[str, Graph]:
    """Every graph a bundle of ``cfg`` holds, in export order."""
    N, C, H = cfg.num_tokens, cfg.embed_dim, cfg.num_heads
    images = Port("images", "float32", (BATCH, cfg.in_chans, cfg.img_size, cfg.img_size))
    logits = Port("logits", "float32", (BATCH, cfg.num_classes))
    full = Port("x", "float32", (BATCH, N, C))
    kept = Port("x", "float32", (BATCH, TOKENS, C))
    y = Port("y", "float32", (BATCH, TOKENS, C))
    heads = Port("heads", "int64", (KEPT_HEADS,))
    out = [Graph("stem", "stem", None, (images,), (Port("tokens", "float32", (BATCH, N, C)),))]
    for i in range(cfg.depth):
        decisions = [
            Port(name, "float32", (BATCH, width))
            for name, width, blocks in (
                ("layer", 2, cfg.layer_select),
                ("heads", H, cfg.head_select),
                ("patches", N - 1, cfg.token_select),
            )
            if i in blocks
        ]
        if decisions:
            out.append(Graph(f"policy_{i}", "policy", i, (full,), tuple(decisions)))
        select = (heads,) if i in cfg.head_select else ()
        key_bias = (Port("key_bias", "float32", (BATCH, TOKENS)),) if i in cfg.token_select else ()
        out.append(Graph(f"attn_{i}", "attn", i, (kept, *select, *key_bias), (y,)))
        out.append(Graph(f"mlp_{i}", "mlp", i, (kept, *select), (y,)))
        if select:
            mask = Port("head_mask", "float32", (BATCH, H))
            out.append(Graph(f"attn_masked_{i}", "attn_masked", i, (kept, mask, *key_bias), (y,)))
            out.append(Graph(f"mlp_masked_{i}", "mlp_masked", i, (kept, mask), (y,)))
    out.append(Graph("head", "head", None, (Port("cls", "float32", (BATCH, C)),), (logits,)))
    out.append(Graph("dense", "dense", None, (images,), (logits,)))
    return {g.name: g for g in out}


def agrees(ports: Sequence[Port], declared: Iterable[tuple[str, Sequence]]) -> bool:
    """Whether the I/O a graph file or manifest ``declared`` (``(name, dims)`` in order) can be ``ports``.

    Same names in the same order, same ranks, equal sizes wherever both are
    static. A size that is symbolic on either side matches: exporters leave
    some static output sizes symbolic (``Addy_dim_2``), and backends report
    dynamic axes as names, ``None`` or ``-1``.
    """
    def static(d: object) -> bool:
        return isinstance(d, int) and d >= 0

    declared = list(declared)
    if [name for name, _ in declared] != [p.name for p in ports]:
        return False
    return all(
        len(dims) == len(p.shape) and all(a == b for a, b in zip(p.shape, dims) if static(a) and static(b))
        for p, (_, dims) in zip(ports, declared)
    )


def describe(ports: tuple[Port, ...] | list[Port]) -> str:
    """``x(batch, 17, 48), heads(kept_heads)``: a signature in one short line."""
    return ", ".join(f"{p.name}({', '.join(map(str, p.shape))})" for p in ports)
