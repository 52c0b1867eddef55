"""The embedded demo model: trained on real digits, exact through export, ~half the GMACs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adavit_deploy.cost import dense_gmacs
from adavit_deploy.demo import DEMO_CONFIG, demo_checkpoint, load_digits_split
from adavit_deploy.export import export_bundle
from adavit_deploy.model import load_model
from adavit_deploy.runtime import load_bundle

pytest.importorskip("sklearn", reason="the digits data needs scikit-learn (the demo extra)")


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


def test_split_is_fixed_and_real(split):
    assert split.train_images.shape == (1437, 3, 32, 32)
    assert split.test_images.shape == (360, 3, 32, 32)
    assert set(np.unique(split.test_labels)) == set(range(10))
    again = load_digits_split()
    np.testing.assert_array_equal(again.test_labels, split.test_labels)


def test_shipped_model_learned_to_save_compute(split, tmp_path):
    """Held-out: runtime == PyTorch exactly, within 1 point of forced-dense, <= 60% of its GMACs."""
    model, ckpt = load_model(demo_checkpoint())
    assert model.cfg.replace(thresholds=DEMO_CONFIG.thresholds) == DEMO_CONFIG
    x = torch.from_numpy(split.test_images)
    with torch.no_grad():
        ref = model(x)
        dense = model(x, force_dense=True).logits.argmax(1).numpy()
    rt = load_bundle(export_bundle(ckpt.path, tmp_path / "demo"))
    res = rt.infer(split.test_images, batch_size=64)
    for key in ("head_select", "layer_select", "token_select"):
        np.testing.assert_array_equal(getattr(res, key), getattr(ref, key).numpy(), err_msg=key)
    np.testing.assert_array_equal(res.logits.argmax(1), ref.logits.argmax(1).numpy())
    top1_adaptive = (res.logits.argmax(1) == split.test_labels).mean()
    top1_dense = (dense == split.test_labels).mean()
    assert top1_adaptive >= top1_dense - 0.01, (top1_adaptive, top1_dense)
    assert top1_dense > 0.9
    assert res.gmacs.mean() / dense_gmacs(DEMO_CONFIG) <= 0.60
    # decisions depend on the image: not one path for all
    assert len({r.tobytes() for r in res.token_select}) > 100


def test_training_recipe_runs(tmp_path):
    from adavit_deploy.demo.train import train

    torch.set_num_threads(2)
    results = train(tmp_path / "m.pth", dense_epochs=1, adaptive_epochs=1, log=lambda _: None)
    assert set(results) >= {"top1_adaptive", "top1_dense", "gmacs_ratio", "train_seconds"}
    assert json.loads((tmp_path / "m.json").read_text())["adaptive_epochs"] == 1
    model, _ = load_model(tmp_path / "m.pth")
    assert model.cfg.token_with_mlp and model.cfg.head_select and model.cfg.layer_select


def test_shipped_samples_are_recognised():
    """The sample PNGs go through the same eval transform as any user image."""
    from adavit_deploy.demo import sample_images
    from adavit_deploy.inputs import load_inputs

    paths = sample_images()
    assert [p.name for p in paths] == [f"digit_{i}.png" for i in range(10)]
    images, labels = load_inputs(paths, DEMO_CONFIG)
    assert labels == [p.name for p in paths]
    model, _ = load_model(demo_checkpoint())
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).logits.argmax(1).numpy()
    assert (predicted == np.arange(10)).sum() >= 9


def test_budgets_and_precisions_on_held_out_digits(split, tmp_path):
    """Issue 5's table: top-1 and GMACs at native / 0.7 / 0.5, fp16 and int8 next to fp32."""
    from adavit_deploy.evaluate import evaluate

    bundle = export_bundle(
        demo_checkpoint(), tmp_path / "demo", budgets="native,0.7,0.5", calibration="demo", calib_count=128, fp16=True, int8=True
    )
    rows, dense_top1 = evaluate(bundle, split.test_images, split.test_labels)
    top1 = {(r.budget, r.precision): r.top1 for r in rows}
    frac = {(r.budget, r.precision): r.gmacs_fraction for r in rows}
    for budget in ("0.7", "0.5"):  # calibrated on training digits, held within 5% on held-out ones
        assert abs(frac[(budget, "fp32")] - float(budget)) <= 0.05 * float(budget)
    assert frac[("0.5", "fp32")] < frac[("native", "fp32")] < frac[("0.7", "fp32")]
    assert top1[("native", "fp32")] >= 0.97 and top1[("0.7", "fp32")] >= 0.97 and top1[("0.5", "fp32")] >= 0.95
    assert dense_top1 >= top1[("0.5", "fp32")]
    for precision in ("fp16", "int8"):
        assert abs(top1[("native", precision)] - top1[("native", "fp32")]) <= 0.01
