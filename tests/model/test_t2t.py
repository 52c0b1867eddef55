"""The T2T-ViT family: stem, config, checkpoint detection, attention scale, export.

Parity with the reference on the two T2T fixtures runs with the DeiT ones
(``FIXTURE_NAMES`` in conftest: model/test_adavit.py, runtime/test_adaptive.py).
"""

from __future__ import annotations

import argparse
import json
import numpy as np
import pytest
import torch

from adavit_deploy.bundle import Manifest
from adavit_deploy.config import AdaViTConfig, T2TStem, preset
from adavit_deploy.cost import dense_gmacs
from adavit_deploy.errors import CheckpointError, ConfigError
from adavit_deploy.export import export_bundle
from adavit_deploy.model import build_model, infer_config, load_model, read_checkpoint
from adavit_deploy.model.t2t import SoftSplit
from adavit_deploy.runtime import load_bundle
from adavit_deploy.summary import describe_checkpoint

#: a random T2T model small enough to be instant: 32 px -> 4 patches, token_dim 16
T2T_SMALL = dict(img_size=32, patch_size=16, qkv_bias=False, eps=1e-5)


def _t2t(attention: str) -> dict:
    return {**T2T_SMALL, "t2t": T2TStem(attention, token_dim=16, random_features=8)}


@pytest.mark.parametrize(
    "size, channels, kernel, stride, padding",
    [(96, 3, 7, 4, 2), (224, 3, 7, 4, 2), (24, 64, 3, 2, 1), (13, 5, 3, 2, 1), (8, 2, 3, 1, 0)],
)
def test_soft_split_is_nn_unfold_bit_for_bit(size, channels, kernel, stride, padding):
    x = torch.randn(2, channels, size, size)
    want = torch.nn.functional.unfold(x, kernel, stride=stride, padding=padding).transpose(1, 2)
    split = SoftSplit(size, channels, kernel, stride, padding)
    assert torch.equal(split(x), want)
    # tokens of the same grid give the same result
    assert torch.equal(split(x.flatten(2).transpose(1, 2)), want)


def test_presets_are_the_papers_models():
    t19, t14 = preset("ada_step_t2t_vit_19_lnorm"), preset("ada_step_t2t_vit_14_lnorm")
    assert (t19.family, t19.embed_dim, t19.depth, t19.num_heads, t19.mlp_hidden) == ("t2t", 448, 19, 7, 1344)
    assert (t14.embed_dim, t14.depth, t14.num_heads, t14.mlp_hidden) == (384, 14, 6, 1152)
    for cfg in (t19, t14):
        assert cfg.t2t == T2TStem("performer", 64, 32)
        assert (cfg.eps, cfg.qkv_bias, cfg.num_tokens, cfg.qk_scale) == (1e-5, False, 197, None)
        assert cfg.head_select == cfg.layer_select == tuple(range(1, cfg.depth))
    assert preset("ada-deit-s").family == "deit"


def test_config_validation_and_manifest_round_trip():
    with pytest.raises(ConfigError, match="performer, transformer"):
        T2TStem("linear")
    with pytest.raises(ConfigError, match="patch_size 16"):
        AdaViTConfig(img_size=64, patch_size=8, embed_dim=48, num_heads=3, t2t=T2TStem())
    with pytest.raises(ConfigError, match="qk_scale must be positive"):
        AdaViTConfig(qk_scale=0.0)
    cfg = preset("ada_step_t2t_vit_19_lnorm", qk_scale=448**-0.5)
    manifest = Manifest(model=cfg, artifacts={}, opset=17, max_batch=1, producer={})
    assert Manifest.from_json(manifest.to_json()).model == cfg  # the manifest parser rebuilds T2TStem
    assert cfg.attn_scale == 448**-0.5 and preset("ada_step_t2t_vit_19_lnorm").attn_scale == 64**-0.5


@pytest.mark.parametrize(
    "name, attention, flags",
    [
        ("t2t_tiny_performer_full", "performer", {"img_size": 96, "num_heads": 3, "layer_select": (1, 2, 3, 4, 5)}),
        ("t2t_tiny_transformer_heads_tokens_normpolicy", "transformer", {"img_size": 64, "num_heads": 4, "layer_select": ()}),
    ],
)
def test_fixture_family_is_detected_from_keys(load_reference_case, name, attention, flags):
    ckpt = read_checkpoint(load_reference_case(name).checkpoint)
    assert ckpt.kind == "reference"  # the transformer stem's own attn.qkv is not a dense timm ViT's
    cfg = infer_config(ckpt)
    assert cfg.t2t == T2TStem(attention, 64, 32)
    assert (cfg.patch_size, cfg.eps, cfg.qkv_bias, cfg.qk_scale, cfg.mlp_hidden) == (16, 1e-5, False, None, 288)
    assert {k: getattr(cfg, k) for k in flags} == flags
    if attention == "transformer":  # one head used as is, never split into query/key/value
        assert ckpt.state_dict["tokens_to_token.attention1.attn.qkv.weight"].shape == (192, 147)


def _with_args(tmp_path, case, **args):
    raw = torch.load(case.checkpoint, map_location="cpu", weights_only=False)
    raw["args"] = argparse.Namespace(**{**vars(raw["args"]), **args})
    path = tmp_path / "changed.pth.tar"
    torch.save(raw, path)
    return path


def test_qk_scale_default_pretrained_and_override(load_reference_case, tmp_path):
    case = load_reference_case("t2t_tiny_performer_full")
    x = torch.from_numpy(case.images)
    default, _ = load_model(case.checkpoint)
    pretrained_path = _with_args(tmp_path, case, pretrained=True)
    pretrained, _ = load_model(pretrained_path)
    assert default.cfg.attn_scale == 32**-0.5  # head_dim 96 / 3
    assert pretrained.cfg.qk_scale == 96**-0.5  # embed_dim^-0.5, as the T2T factory does with pretrained
    overridden, _ = load_model(pretrained_path, qk_scale=32**-0.5)
    with torch.no_grad():
        want, other, back = default(x).logits, pretrained(x).logits, overridden(x).logits
    assert torch.equal(back, want)
    assert (other - want).abs().max() > 1e-5  # the scale matters (random weights: attention is near uniform)
    info = describe_checkpoint(pretrained_path)["architecture"]
    assert "args.pretrained" in info["attention_scale"] and info["attention_scale"].startswith(f"{96**-0.5:.6g}")
    assert describe_checkpoint(case.checkpoint)["architecture"]["attention_scale"] == f"{32**-0.5:.6g} (head_dim^-0.5)"
    assert "--qk-scale" in describe_checkpoint(pretrained_path, qk_scale=0.1)["architecture"]["attention_scale"]


def _swin_state() -> dict[str, torch.Tensor]:
    """Key layout of a timm Swin-T state dict (no class token, no position table, stages of blocks)."""
    return {
        "patch_embed.proj.weight": torch.zeros(96, 3, 4, 4),
        "patch_embed.norm.weight": torch.zeros(96),
        "layers.0.blocks.0.attn.qkv.weight": torch.zeros(288, 96),
        "layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(169, 3),
        "norm.weight": torch.zeros(768),
        "head.fc.weight": torch.zeros(1000, 768),
    }


def test_unknown_families_are_one_line_errors(tmp_path, load_reference_case):
    path = tmp_path / "swin.pth"
    torch.save({"model": _swin_state()}, path)
    with pytest.raises(CheckpointError) as err:
        infer_config(read_checkpoint(path))
    message = str(err.value)
    assert "\n" not in message and "not an AdaViT/DeiT checkpoint nor a T2T-ViT one" in message
    assert "cls_token" in message and "pos_embed" in message

    # a tokens_to_token stem of neither kind
    state = read_checkpoint(load_reference_case("t2t_tiny_performer_full").checkpoint).state_dict
    state = {k: v for k, v in state.items() if not k.startswith("tokens_to_token.attention1.")}
    torch.save({"state_dict": state, "args": argparse.Namespace(ada_token_with_mlp=True)}, path)
    with pytest.raises(CheckpointError) as err:
        infer_config(read_checkpoint(path))
    assert "\n" not in str(err.value) and "attention1.w" in str(err.value)


def test_heads_from_the_model_name_or_the_flag(tmp_path, make_model):
    """Without a head selector, the heads come from args.model (a preset name), else --num-heads."""
    model = make_model(ada_head=False, ada_layer=False, ada_token=False, embed_dim=64, num_heads=2, **_t2t("performer"))
    path = tmp_path / "t2t.pth"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(model="t2t_vit_custom")}, path)
    with pytest.raises(ConfigError, match="pass num_heads"):
        infer_config(read_checkpoint(path))
    ckpt = read_checkpoint(path)
    cfg = infer_config(ckpt, num_heads=2)
    assert (cfg.num_heads, cfg.t2t, cfg.embed_dim) == (2, model.cfg.t2t, 64)
    build_model(cfg, ckpt.state_dict)


@pytest.mark.parametrize("attention", ["performer", "transformer"])
def test_random_t2t_round_trip_and_bundle_parity(tmp_path, make_checkpoint, images, attention):
    """Save/load keeps the config; the bundle reproduces the PyTorch model, batched and one at a time."""
    path = make_checkpoint(**_t2t(attention), keep_layers=1)
    model, ckpt = load_model(path)
    assert model.cfg.t2t.attention == attention and ckpt.args["model"] == "ada_step_t2t_custom"
    rt = load_bundle(export_bundle(path, tmp_path / "bundle"))
    x = images(model.cfg, batch=6, seed=3)
    with torch.no_grad():
        ref = model(x)
    for batch in (6, 1):
        res = rt.infer(x.numpy(), batch_size=batch)
        np.testing.assert_allclose(res.logits, ref.logits.numpy(), atol=1e-4)
        for key in ("head_select", "layer_select", "token_select"):
            np.testing.assert_array_equal(getattr(res, key), getattr(ref, key).numpy(), err_msg=key)
    assert 0 < ref.token_select[:, :, 1:].mean() < 1
    np.testing.assert_allclose(rt.dense(x.numpy()), model(x, force_dense=True).logits.detach().numpy(), atol=1e-4)


def test_stem_graph_is_plain_onnx_ops(reference_bundle):
    """The soft splits export as Gather/Mul/Reshape/Transpose: no Pad, no Im2Col, no Einsum (TensorRT runs them all)."""
    import onnx

    bundle = reference_bundle("t2t_tiny_performer_full")
    ops = {n.op_type for n in onnx.load(str(bundle / "stem.onnx")).graph.node}
    assert {"Gather", "Exp", "LayerNormalization", "MatMul"} <= ops
    assert not ops & {"Pad", "Einsum", "Col2Im", "Loop", "If", "NonZero"}
    stem = onnx.load(str(bundle / "stem.onnx")).graph
    assert stem.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_dense_t2t_vit_19_is_8_5_gmacs():
    cfg = preset("ada_step_t2t_vit_19_lnorm")
    assert dense_gmacs(cfg) == pytest.approx(8.50, rel=0.01)


# -- every command on a T2T fixture and on a calibrated T2T bundle -----------------------


@pytest.fixture(scope="module")
def performer_case(fixtures_dir):
    case = "t2t_tiny_performer_full"
    with np.load(fixtures_dir / f"{case}.npz") as z:
        return fixtures_dir / f"{case}.pth.tar", {k: z[k] for k in z.files}


def test_cli_on_a_t2t_fixture(performer_case, tmp_path):
    """info names the family; export, infer, inspect, evaluate and bench (with the masked reference) run on it."""
    from typer.testing import CliRunner

    from adavit_deploy.cli import app

    ckpt, ref = performer_case
    runner = CliRunner()
    info = runner.invoke(app, ["info", str(ckpt), "--json"])
    assert info.exit_code == 0, info.output
    report = json.loads(info.stdout)
    arch = report["architecture"]
    assert arch["family"] == "T2T-ViT" and arch["stem"].startswith("tokens-to-token, performer")
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"], arch["num_tokens"]) == (96, 6, 3, 37)
    assert report["flags"]["ada_head"] and report["flags"]["ada_token_with_mlp"] and report["flags"]["keep_layers"] == 1
    assert report["dense_gmacs"] == round(dense_gmacs(infer_config(read_checkpoint(ckpt))), 4) > 0

    bundle = tmp_path / "bundle"
    out = runner.invoke(app, ["export", str(ckpt), "--out", str(bundle)])
    assert out.exit_code == 0 and "decisions 100.00% equal" in out.output, out.output
    np.savez(tmp_path / "in.npz", images=ref["images"], labels=ref["logits"].argmax(1))
    res = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--batch-size", "1"])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["logits"], ref["logits"], atol=1e-4)
        for key in ("head_select", "layer_select", "token_select"):
            np.testing.assert_array_equal(z[key], ref[key], err_msg=key)
    np.save(tmp_path / "one.npy", ref["images"][:1])  # a figure takes ~0.4 s to draw
    res = runner.invoke(app, ["inspect", str(bundle), str(tmp_path / "one.npy"), "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert [p.name for p in tmp_path.glob("p*.png")] == ["p.png"]
    res = runner.invoke(app, ["evaluate", str(bundle), "--data", str(tmp_path / "in.npz"), "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev.json").read_text())["rows"][0]["top1"] == 1.0  # labels are the reference's top-1
    args = ["bench", str(bundle), "--batch-sizes", "1,2", "--iterations", "1", "--warmup", "0", "--no-baselines"]
    res = runner.invoke(app, [*args, "--no-memory", "--images", str(tmp_path / "in.npz"), "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["parity"]["decision_agreement"] == 1.0 and bench["parity"]["max_abs_logit_diff"] < 1e-4
    assert {r["engine"] for r in bench["results"]} == {"adaptive", "dense", "reference"}


@pytest.fixture(scope="module")
def calibrated_t2t(tmp_path_factory):
    """The small T2T model exported with budgets native,0.85, FP16 and INT8 graphs, calibrated on 32 images."""
    from random_models import T2T_SMALL_ARCH

    from adavit_deploy.synthetic import random_checkpoint

    tmp = tmp_path_factory.mktemp("t2t-calibrated")
    cfg = AdaViTConfig.from_flags(**T2T_SMALL_ARCH)
    ckpt = random_checkpoint(cfg, tmp / "random.pth", target=0.7)
    images = np.random.default_rng(1).standard_normal((32, 3, cfg.img_size, cfg.img_size), dtype=np.float32)
    np.savez(tmp / "calib.npz", images=images)
    bundle = export_bundle(ckpt, tmp / "bundle", budgets="native,0.85", calibration=tmp / "calib.npz", fp16=True, int8=True)
    return bundle, images


def test_budgets_fp16_int8_on_t2t(calibrated_t2t):
    """The downstream machinery needs nothing T2T-specific: budgets hit, variants agree with fp32, the stem is int8."""
    import onnx

    from adavit_deploy.bundle import read_manifest

    bundle, images = calibrated_t2t
    manifest = read_manifest(bundle)
    assert manifest.model.t2t is not None and manifest.precisions == ["fp32", "fp16", "int8"]
    assert manifest.budgets["0.85"].gmacs_fraction == pytest.approx(0.85, abs=0.03)
    for precision in ("fp16", "int8"):
        report = manifest.parity["vs_fp32"][precision]
        assert report["decision_agreement"] >= 0.95 and report["top1_agreement"] >= 0.8, (precision, report)
    assert "stem" not in manifest.parity["vs_fp32"]["int8"]["kept_float"]
    # fp16: the T2T stem stays float32 (the performer's exp overflows fp16), the blocks do not
    fp16 = {g: onnx.load(str(bundle / manifest.artifacts[f"{g}.fp16"].file)).graph for g in ("stem", "dense")}
    half = {g: {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16} for g, graph in fp16.items()}
    assert half["stem"] <= {"model.cls_token", "model.pos_embed"} and half["dense"]
    assert not any(n.endswith(("attention1.w", "attention2.w", "kqv.weight")) for n in half["dense"])
    stem = onnx.load(str(bundle / manifest.artifacts["stem.int8"].file))
    assert "QuantizeLinear" in {n.op_type for n in stem.graph.node}
    rt = load_bundle(bundle, budget="0.85", precision="int8")
    res = rt.infer(images[:4])
    assert res.logits.shape == (4, 7) and (res.gmacs < dense_gmacs(rt.cfg)).all()


def test_synthetic_t2t_at_a_chosen_gmacs_ratio():
    """``synthetic`` makes a random Ada-T2T-ViT whose decisions vary per image at the asked fraction of dense."""
    from random_models import T2T_SMALL_ARCH

    from adavit_deploy.cost import sample_gmacs
    from adavit_deploy.synthetic import random_adavit

    cfg = AdaViTConfig.from_flags(**T2T_SMALL_ARCH)
    model = random_adavit(cfg, target=0.85, seed=1)
    with torch.no_grad():
        out = model(torch.randn(16, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(5)))
    gmacs = sample_gmacs(cfg, out.head_select.numpy(), out.layer_select.numpy(), out.token_select.numpy())
    assert gmacs.mean() / dense_gmacs(cfg) == pytest.approx(0.85, abs=0.05)
    assert len(np.unique(gmacs)) > 1
