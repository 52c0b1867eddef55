"""The embedded demo model: trained on real digits pasted on a larger canvas, exact through export,
about half the GMACs, and most of the background's patches dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adavit_deploy.cost import dense_gmacs
from adavit_deploy.demo import DEMO_CONFIG, demo_checkpoint, digit_patches, is_demo, load_digits_split, paste_digits
from adavit_deploy.errors import ConfigError
from adavit_deploy.export import export_bundle
from adavit_deploy.model import load_model
from adavit_deploy.runtime import load_bundle

pytest.importorskip("sklearn", reason="the digits data needs scikit-learn (the demo extra)")
# Share of patches kept (over every block) among those overlapping the digit's box / the rest;
# measured 70.9% / 33.8% for the shipped model (docs/demo-model.md).
KEPT_ON_DIGIT, KEPT_ON_BACKGROUND = 0.65, 0.40


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    """The demo exported with budgets native / 0.7 / 0.35 (calibrated on 64 training digits), FP16 and INT8;
    its fp32 graphs at ``native`` are what a plain ``export`` writes."""
    return export_bundle(
        demo_checkpoint(), tmp_path_factory.mktemp("demo") / "demo", budgets="native,0.7,0.35", calibration="demo",
        calib_count=64, fp16=True, int8=True,
    )  # fmt: skip


def test_split_is_fixed_and_real(split):
    assert split.train_raw.shape == (1437, 8, 8)
    assert split.train_images.shape == (1437, 3, 48, 48)
    assert split.test_images.shape == (360, 3, 48, 48)
    assert set(np.unique(split.test_labels)) == set(range(10))
    again = load_digits_split()
    np.testing.assert_array_equal(again.test_labels, split.test_labels)
    np.testing.assert_array_equal(again.test_images, split.test_images)


def test_digits_are_pasted_with_background(split):
    """Position and scale vary per image; the digit's box covers a minority of the 36 patches."""
    canvases = paste_digits(split.train_raw[:200], np.random.default_rng(1))
    assert canvases.shape == (200, 48, 48)
    tops = [np.flatnonzero(c.any(1))[0] for c in canvases]
    assert len(set(tops)) > 10
    assert not canvases[:, :3].any() and not canvases[:, -3:].any()  # the eval transform's crop keeps every digit whole
    box = digit_patches(split.test_images)
    assert box.shape == (360, 36)
    assert 4 <= box.sum(1).min() and box.sum(1).max() <= 25
    assert 0.25 < box.mean() < 0.5


def test_shipped_model_learned_to_save_compute(split, demo_bundle):
    """Held-out: runtime == PyTorch exactly, within 1 point of forced-dense, <= 55% of its GMACs,
    <= 60% of the patches kept, and those mostly on the digit."""
    model, _ = load_model(demo_checkpoint())
    assert is_demo(model.cfg) and model.cfg.replace(thresholds=DEMO_CONFIG.thresholds) == DEMO_CONFIG
    x = torch.from_numpy(split.test_images)
    with torch.no_grad():
        ref = model(x)
        dense = model(x, force_dense=True).logits.argmax(1).numpy()
    rt = load_bundle(demo_bundle)
    res = rt.infer(split.test_images, batch_size=64)
    for key in ("head_select", "layer_select", "token_select"):
        np.testing.assert_array_equal(getattr(res, key), getattr(ref, key).numpy(), err_msg=key)
    np.testing.assert_array_equal(res.logits.argmax(1), ref.logits.argmax(1).numpy())
    top1_adaptive = (res.logits.argmax(1) == split.test_labels).mean()
    top1_dense = (dense == split.test_labels).mean()
    assert top1_adaptive >= top1_dense - 0.01, (top1_adaptive, top1_dense)
    assert top1_dense > 0.9
    assert res.gmacs.mean() / dense_gmacs(DEMO_CONFIG) <= 0.55
    kept = res.token_select[:, :, 1:].astype(bool)  # (images, blocks, patches)
    digit = np.broadcast_to(digit_patches(split.test_images)[:, None], kept.shape)
    assert kept.mean() <= 0.60
    assert kept[digit].mean() >= KEPT_ON_DIGIT and kept[~digit].mean() <= KEPT_ON_BACKGROUND
    # decisions depend on the image: not one path for all
    assert len({r.tobytes() for r in res.token_select}) > 100
    assert len({r.tobytes() for r in res.head_select}) > 10 and len({r.tobytes() for r in res.layer_select}) > 1


def test_training_recipe_runs(tmp_path):
    from adavit_deploy.demo.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recipe's default: faster than 2 on a shared machine
    try:
        results = train(tmp_path / "m.pth", dense_epochs=1, adaptive_epochs=1, log=lambda _: None, train_images=96)
    finally:
        torch.set_num_threads(threads)
    assert set(results) >= {"kept_tokens", "kept_on_digit", "kept_on_background", "kept_in_digit_box"}
    assert set(results) >= {"top1_adaptive", "top1_dense", "gmacs_ratio", "train_seconds"}
    written = json.loads((tmp_path / "m.json").read_text())
    assert (written["adaptive_epochs"], written["train_images"], written["test_images"]) == (1, 96, 360)
    with pytest.raises(ConfigError, match=r"^train_images must be >= 1, got 0$"):
        train(tmp_path / "none.pth", train_images=0)
    assert not (tmp_path / "none.pth").exists()
    model, _ = load_model(tmp_path / "m.pth")
    assert model.cfg.token_with_mlp and model.cfg.head_select and model.cfg.layer_select


@pytest.mark.parametrize(
    "option, says",
    [
        (["--train-images", "0"], "train_images must be >= 1, got 0"),
        (["--dense-epochs", "-1"], "dense_epochs must be >= 0, got -1"),
        (["--adaptive-epochs", "-2"], "adaptive_epochs must be >= 0, got -2"),
        (["--threads", "-3"], "threads must be >= 1, got -3"),  # was torch's RuntimeError traceback
        (["--out", "."], "is a directory: name the checkpoint file"),  # was found by torch.save, after training
    ],
)
def test_training_recipe_refuses_a_bad_option_in_one_line(tmp_path, monkeypatch, capsys, option, says):
    """``python -m adavit_deploy.demo.train --train-images 0`` and co: argparse's one-line error, before any
    training, no traceback, nothing written."""
    from adavit_deploy.demo.train import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train.py", "--out", str(tmp_path / "m.pth"), "--train-images", "1", *option])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        torch.set_num_threads(threads)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("train.py: error: ") and says in last, last
    assert list(tmp_path.iterdir()) == []


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


def test_budgets_and_precisions_on_held_out_digits(split, demo_bundle):
    """Issue 5's table: top-1 and GMACs at native / 0.7 / 0.35, fp16 and int8 next to fp32."""
    from adavit_deploy.evaluate import evaluate

    result = evaluate(demo_bundle, "demo")
    rows, dense_top1 = result.rows, result.dense_top1
    assert result.source == {"path": "demo digits, held-out split (360 images)", "kind": "demo", "images": 360,
                             "classes": 10, "skipped": [], "limit": None, "seed": None}  # fmt: skip
    top1 = {(r.budget, r.precision): r.top1 for r in rows}
    frac = {(r.budget, r.precision): r.gmacs_fraction for r in rows}
    for budget in ("0.7", "0.35"):  # calibrated on training digits, held within 5% on held-out ones
        assert abs(frac[(budget, "fp32")] - float(budget)) <= 0.05 * float(budget)
    assert frac[("0.35", "fp32")] < frac[("native", "fp32")] < frac[("0.7", "fp32")]
    # measured: native 92.2%, 0.7 92.5%, 0.35 91.7%, dense 91.7% (docs/demo-model.md)
    assert top1[("native", "fp32")] >= 0.90 and top1[("0.7", "fp32")] >= 0.90 and top1[("0.35", "fp32")] >= 0.88
    assert top1[("0.35", "fp32")] >= dense_top1 - 0.02
    for precision in ("fp16", "int8"):
        assert abs(top1[("native", precision)] - top1[("native", "fp32")]) <= 0.01


def test_bf16_and_int8_on_openvino_on_held_out_digits(split, demo_bundle):
    """Issue 23's accuracy target: bf16 (OpenVINO) top-1 within 0.5 points of fp32 on the held-out
    digits at every budget; fp32 on ov is exact (the ort table); the Q/DQ INT8 graphs run too."""
    ov = pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")
    from adavit_deploy.evaluate import evaluate, runnable_precisions
    from adavit_deploy.runtime import load_bundle

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with load_bundle(demo_bundle, "ov", threads=1) as rt:  # what evaluate --backend ov runs by default
        assert runnable_precisions(rt) == ["fp32", "fp16", "int8", *(["bf16"] if has_bf16 else [])]
    wanted = ["fp32", "int8", *(["bf16"] if has_bf16 else [])]
    result = evaluate(demo_bundle, "demo", precisions=wanted, backend="ov")
    by = {(r.budget, r.precision): r for r in result.rows}
    ort = evaluate(demo_bundle, "demo", precisions=["fp32"])
    ort_rows, ort_dense, dense_top1 = ort.rows, ort.dense_top1, result.dense_top1
    for r in ort_rows:
        assert by[(r.budget, "fp32")].top1 == r.top1 and by[(r.budget, "fp32")].gmacs_mean == pytest.approx(r.gmacs_mean)
    assert dense_top1 == ort_dense
    for budget in ("native", "0.7", "0.35"):
        fp32 = by[(budget, "fp32")]
        for precision in ("bf16",) if has_bf16 else ():
            assert abs(by[(budget, precision)].top1 - fp32.top1) <= 0.005, (budget, by[(budget, precision)])
        assert abs(by[(budget, "int8")].top1 - fp32.top1) <= 0.01


def test_bench_of_the_demo_runs_on_its_sample_digits(demo_bundle):
    """Noise would route unlike any digit: without --images the demo is timed on its shipped digits."""
    from adavit_deploy.bench import bench

    report = bench(demo_bundle, batch_sizes=[4], iterations=1, warmup=0, memory=False)
    assert report.settings["images"] == {"source": "the demo's sample digits", "count": 10}
    assert report.parity["samples"] == 10 and report.parity["decision_agreement"] == 1.0
