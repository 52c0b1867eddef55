"""Safe checkpoint reading, unwrapping, remapping and config inference."""

from __future__ import annotations

import argparse
import builtins
import os
import pathlib
import zipfile

import pytest
import torch

from adavit_deploy.config import Thresholds
from adavit_deploy.errors import CheckpointError, ConfigError
from adavit_deploy.model import build_model, infer_config, load_model, read_checkpoint


# -- (a) malicious pickles ---------------------------------------------------------


class _OsSystem:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _BuiltinsExec:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _PathTouch:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))  # pickled as getattr(Path, "touch")


@pytest.mark.parametrize(
    "payload, global_name",
    [(_OsSystem, "system"), (_BuiltinsExec, "exec"), (_PathTouch, "getattr")],
    ids=["os.system", "builtins.exec", "pathlib.touch"],
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, make_model, payload, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    state = make_model(depth=1).state_dict()
    torch.save({"state_dict": state, "args": argparse.Namespace(ada_head=True), "hook": payload(marker)}, path)

    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "refused" in message
    assert global_name in message  # names the offending callable
    assert "\n" not in message
    assert not marker.exists()

    # prove the payload is live: an unsafe load really does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


# -- (b) unreadable files, (c) missing file ------------------------------------------


def _assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_truncated_checkpoint(tmp_path, load_reference_case):
    real = load_reference_case("tiny_full").checkpoint
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(real.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    _assert_one_line(err, str(path), "not a readable PyTorch checkpoint")


def test_truncated_random_checkpoint(tmp_path, make_checkpoint):
    """Same without ../shared: truncation anywhere is a CheckpointError."""
    data = make_checkpoint().read_bytes()
    for cut in (1000, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        _assert_one_line(err, "not a readable PyTorch checkpoint")


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\nthis is not a checkpoint\n")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    _assert_one_line(err, str(path), "not a readable PyTorch checkpoint")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "nope.pth")
    _assert_one_line(err, "nope.pth", "no such checkpoint file")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path)  # a directory is not a checkpoint either


def test_not_a_dict_and_not_a_vit(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    _assert_one_line(err, "expected a dict")

    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError) as err:
        infer_config(read_checkpoint(path))
    _assert_one_line(err, "not an AdaViT/DeiT checkpoint", "cls_token")


def test_distilled_deit_is_rejected(tmp_path, make_model):
    state = {**make_model(depth=1).state_dict(), "dist_token": torch.zeros(1, 1, 48)}
    path = tmp_path / "distilled.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="distilled"):
        read_checkpoint(path)


def test_weights_that_do_not_fit(tmp_path, make_model):
    state = make_model().state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    ckpt = read_checkpoint(_save(tmp_path / "x.pth", {"state_dict": state, "args": argparse.Namespace(ada_token_with_mlp=True)}))
    with pytest.raises(CheckpointError, match="blocks.1.mlp.fc2.bias"):
        build_model(infer_config(ckpt), ckpt.state_dict)


# -- (d) wrappers and prefixes ------------------------------------------------------


def _save(path: pathlib.Path, obj) -> pathlib.Path:
    torch.save(obj, path)
    return path


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize("wrapper", ["state_dict_ema", "state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_wrappers_and_module_prefix_are_unwrapped(tmp_path, make_model, images, wrapper, prefix):
    model = make_model()
    state = {prefix + k: v for k, v in model.state_dict().items()}
    args = argparse.Namespace(**model.cfg.flags())
    ckpt = read_checkpoint(_save(tmp_path / "w.pth", {wrapper: state, "args": args, "epoch": 7}))
    assert ckpt.kind == "reference"
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
    assert ckpt.args["ada_token_with_mlp"] is True
    loaded = build_model(infer_config(ckpt), ckpt.state_dict)
    assert loaded.cfg == model.cfg
    x = images(model.cfg)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


def test_ema_weights_win_over_plain_ones(tmp_path, make_model, images):
    ema, plain = make_model(seed=1), make_model(seed=2)
    path = _save(
        tmp_path / "both.pth",
        {"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict(), "args": argparse.Namespace(ada_token_with_mlp=True)},
    )
    loaded, _ = load_model(path)
    x = images(ema.cfg)
    assert torch.equal(_logits(loaded, x), _logits(ema, x))
    assert not torch.equal(_logits(loaded, x), _logits(plain, x))


def test_bare_state_dict(tmp_path, make_model, images):
    model = make_model()
    path = _save(tmp_path / "bare.pth", {"module." + k: v for k, v in model.state_dict().items()})
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "state_dict"
    assert ckpt.args == {}
    loaded = build_model(infer_config(ckpt, token_with_mlp=True), ckpt.state_dict)
    assert loaded.cfg == model.cfg
    x = images(model.cfg)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


# -- (e) dense timm / DeiT checkpoints ------------------------------------------------


def test_timm_dense_checkpoint(tmp_path, make_timm_vit, images):
    vit = make_timm_vit(embed_dim=48, num_heads=3, depth=2)  # 48 is not a DeiT width
    path = _save(tmp_path / "deit.pth", {"model": vit.state_dict(), "epoch": 300})
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "timm-dense"
    assert not any(".qkv." in k for k in ckpt.state_dict)
    # the fused qkv rows are q, k, v in that order
    fused = vit.state_dict()["blocks.1.attn.qkv.weight"]
    assert torch.equal(ckpt.state_dict["blocks.1.attn.query.weight"], fused[:48])
    assert torch.equal(ckpt.state_dict["blocks.1.attn.key.weight"], fused[48:96])
    assert torch.equal(ckpt.state_dict["blocks.1.attn.value.bias"], vit.state_dict()["blocks.1.attn.qkv.bias"][96:])

    with pytest.raises(ConfigError) as err:
        infer_config(ckpt)
    assert "pass num_heads" in str(err.value)

    cfg = infer_config(ckpt, num_heads=3)
    assert not cfg.is_adaptive
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, cfg.img_size, cfg.patch_size, cfg.num_classes) == (
        48, 2, 3, 96, 32, 8, 7,
    )
    model = build_model(cfg, ckpt.state_dict)
    x = images(cfg, batch=3)
    with torch.no_grad():
        want = vit(x)
        out = model(x, force_dense=True)
        adaptive = model(x)
    torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=0)
    # no decision heads: the plain forward is the dense one and reports no decisions
    assert torch.equal(adaptive.logits, out.logits)
    assert adaptive.head_select.shape[1] == adaptive.layer_select.shape[1] == adaptive.token_select.shape[1] == 0


def test_timm_dense_standard_width_infers_heads(tmp_path, make_timm_vit, images):
    """A DeiT width (192 -> 3 heads, DeiT-Ti) needs no --num-heads."""
    vit = make_timm_vit(embed_dim=192, num_heads=3, depth=1, mlp_hidden=384)
    ckpt = read_checkpoint(_save(tmp_path / "deit-ti.pth", {"model": vit.state_dict()}))
    cfg = infer_config(ckpt)
    assert cfg.num_heads == 3
    model = build_model(cfg, ckpt.state_dict)
    x = images(cfg, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, force_dense=True).logits, vit(x), atol=1e-5, rtol=0)


def test_indivisible_num_heads(tmp_path, make_timm_vit):
    ckpt = read_checkpoint(_save(tmp_path / "d.pth", {"model": make_timm_vit(depth=1).state_dict()}))
    with pytest.raises(ConfigError, match="pass num_heads"):
        infer_config(ckpt, num_heads=5)


# -- (f) token selection without args ------------------------------------------------


def test_bare_state_dict_with_tokens_needs_token_with_mlp(tmp_path, make_model):
    path = _save(tmp_path / "bare.pth", make_model().state_dict())
    ckpt = read_checkpoint(path)
    with pytest.raises(ConfigError) as err:
        infer_config(ckpt)
    assert "pass token_with_mlp=True or token_with_mlp=False" in str(err.value)
    assert "\n" not in str(err.value)
    assert infer_config(ckpt, token_with_mlp=False).token_with_mlp is False


def test_bare_state_dict_without_tokens_needs_nothing(tmp_path, make_model):
    path = _save(tmp_path / "bare.pth", make_model(ada_token=False).state_dict())
    cfg = infer_config(read_checkpoint(path))
    assert cfg.token_select == () and cfg.head_select == (1, 2)


# -- (g) overrides ------------------------------------------------------------------


def test_threshold_overrides(make_checkpoint, images):
    path = make_checkpoint()
    ckpt = read_checkpoint(path)
    assert infer_config(ckpt).thresholds == Thresholds(0.5, 0.5, 0.6)
    cfg = infer_config(ckpt, head_threshold=0.25, layer_threshold=0.75, token_threshold=0.9)
    assert cfg.thresholds == Thresholds(head=0.25, layer=0.75, token=0.9)
    cfg = infer_config(ckpt, token_threshold=0.3)
    assert cfg.thresholds == Thresholds(head=0.5, layer=0.5, token=0.3)

    # and they steer the model: sigmoid > 0 keeps everything, sigmoid > 1 nothing
    x = images(cfg)
    everything, _ = load_model(path, head_threshold=0.0, layer_threshold=0.0, token_threshold=0.0)
    nothing, _ = load_model(path, head_threshold=1.0, layer_threshold=1.0, token_threshold=1.0)
    with torch.no_grad():
        on, off = everything(x), nothing(x)
    assert on.head_select.all() and on.layer_select.all() and on.token_select.all()
    assert not off.head_select.any() and not off.layer_select.any()
    assert off.token_select[:, :, 0].all() and not off.token_select[:, :, 1:].any()  # class token always kept
    with torch.no_grad():
        torch.testing.assert_close(on.logits, everything(x, force_dense=True).logits)


def test_token_with_mlp_override_beats_args(make_checkpoint):
    ckpt = read_checkpoint(make_checkpoint())
    assert ckpt.args["ada_token_with_mlp"] is True
    assert infer_config(ckpt).token_with_mlp is True
    assert infer_config(ckpt, token_with_mlp=False).token_with_mlp is False


def test_num_heads_contradicting_head_selector(make_checkpoint):
    ckpt = read_checkpoint(make_checkpoint())
    assert infer_config(ckpt, num_heads=3).num_heads == 3  # agreeing is fine
    with pytest.raises(ConfigError) as err:
        infer_config(ckpt, num_heads=6)
    assert "num_heads 6 contradicts" in str(err.value) and "3 heads" in str(err.value)


def _zip_claiming(path, declared: int) -> None:
    """A ~1 KB zip checkpoint whose central directory declares ``declared`` uncompressed bytes
    for its one deflated member (what a zip bomb looks like before inflation)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(4096))
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = declared.to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))


def test_zip_bomb_is_refused_from_its_central_directory(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pth"
    _zip_claiming(path, 2 << 30)
    assert path.stat().st_size < 2000

    def never(*args, **kwargs):
        raise AssertionError("torch.load must not run on a zip bomb")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path)
    msg = str(exc.value)
    assert "\n" not in msg and "refused" in msg and "2.0 GiB" in msg and "zip bomb" in msg


def test_plausible_zip_sizes_pass_the_guard(tmp_path, make_checkpoint):
    """A real (uncompressed) torch checkpoint, and a small deflated member below the floor, pass."""
    from adavit_deploy.model.checkpoint import check_zip_sizes

    check_zip_sizes(make_checkpoint())
    small = tmp_path / "small.pth"
    _zip_claiming(small, 1 << 20)  # 1 MiB from ~50 bytes: a high ratio, but harmless
    check_zip_sizes(small)
