"""Budgets (threshold calibration), calibration sets and reduced-precision graph variants."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from random_models import build_random_model
from typer.testing import CliRunner

from adavit_deploy.bundle import Budget, read_manifest
from adavit_deploy.calibration import load_calibration, parse_budgets
from adavit_deploy.calibration.budgets import TOLERANCE, shifted
from adavit_deploy.cli import app
from adavit_deploy.config import Thresholds
from adavit_deploy.cost import dense_gmacs
from adavit_deploy.errors import BundleError, ConfigError, InputError
from adavit_deploy.export import export_bundle
from adavit_deploy.model import load_model, save_checkpoint
from adavit_deploy.runtime import load_bundle
from adavit_deploy.tensorrt.build import budget_profile_spec


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A random model exported with budgets native,0.8,0.5, FP16 and INT8 graphs, calibrated on 48 images."""
    tmp = tmp_path_factory.mktemp("calibrated")
    ckpt = tmp / "random.pth.tar"
    save_checkpoint(build_random_model(3), ckpt)
    cfg = read_cfg(ckpt)
    rng = np.random.default_rng(1)
    np.savez(tmp / "calib.npz", images=rng.standard_normal((64, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32))
    out = export_bundle(
        ckpt, tmp / "bundle", budgets="native,0.8,0.5", calibration=tmp / "calib.npz", calib_count=48, fp16=True, int8=True
    )
    return out, tmp


def read_cfg(ckpt):
    return load_model(ckpt)[0].cfg


def test_parse_budgets():
    assert parse_budgets("native, 0.70,0.5,0.5") == ["native", "0.7", "0.5"]
    assert parse_budgets(["1", "native"]) == ["1", "native"]
    assert parse_budgets("0.5,,") == ["0.5"]  # empty items are dropped, as in every comma list (lists.py)
    for bad in ("0", "1.5", "-0.2", "half", "", ","):
        with pytest.raises(ConfigError, match="native"):
            parse_budgets(bad)


def test_logit_shift_moves_only_the_mixed_decisions():
    native = Thresholds()
    assert shifted(native, (1, 1, 1), 0.0) == native
    up = shifted(native, (0, 0, 1), 2.0)
    assert (up.head, up.layer) == (native.head, native.layer) and up.token > native.token
    down = shifted(native, (1, 1, 1), -2.0)
    assert down.head < native.head and down.layer < native.layer and down.token < native.token


def test_budgets_hit_their_targets_on_the_calibration_set(calibrated):
    bundle, tmp = calibrated
    manifest = read_manifest(bundle)
    assert list(manifest.budgets) == ["native", "0.8", "0.5"]
    assert manifest.budgets["native"].thresholds == manifest.model.thresholds
    rt = load_bundle(bundle)
    images = load_calibration(tmp / "calib.npz", rt.cfg, count=48).images
    dense = dense_gmacs(rt.cfg)
    for name in ("0.8", "0.5"):
        b = manifest.budgets[name]
        measured = rt.infer(images, budget=name).gmacs.mean() / dense
        assert abs(measured - float(name)) <= TOLERANCE * float(name)
        assert measured == pytest.approx(b.gmacs_fraction, rel=1e-6)
        assert b.search["mix"] in b.search["mixes"]
        assert b.token_edges[-1] == rt.cfg.num_tokens and b.opt_heads in range(1, rt.cfg.num_heads + 1)
    # a lower budget keeps less: thresholds never fall
    lo, hi = manifest.budgets["0.5"].thresholds, manifest.budgets["0.8"].thresholds
    assert lo.head >= hi.head and lo.layer >= hi.layer and lo.token >= hi.token


def test_budget_by_name_equals_its_thresholds(calibrated):
    bundle, _ = calibrated
    rt = load_bundle(bundle, budget="0.5")
    x = np.random.default_rng(7).standard_normal((5, rt.cfg.in_chans, rt.cfg.img_size, rt.cfg.img_size), dtype=np.float32)
    by_name = rt.infer(x)
    by_thresholds = rt.infer(x, budget=rt.manifest.budgets["0.5"].thresholds)
    np.testing.assert_array_equal(by_name.logits, by_thresholds.logits)
    assert by_name.gmacs.mean() < rt.infer(x, budget="0.8").gmacs.mean()


def test_calibration_record_names_its_images(calibrated):
    bundle, tmp = calibrated
    record = read_manifest(bundle).calibration  # in the manifest, sha256-verified with it; no separate file
    assert not (bundle / "calibration.json").exists()
    assert record["source"]["kind"] == "array" and record["count"] == 48 and len(record["indices"]) == 48
    assert set(record["budgets"]) == {"native", "0.8", "0.5"}
    assert 0 < record["budgets"]["0.5"]["gmacs_fraction_mean"] < record["budgets"]["0.8"]["gmacs_fraction_mean"]


def test_unknown_budget_is_a_clear_error(calibrated):
    bundle, _ = calibrated
    with pytest.raises(BundleError, match=r"no budget 0.3 .*native, 0.8, 0.5.*calibrate BUNDLE --budgets native,0.8,0.5,0.3"):
        load_bundle(bundle, budget=0.3)


def test_unreachable_budget_is_an_error_not_a_clamp(make_checkpoint, tmp_path):
    ckpt = make_checkpoint()
    np.savez(tmp_path / "c.npz", images=np.random.default_rng(0).standard_normal((16, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"budget 0.01 is unreachable: .* spends 0\.\d+\.\.1\.000 of dense GMACs"):
        export_bundle(ckpt, tmp_path / "b", budgets="native,0.01", calibration=tmp_path / "c.npz")
    assert not (tmp_path / "b").exists() and not any(p.name.startswith(".b.") for p in tmp_path.iterdir())


def test_budgets_need_a_calibration_set(make_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="budgets 0.5 needs a calibration set: pass calibration"):
        export_bundle(make_checkpoint(), tmp_path / "b", budgets="native,0.5")


def test_calibration_sources(make_checkpoint, tmp_path):
    from PIL import Image

    cfg = read_cfg(make_checkpoint())
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    cal = load_calibration(folder, cfg, count=3)
    assert cal.images.shape == (3, 3, cfg.img_size, cfg.img_size)
    assert [f["file"] for f in cal.record["files"]] == sorted(f["file"] for f in cal.record["files"])
    assert cal.record["preprocess"]["interpolation"] == "bicubic"
    with pytest.raises(InputError, match="no such calibration set"):
        load_calibration(tmp_path / "nope", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        load_calibration(tmp_path / "empty", cfg)
    with pytest.raises(InputError, match="demo digits are 48px; this model takes 64px"):
        load_calibration("demo", cfg.replace(img_size=64))


def test_fp16_variants(calibrated):
    bundle, _ = calibrated
    manifest = read_manifest(bundle)
    assert manifest.precisions == ["fp32", "fp16", "int8"]
    attn = onnx.load(str(bundle / manifest.artifacts["attn_1.fp16"].file))
    # I/O stays fp32 (heads is an index)
    assert {i.name: i.type.tensor_type.elem_type for i in attn.graph.input}["x"] == onnx.TensorProto.FLOAT
    assert attn.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in attn.graph.initializer)
    onnx.checker.check_model(attn)
    # the policy graphs stay fp32: their fp16 variant is the fp32 file
    assert manifest.artifacts["policy_1.fp16"].file == manifest.artifacts["policy_1"].file
    report = manifest.parity["vs_fp32"]["fp16"]
    assert report["samples"] == 48 and report["top1_agreement"] >= 0.9 and report["decision_agreement"] >= 0.99
    assert 0 < report["max_abs_logit_diff"] < 0.5
    rt16 = load_bundle(bundle, precision="fp16")
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32), dtype=np.float32)
    assert rt16.infer(x).logits.shape == (3, rt16.cfg.num_classes)


def test_precision_without_its_graphs_is_a_clear_error(exported, tmp_path):
    with pytest.raises(ConfigError, match="no int8 graphs .* add them with `adavit-deploy calibrate .* --int8`"):
        load_bundle(exported().bundle, precision="int8")
    with pytest.raises(ConfigError, match="int8 needs a calibration set"):
        export_bundle(exported().checkpoint, tmp_path / "c", int8=True)


def test_int8_graphs_are_symmetric_qdq(calibrated):
    bundle, _ = calibrated
    manifest = read_manifest(bundle)
    for name in ("attn_1", "mlp_1", "dense"):
        model = onnx.load(str(bundle / manifest.artifacts[f"{name}.int8"].file))
        onnx.checker.check_model(model)
        nodes = model.graph.node
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        dq = [n for n in nodes if n.op_type == "DequantizeLinear"]
        q = [n for n in nodes if n.op_type == "QuantizeLinear"]
        matmuls = [n for n in nodes if n.op_type == "MatMul"]
        assert q and len(dq) == 2 * len(q)  # activation Q->DQ + a weight DQ per quantized MatMul
        for n in q + dq:  # zero point 0 (or absent), int8
            if len(n.input) > 2:
                assert inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any()
        produced_by = {o: n.op_type for n in nodes for o in n.output}
        weight_dq = [n for n in dq if produced_by.get(n.input[0]) != "QuantizeLinear"]
        assert len(weight_dq) == len(q)
        # per output channel: a 1-D scale along B's columns
        assert all(any(a.name == "axis" and a.i == 1 for a in n.attribute) for n in weight_dq)
        weights = [w for w in inits.values() if w.dtype == np.int8 and w.ndim >= 2]
        assert len(weights) == len(q) and all(np.abs(w).max() <= 63 for w in weights)
        C = manifest.model.embed_dim  # no float weight matrix left in a block (biases and scales are)
        if name != "dense":
            assert all(w.size <= 3 * C for w in inits.values() if w.dtype == np.float32 and w.ndim >= 2)
        else:  # every block's four weight MatMuls and the patch embedding; the classifier stays float
            assert len(q) == 4 * manifest.model.depth + 1
        # nothing is quantized after a MatMul; LayerNorm and Softmax stay float
        assert not any(produced_by.get(n.input[0]) == "MatMul" for n in q)
        assert {"LayerNormalization"} <= {n.op_type for n in nodes}
        quantized = [m for m in matmuls if produced_by.get(m.input[0]) == "DequantizeLinear"]
        assert len(quantized) == len(q)
    for name in ("policy_1", "head"):
        assert manifest.artifacts[f"{name}.int8"].file == manifest.artifacts[name].file
    stem = onnx.load(str(bundle / manifest.artifacts["stem.int8"].file))
    assert "Conv" not in {n.op_type for n in stem.graph.node}  # the patch embedding is an int8 MatMul


def test_a_graph_without_weight_matmuls_is_not_probed(calibrated):
    """The stem (a patch Conv, no weight MatMul) needs no weight layout: no probe run (an empty feed shows it)."""
    from adavit_deploy.calibration.int8 import _layouts

    bundle, _ = calibrated
    manifest = read_manifest(bundle)
    stem = onnx.load(str(bundle / manifest.artifacts["stem"].file))
    assert _layouts(stem, [], {}, manifest.model.num_heads) == []


def test_int8_runs_int8_kernels_on_onnx_runtime(calibrated, tmp_path):
    import onnxruntime as ort

    bundle, _ = calibrated
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(bundle / "mlp_1.int8.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2, ops


def test_int8_parity_is_reported(calibrated):
    bundle, tmp = calibrated
    report = read_manifest(bundle).parity["vs_fp32"]["int8"]
    assert report["samples"] == 48 and report["decision_agreement"] >= 0.95 and report["top1_agreement"] >= 0.5
    assert isinstance(report["kept_float"], list) and "head" in report["kept_float"] and "stem" not in report["kept_float"]
    rt = load_bundle(bundle, precision="int8", budget="0.5")
    x = load_calibration(tmp / "calib.npz", rt.cfg, count=8).images
    assert rt.infer(x).logits.shape == (8, rt.cfg.num_classes)


def test_evaluate_table(calibrated, tmp_path):
    bundle, tmp = calibrated
    with np.load(tmp / "calib.npz") as z:
        images = z["images"][:20]
    labels = np.arange(20) % 7
    np.savez(tmp_path / "labelled.npz", images=images, labels=labels)
    out = tmp_path / "ev.json"
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(bundle), "--data", str(tmp_path / "labelled.npz"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads(out.read_text())
    rows = {(r["budget"], r["precision"]): r for r in table["rows"]}
    assert set(rows) == {(b, p) for b in ("native", "0.8", "0.5") for p in ("fp32", "fp16", "int8")}
    for (b, p), r in rows.items():  # each row is what the runtime itself gives at that budget and precision
        with load_bundle(bundle, budget=b, precision=p) as rt:
            res = rt.infer(images)
        assert r["top1"] == pytest.approx(np.mean(res.logits.argmax(1) == labels)), (b, p)
        assert r["gmacs_fraction"] == pytest.approx(res.gmacs.mean() / dense_gmacs(rt.cfg), rel=1e-3), (b, p)
        if p == "fp32":
            assert r["top1_agreement_vs_fp32"] == 1.0 and r["decision_agreement_vs_fp32"] == 1.0
    assert rows[("0.5", "fp32")]["gmacs_fraction"] < rows[("0.8", "fp32")]["gmacs_fraction"]
    with load_bundle(bundle) as rt:
        assert table["dense_top1"] == pytest.approx(np.mean(rt.dense(images).argmax(1) == labels))
    np.savez(tmp_path / "nolabels.npz", images=images)
    bad = runner.invoke(app, ["evaluate", str(bundle), "--data", str(tmp_path / "nolabels.npz")])
    assert bad.exit_code == 1 and "nolabels.npz: evaluate needs labels" in bad.output


def test_trt_profiles_follow_the_budgets(calibrated):
    bundle, _ = calibrated
    manifest = read_manifest(bundle)
    spec = budget_profile_spec(manifest, ["0.5", "native"])
    assert set(manifest.budgets["0.5"].token_edges) | set(manifest.budgets["native"].token_edges) == set(spec.token_edges)
    assert spec.opt_heads == manifest.budgets["0.5"].opt_heads
    manifest.budgets["0.9"] = Budget(Thresholds())
    with pytest.raises(BundleError, match="budget 0.9 has no calibration statistics"):
        budget_profile_spec(manifest, ["0.9"])


def test_cli_budget_and_precision(calibrated, tmp_path):
    bundle, tmp = calibrated
    runner = CliRunner()
    out = tmp_path / "o.npz"
    ok = runner.invoke(app, ["infer", str(bundle), str(tmp / "calib.npz"), "--budget", "0.5", "--precision", "fp16", "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    with np.load(out) as z:
        assert z["logits"].shape[0] == 64
    bad = runner.invoke(app, ["infer", str(bundle), str(tmp / "calib.npz"), "--budget", "0.6", "-o", str(tmp_path / "x.npz")])
    assert bad.exit_code == 1 and "no budget 0.6" in bad.output and not (tmp_path / "x.npz").exists()
    with np.load(tmp / "calib.npz") as z:
        np.save(tmp_path / "one.npy", z["images"][:1])
    png = tmp_path / "p.png"
    ok = runner.invoke(app, ["inspect", str(bundle), str(tmp_path / "one.npy"), "--budget", "0.5", "--out", str(png)])
    assert ok.exit_code == 0 and png.stat().st_size > 0, ok.output
    bad = runner.invoke(app, ["export", str(tmp / "random.pth.tar"), "-o", str(tmp_path / "b"), "--budgets", "native,0.5"])
    assert bad.exit_code == 1 and "needs a calibration set" in bad.output and "Traceback" not in bad.output


def test_build_trt_uses_the_exported_variants_and_budgets(calibrated, monkeypatch):
    from adavit_deploy.tensorrt.build import plan_build

    bundle, _ = calibrated
    manifest = read_manifest(bundle)
    for precision in ("fp16", "int8"):
        plan = plan_build(manifest, precision, 11, bundle)
        assert all(p.strongly_typed and p.source == f"{p.graph}.{precision}" for p in plan)
        files = {p.graph: manifest.artifacts[p.source].file for p in plan}
        assert files["policy_1"] == "policy_1.onnx" and files["attn_1"] == f"attn_1.{precision}.onnx"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    runner = CliRunner()
    res = runner.invoke(app, ["build-trt", str(bundle), "--int8", "--budget", "0.5", "--budget", "native"])
    assert res.exit_code == 1 and "TensorRT is not installed" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["build-trt", str(bundle), "--budget", "0.9"])
    assert res.exit_code == 1 and "no budget 0.9" in res.output
    assert not (bundle / "trt").exists()


def test_bench_compares_precisions_at_a_budget(calibrated):
    from adavit_deploy.bench import bench

    bundle, _ = calibrated
    report = bench(bundle, batch_sizes="2", iterations=2, warmup=0, engines="adaptive,adaptive.int8,dense.fp16", baselines=False,
                   budget="0.5", memory=False)  # fmt: skip
    assert report.settings["budget"] == "0.5" and report.settings["engines"] == ["adaptive", "adaptive.int8", "dense.fp16"]
    (cmp,) = report.comparisons
    assert set(cmp["speedup_vs_fp32"]) == {"adaptive.int8"}  # its value is a wall-clock ratio: not asserted
    assert set(report.precision_parity) == {"adaptive.int8"}  # dense.fp16 asked, not adaptive.fp16
    assert report.settings["tactics"] == {"fp32": "default", "int8": "default"}  # the adaptive engines' precisions only
    parity = report.precision_parity["adaptive.int8"]
    assert parity["samples"] == 32 and 0.9 <= parity["decision_agreement"] <= 1.0
    # the adaptive engines ran at the budget: its cost, not native's
    native = bench(bundle, batch_sizes="2", iterations=1, warmup=0, engines="adaptive", memory=False)
    assert report.gmacs["adaptive_mean"] != native.gmacs["adaptive_mean"]


def test_kernel_time_attributes_profiled_kernels_to_each_engine(calibrated, monkeypatch):
    """``benchmarks/kernel_time.py``: every engine's kernels are found, int8 ones run int8 GEMMs."""
    # a script run from its own folder (it imports its sibling adaptive_vs_dense): pytest's
    # syspath_prepend puts that folder first for this test only and restores sys.path after it
    monkeypatch.syspath_prepend(Path(__file__).resolve().parents[2] / "benchmarks")
    kernel_time = importlib.import_module("kernel_time")
    wall, kernels = kernel_time.measure(calibrated[0], batch=2, threads=0, reps=2)
    assert set(wall) == set(kernels) == set(kernel_time.ENGINES)
    for engine in kernel_time.ENGINES:
        assert sum(kernels[engine].values()) > 0  # profiled kernels were found (wall times are not asserted)
    assert "MatMulIntegerToFloat" in kernels["adaptive.int8"]
    assert "MatMulIntegerToFloat" not in kernels["adaptive"] and "MatMulIntegerToFloat" not in kernels["dense"]
    assert "LayerNormalization" in kernels["dense"]
