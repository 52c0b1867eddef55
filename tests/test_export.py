"""export: bundle layout, manifest, atomic writes, verification."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from adavit_deploy import export as export_mod
from adavit_deploy.bundle import read_manifest
from adavit_deploy.errors import BundleError, ConfigError
from adavit_deploy.export import export_bundle


@pytest.fixture
def bundle(exported):
    """The session's default random bundle (read-only)."""
    return exported().bundle


def test_manifest_lists_every_graph_with_signature(bundle):
    m = read_manifest(bundle)
    depth = m.model.depth
    expected = {"stem", "head", "dense", "constants"}
    expected |= {f"{kind}_{i}" for kind in ("attn", "mlp") for i in range(depth)}
    expected |= {f"policy_{i}" for i in range(depth)}  # the default layout has a decision in every block
    expected |= {f"{kind}_masked_{i}" for kind in ("attn", "mlp") for i in m.model.head_select}  # the masked tactic
    assert set(m.artifacts) == expected
    attn = {t.name: t for t in m.artifacts["attn_1"].inputs}
    assert attn["x"].shape == ["batch", "tokens", m.model.embed_dim]
    assert attn["heads"].dtype == "int64" and attn["heads"].shape == ["kept_heads"]
    assert attn["key_bias"].shape == ["batch", "tokens"]
    assert "heads" not in {t.name for t in m.artifacts["attn_0"].inputs}  # block 0 keeps all heads
    assert m.opset == 17 and m.producer["adavit_deploy"]
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["flags"]["ada_token_with_mlp"] is True


def test_graphs_are_valid_onnx_with_one_layernorm_op(bundle):
    for name in ("attn_1", "mlp_1", "policy_1", "dense"):
        model = onnx.load(str(bundle / f"{name}.onnx"))
        onnx.checker.check_model(model)
        ops = {n.op_type for n in model.graph.node}
        assert "LayerNormalization" in ops, name
        assert not ops & {"NonZero", "TopK", "Loop", "If"}, f"{name} has data-dependent ops: {ops}"


def test_parity_report_at_export(bundle):
    parity = read_manifest(bundle).parity
    assert parity["decision_agreement"] == 1.0
    assert parity["top1_agreement"] == 1.0
    assert parity["max_abs_logit_diff"] < 1e-4
    assert parity["dense_max_abs_logit_diff"] < 1e-4


def test_interrupted_export_leaves_nothing(make_checkpoint, tmp_path, monkeypatch):
    real = export_mod.export_onnx
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, "export_onnx", failing)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(make_checkpoint(), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.pth.tar"]


def test_existing_bundle_needs_overwrite(exported, tmp_path):
    ckpt, out = exported().checkpoint, Path(shutil.copytree(exported().bundle, tmp_path / "b"))
    with pytest.raises(BundleError, match="pass overwrite=True"):
        export_bundle(ckpt, out)
    export_bundle(ckpt, out, overwrite=True)
    read_manifest(out)


@pytest.mark.parametrize("bad", [{"opset": 16}, {"max_batch": 0}])
def test_bad_export_options(make_checkpoint, tmp_path, bad):
    with pytest.raises(ConfigError):
        export_bundle(make_checkpoint(), tmp_path / "b", **bad)
    assert not (tmp_path / "b").exists()


def test_tampered_or_missing_artifact_is_refused(bundle, tmp_path):
    bundle = Path(shutil.copytree(bundle, tmp_path / "b"))
    original = (bundle / "mlp_1.onnx").read_bytes()
    (bundle / "mlp_1.onnx").write_bytes(original + b"\0")
    with pytest.raises(BundleError, match="mlp_1.onnx.*sha256"):
        read_manifest(bundle)
    (bundle / "mlp_1.onnx").write_bytes(original)
    read_manifest(bundle)
    (bundle / "constants.npz").unlink()
    with pytest.raises(BundleError, match="constants.npz.*missing"):
        read_manifest(bundle)


def test_a_file_is_hashed_again_only_when_it_changed(bundle, tmp_path, monkeypatch):
    """Loading a bundle again reads no artifact; one replaced by another of the same size is read and refused."""
    from adavit_deploy import bundle as bundle_module

    bundle = Path(shutil.copytree(bundle, tmp_path / "b"))
    monkeypatch.setattr(bundle_module, "RACY_NS", 0)  # files just copied: as if their clock had ticked since
    read_manifest(bundle)
    hashed, real = [], bundle_module.sha256
    monkeypatch.setattr(bundle_module, "sha256", lambda path: hashed.append(Path(path).name) or real(path))
    read_manifest(bundle)
    assert hashed == []
    data = bytearray((bundle / "mlp_1.onnx").read_bytes())
    data[-1] ^= 1
    (bundle / "new.onnx").write_bytes(bytes(data))
    os.replace(bundle / "new.onnx", bundle / "mlp_1.onnx")
    with pytest.raises(BundleError, match="mlp_1.onnx.*sha256"):
        read_manifest(bundle)
    assert hashed == ["mlp_1.onnx"]


def test_a_file_changed_within_its_clock_tick_is_refused(bundle, tmp_path, monkeypatch):
    """Where file times tick coarsely (1 s on ext3, a jiffy on ext4 before Linux 6.13), a file written again
    within the tick keeps its stat: a recently changed file is hashed at every load, not trusted to its stat."""
    bundle = Path(shutil.copytree(bundle, tmp_path / "b"))
    target, real_stat, first = bundle / "mlp_1.onnx", Path.stat, {}

    def coarse_stat(self: Path, **kwargs):  # the target's stat as it was at the first look: no tick since
        st = real_stat(self, **kwargs)
        return first.setdefault("stat", st) if self == target else st

    monkeypatch.setattr(Path, "stat", coarse_stat)
    read_manifest(bundle)
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="mlp_1.onnx.*sha256"):
        read_manifest(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(BundleError, match="malformed"):
        read_manifest(tmp_path)


def test_dense_graph_is_the_forced_dense_model(exported):
    import torch

    from adavit_deploy.model import load_model
    from adavit_deploy.runtime import load_bundle

    ckpt, bundle = exported()
    rt = load_bundle(bundle)
    model, _ = load_model(ckpt)
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), force_dense=True).logits.numpy()
    np.testing.assert_allclose(rt.dense(x), ref, atol=1e-5)
