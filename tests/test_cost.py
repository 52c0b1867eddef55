"""The cost model: exact pruned MACs (ADAVIT.md) against the paper and the reference's table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adavit_deploy.config import AdaViTConfig, T2TStem, preset
from adavit_deploy.cost import block_macs, dense_gmacs, fixed_macs, sample_gmacs, t2t_stem_macs
from adavit_deploy.model import load_model


@pytest.fixture(scope="module")
def deit_s() -> AdaViTConfig:
    return preset("ada-deit-s")


def _flops_table(shared_dir, name: str, heads: int) -> np.ndarray:
    """The reference's per-block table ``[h, t, attn_on, mlp_on]`` in GMACs (fvcore); skips without ../shared."""
    path = shared_dir / "reference" / name
    if not path.is_file():
        pytest.skip(f"{path} not present (only CI and developers have ../shared)")
    table = torch.load(path, map_location="cpu", weights_only=True)
    assert tuple(table.shape) == (heads + 1, 198, 2, 2)
    return table.double().numpy()


@pytest.fixture(scope="module")
def flops_table(shared_dir) -> np.ndarray:
    return _flops_table(shared_dir, "deit-s-h-l-tmlp_flops_dict.pth", 6)


def test_dense_deit_s_is_4_6_gmacs(deit_s):
    gmacs = dense_gmacs(deit_s)
    assert round(gmacs, 1) == 4.6  # the paper's DeiT-S figure
    assert abs(gmacs - 4.6) < 0.02
    # by hand: 12 blocks of (4*N*C*C + 2*N*N*C + 2*N*C*M) plus patch projection and head
    N, C, M = 197, 384, 1536
    block = 4 * N * C * C + 2 * N * N * C + 2 * N * C * M
    assert gmacs * 1e9 == pytest.approx(12 * block + 196 * C * 3 * 16 * 16 + C * 1000, rel=1e-12)


def test_dense_deit_s_against_reference_total(deit_s, flops_table):
    """ADAVIT.md: dense total 4.61 with the table's 0.06 for stem and head (fvcore adds norms)."""
    table_total = 12 * flops_table[6, 197, 1, 1] + 0.06
    assert table_total == pytest.approx(4.61, abs=0.01)
    assert dense_gmacs(deit_s) == pytest.approx(table_total, rel=0.005)


# Which table entries must agree. The table is fvcore's count, not the exact
# matmul count: it also counts LayerNorm work (~0.76 MMACs per block), which
# dominates entries with very few tokens, and its attention-only entries with
# a partial head set deviate from the exact count by a term that peaks at
# half the heads (symmetric in h <-> H-h, up to ~6.5 MMACs at t=197), which
# the FFN hides once both sub-layers are on. Those entries are excluded
# rather than given a loose tolerance.
TABLE_CASES = [
    pytest.param(1, 1, range(4, 7), range(60, 198), id="msa+ffn h4-6 t60-197"),
    pytest.param(0, 1, range(1, 7), range(20, 198), id="ffn-only h1-6 t20-197"),
    pytest.param(1, 0, range(6, 7), range(50, 198), id="msa-only h6 t50-197"),
]


def _assert_agrees_with_table(cfg: AdaViTConfig, table: np.ndarray, attn: int, mlp: int, heads: range, tokens: range) -> None:
    """``block_macs`` within 3% of every table entry ``[heads, tokens, attn, mlp]``."""
    h = np.array(heads)[:, None]
    t = np.array(tokens)[None, :]
    ours = block_macs(cfg, t, h, attn, mlp) / 1e9
    ref = table[h, t, attn, mlp]
    rel = np.abs(ours - ref) / ref
    worst = np.unravel_index(rel.argmax(), rel.shape)
    assert rel.max() < 0.03, f"h={heads[worst[0]]} t={tokens[worst[1]]}: ours {ours[worst]:.6f} vs table {ref[worst]:.6f}"


@pytest.mark.parametrize("attn, mlp, heads, tokens", TABLE_CASES)
def test_block_macs_against_reference_table(deit_s, flops_table, attn, mlp, heads, tokens):
    _assert_agrees_with_table(deit_s, flops_table, attn, mlp, heads, tokens)


def test_zero_heads_costs_nothing(deit_s, flops_table):
    """All heads dropped: q = k = v = 0 and the FFN output is a constant (ADAVIT.md step 7)."""
    t = np.arange(198)
    assert (block_macs(deit_s, t, 0, 1, 1) == 0).all()
    assert (block_macs(deit_s, t, 0, 0, 1) == 0).all()
    assert (flops_table[0] == 0).all()  # the reference agrees


def test_block_macs_structure(deit_s):
    N, H = deit_s.num_tokens, deit_s.num_heads
    assert block_macs(deit_s, N, H, 0, 0) == 0
    full = block_macs(deit_s, N, H, 1, 1)
    assert full == block_macs(deit_s, N, H, 1, 0) + block_macs(deit_s, N, H, 0, 1)
    # FFN: fc1 linear in kept heads, fc2 not; both linear in tokens (token-masked FFN); MSA superlinear in tokens
    C, M, d = 384, 1536, 64
    assert block_macs(deit_s, 100, 3, 0, 1) == 100 * 3 * d * M + 100 * M * C
    assert block_macs(deit_s, 50, 6, 0, 1) * 2 == block_macs(deit_s, 100, 6, 0, 1)
    assert block_macs(deit_s, 50, 6, 1, 0) * 2 < block_macs(deit_s, 100, 6, 1, 0)
    # without ada_token_with_mlp the FFN runs on every token whatever K is
    untied = deit_s.replace(token_with_mlp=False)
    assert block_macs(untied, 10, 6, 0, 1) == block_macs(untied, N, 6, 0, 1) == block_macs(deit_s, N, 6, 0, 1)
    # broadcasting over samples
    per_sample = block_macs(deit_s, np.array([197, 100]), np.array([6, 0]), np.array([1, 1]), np.array([1, 1]))
    assert per_sample.shape == (2,) and per_sample[1] == 0 and per_sample[0] == full


def _hand_macs(cfg: AdaViTConfig, decisions: dict[str, np.ndarray], b: int) -> int:
    """Sample ``b``'s MACs straight from ADAVIT.md, in Python integers."""
    C, H, M, N = cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden, cfg.num_tokens
    d = C // H
    # stem + head (the T2T stem is checked by hand on its own, test_t2t_stem_macs_by_hand)
    stem = cfg.num_patches * C * cfg.in_chans * cfg.patch_size**2 if cfg.t2t is None else int(t2t_stem_macs(cfg))
    total = stem + C * cfg.num_classes
    for block in range(cfg.depth):
        k = H
        if block in cfg.head_select:
            k = int(decisions["head_select"][b, cfg.head_select.index(block)].sum())
        attn_on = mlp_on = 1
        if block in cfg.layer_select:
            attn_on, mlp_on = (int(v) for v in decisions["layer_select"][b, cfg.layer_select.index(block)])
        K = N
        if block in cfg.token_select:
            K = int(decisions["token_select"][b, cfg.token_select.index(block)].sum())
        kd = k * d
        msa = 3 * K * C * kd + 2 * K * K * kd + K * kd * C
        K_ffn = K if cfg.token_with_mlp else N
        # no head kept: fc1's input is all zero, the FFN output a constant (0 MACs)
        ffn = K_ffn * kd * M + K_ffn * M * C if k else 0
        total += attn_on * msa + mlp_on * ffn
    return total


def test_sample_gmacs_matches_hand_computation(reference_case):
    model, _ = load_model(reference_case.checkpoint)
    cfg, dec = model.cfg, reference_case.decisions
    shapes = {"head_select": cfg.num_heads, "layer_select": 2, "token_select": cfg.num_tokens}
    full = {k: dec.get(k, np.zeros((8, 0, w))) for k, w in shapes.items()}
    got = sample_gmacs(cfg, full["head_select"], full["layer_select"], full["token_select"])
    assert got.shape == (8,)
    hand = np.array([_hand_macs(cfg, full, b) for b in range(8)], dtype=np.float64) / 1e9
    np.testing.assert_allclose(got, hand, rtol=1e-12, atol=0)
    dense = dense_gmacs(cfg)
    assert (got <= dense + 1e-12).all()
    if "token_select" in dec:  # token counts differ per sample, and so does the cost
        assert len(np.unique(got)) > 1


def test_sample_gmacs_all_on_is_dense(load_reference_case):
    model, _ = load_model(load_reference_case("tiny_full").checkpoint)
    cfg, B = model.cfg, 3
    got = sample_gmacs(
        cfg,
        np.ones((B, len(cfg.head_select), cfg.num_heads)),
        np.ones((B, len(cfg.layer_select), 2)),
        np.ones((B, len(cfg.token_select), cfg.num_tokens)),
    )
    np.testing.assert_allclose(got, dense_gmacs(cfg), rtol=1e-12)
    assert fixed_macs(cfg) == 64 * 96 * 3 * 64 + 96 * 10


def test_sample_gmacs_all_heads_dropped_block(make_model):
    """A block whose heads are all dropped adds nothing, whatever its tokens and sub-layers."""
    cfg = make_model(depth=2).cfg  # block 1 has head, layer and token selection
    B, N, H = 2, cfg.num_tokens, cfg.num_heads
    heads = np.ones((B, 1, H))
    heads[1] = 0
    layers = np.ones((B, 1, 2))
    tokens = np.ones((B, 2, N))
    got = sample_gmacs(cfg, heads, layers, tokens) * 1e9
    block0 = float(block_macs(cfg, N, H, 1, 1))
    assert got[1] == pytest.approx(fixed_macs(cfg) + block0, rel=1e-12)
    assert got[0] == pytest.approx(fixed_macs(cfg) + 2 * block0, rel=1e-12)


# -- the T2T-ViT family ---------------------------------------------------------------


@pytest.fixture(scope="module")
def t2t_19() -> AdaViTConfig:
    return preset("ada_step_t2t_vit_19_lnorm")


@pytest.fixture(scope="module")
def t2t_flops_table(shared_dir) -> np.ndarray:
    return _flops_table(shared_dir, "t2t-19-h-l-tmlp_flops_dict.pth", 7)


def test_t2t_stem_macs_by_hand(t2t_19):
    """ADAVIT.md: the performer stem is 0.312 GMACs at 224 px (matmuls + LayerNorms at 5 per element, as fvcore)."""
    def token_attention(T: int, d: int, e: int = 64, m: int = 32) -> int:
        linear = T * d * 3 * e + T * e * e + 2 * T * e * e  # kqv, proj, mlp
        performer = 2 * T * e * m + 2 * T * m * e + T * m  # prm(k), prm(q), kp^T v, qp (kp^T v), qp . sum(kp)
        return linear + performer + 5 * T * (d + e)

    want = token_attention(56 * 56, 3 * 49) + token_attention(28 * 28, 64 * 9) + 14 * 14 * 64 * 9 * 448
    assert t2t_stem_macs(t2t_19) == want
    assert round(want / 1e9, 3) == 0.312
    transformer = t2t_19.replace(t2t=T2TStem("transformer"))  # one head over all tokens: quadratic in 3136
    assert t2t_stem_macs(transformer) > 5 * t2t_stem_macs(t2t_19)


def test_dense_t2t_vit_19_against_paper_and_table(t2t_19, t2t_flops_table):
    """8.50 GMACs (ADAVIT.md, fvcore); the table's blocks plus its 0.33 for stem and head agree."""
    assert dense_gmacs(t2t_19) == pytest.approx(8.50, rel=0.01)
    table_total = 19 * t2t_flops_table[7, 197, 1, 1] + 0.33
    assert dense_gmacs(t2t_19) == pytest.approx(table_total, rel=0.01)
    assert fixed_macs(t2t_19) / 1e9 == pytest.approx(0.312 + 0.000448, abs=5e-4)
    # a block with no head kept: 0 in both (q = k = v = 0, the FFN a constant the runtime adds)
    assert (block_macs(t2t_19, np.arange(198), 0, 1, 1) == 0).all() and (t2t_flops_table[0] == 0).all()


# Same exclusions as for DeiT-S, measured on this table: fvcore counts each
# LayerNorm the reference runs over all 197 tokens (0.44 MMACs, constant in t,
# which dominates entries with few tokens), and its attention entries with a
# partial head set carry a term symmetric in h <-> 7-h that peaks at 3-4 of 7
# heads (8.8 MMACs, 3.6% with both sub-layers on at t=197): those are left out.
# A few entries are also off the table's own trend (t=51 repeats t=50, t=54
# adds twice the step), +1.4% on entries 2-3% from ours at h=5.
T2T_TABLE_CASES = [
    pytest.param(1, 1, range(6, 8), range(40, 198), id="msa+ffn h6-7 t40-197"),
    pytest.param(0, 1, range(1, 8), range(30, 198), id="ffn-only h1-7 t30-197"),
    pytest.param(1, 0, range(7, 8), range(50, 198), id="msa-only h7 t50-197"),
]


@pytest.mark.parametrize("attn, mlp, heads, tokens", T2T_TABLE_CASES)
def test_t2t_block_macs_against_reference_table(t2t_19, t2t_flops_table, attn, mlp, heads, tokens):
    _assert_agrees_with_table(t2t_19, t2t_flops_table, attn, mlp, heads, tokens)
