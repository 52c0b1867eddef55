"""The masked PyTorch AdaViT reproduces the reference implementation exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adavit_deploy.model import load_model, save_checkpoint

DECISIONS = ("head_select", "layer_select", "token_select")


def _run(model, images: np.ndarray):
    with torch.no_grad():
        return model(torch.from_numpy(images))


def _assert_matches_reference(out, case, rows: slice) -> None:
    for name in DECISIONS:
        got = getattr(out, name).numpy()
        if name in case.decisions:
            want = case.decisions[name][rows]
            assert got.shape == want.shape, name
            mismatches = int((got != want).sum())
            assert mismatches == 0, f"{case.name}: {mismatches} {name} decisions differ"
        else:
            # the reference writes no array for a decision the model does not make
            assert got.shape[:2] == (len(case.logits[rows]), 0), name
    np.testing.assert_allclose(out.logits.numpy(), case.logits[rows], atol=1e-4, rtol=0)


def test_fixture_batch_matches_reference(reference_case):
    model, _ = load_model(reference_case.checkpoint)
    assert not model.training
    out = _run(model, reference_case.images)
    _assert_matches_reference(out, reference_case, slice(None))


def test_fixture_one_at_a_time_matches_reference(reference_case):
    model, _ = load_model(reference_case.checkpoint)
    for i in range(len(reference_case.images)):
        out = _run(model, reference_case.images[i : i + 1])
        _assert_matches_reference(out, reference_case, slice(i, i + 1))


def test_fixtures_exercise_the_decisions(reference_case):
    """The exactness tests above only mean something if decisions actually vary."""
    for name, arr in reference_case.decisions.items():
        assert 0 < arr.mean() < 1, f"{name} is constant"
    if reference_case.name in ("tiny_attn_tokens_normpolicy", "t2t_tiny_performer_full"):
        # ADAVIT.md step 7 (all heads dropped) is covered by this fixture
        assert (reference_case.decisions["head_select"].sum(-1) == 0).sum() == 8


def test_decision_layout_of_fixtures(load_reference_case):
    """Per-block layout inferred from the reference's tensors and args."""
    model, _ = load_model(load_reference_case("tiny_attn_tokens_normpolicy").checkpoint)
    cfg = model.cfg
    assert cfg.head_select == cfg.layer_select == cfg.norm_policy == (2, 3, 4, 5)
    assert cfg.token_select == (1, 2, 3, 4, 5)
    assert cfg.token_with_mlp is False
    model, _ = load_model(load_reference_case("tiny_heads_only").checkpoint)
    assert model.cfg.head_select == (1, 2, 3, 4, 5)
    assert model.cfg.layer_select == model.cfg.token_select == ()


@pytest.mark.parametrize("flags", [{}, {"ada_token_with_mlp": False, "keep_layers": 2, "norm_policy": True}])
def test_force_dense_equals_timm_vit(make_model, timm_twin, images, flags):
    model = make_model(**flags)
    vit = timm_twin(model)
    x = images(model.cfg, batch=4)
    with torch.no_grad():
        dense = model(x, force_dense=True)
        adaptive = model(x)
        want = vit(x)
    torch.testing.assert_close(dense.logits, want, atol=1e-5, rtol=0)
    # the decisions are still reported, and the adaptive path really differs
    assert not torch.allclose(adaptive.logits, want, atol=1e-3)
    assert 0 < adaptive.token_select[:, :, 1:].mean() < 1


def test_dense_twin_comparison_can_fail(make_model, timm_twin, images):
    """Guard on the twin test: perturbing one fused qkv row is detected."""
    model = make_model()
    vit = timm_twin(model)
    with torch.no_grad():
        vit.blocks[1].attn.qkv.weight[model.cfg.embed_dim] += torch.randn(model.cfg.embed_dim)  # first key row
        x = images(model.cfg)
        assert (model(x, force_dense=True).logits - vit(x)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "flags",
    [{}, {"ada_token_with_mlp": False, "keep_layers": 2, "ada_token_start_layer": 1, "norm_policy": True}, {"ada_layer": False, "ada_token": False}],
    ids=["full", "attn-tokens-normpolicy", "heads-only"],
)
def test_save_load_round_trip(tmp_path, make_model, images, flags):
    model = make_model(**flags)
    path = tmp_path / "model.pth.tar"
    save_checkpoint(model, path, epoch=3)
    loaded, ckpt = load_model(path)
    assert ckpt.kind == "reference"
    assert loaded.cfg == model.cfg
    assert loaded.cfg.to_dict() == model.cfg.to_dict()
    x = images(model.cfg, batch=6)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for name in ("logits", *DECISIONS):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.head_select.shape[1] == len(model.cfg.head_select)


def test_round_trip_without_head_selector(tmp_path, make_model, images):
    """Non-standard width and no head selector: the head count must survive the save."""
    model = make_model(ada_head=False, ada_layer=False)
    path = tmp_path / "m.pth"
    save_checkpoint(model, path)
    loaded, _ = load_model(path)
    assert loaded.cfg == model.cfg
    x = images(model.cfg)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_all_heads_dropped_edge_case(make_model, images):
    """ADAVIT.md step 7: h all 0 gives MSA = bp on kept tokens and FFN = fc2(gelu(b1))."""
    model = make_model(ada_layer=False, ada_token=False, depth=2)
    block = model.blocks[1]
    with torch.no_grad():
        block.head_select.mlp_head.weight.zero_()
        block.head_select.mlp_head.bias.fill_(-10.0)  # every head dropped, for every input
        for bias in (block.attn.proj.bias, block.mlp.fc1.bias, block.mlp.fc2.bias):
            bias.normal_(0, 0.5)  # timm inits them to zero, which would hide a missing term
        x = images(model.cfg, batch=2)
        out = model(x)
        assert out.head_select[:, -1].sum() == 0
        tokens = model.blocks[0](model.embed(x), model.cfg.thresholds)[0]
        after, _ = block(tokens, model.cfg.thresholds)
        mlp = block.mlp
        ffn_const = mlp.fc2(mlp.act(mlp.fc1.bias))
        want = tokens + block.attn.proj.bias + ffn_const
    torch.testing.assert_close(after, want, atol=1e-6, rtol=0)
