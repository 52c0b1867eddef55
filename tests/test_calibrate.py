"""Calibration as its own step over a finished bundle (``calibrate.py``, ``adavit-deploy calibrate``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from checks import cli_error, one_line
from typer.testing import CliRunner

from adavit_deploy.bundle import read_manifest
from adavit_deploy.calibrate import calibrate_bundle
from adavit_deploy.cli import app
from adavit_deploy.errors import AdaViTDeployError, ConfigError
from adavit_deploy.export import export_bundle
from adavit_deploy.runtime import load_bundle


@pytest.fixture
def fp32_bundle(exported, tmp_path):
    """An fp32 bundle of its own (a copy: calibrate replaces it), and the calibration images."""
    bundle = shutil.copytree(exported().bundle, tmp_path / "bundle")
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "calib.npz", images=rng.standard_normal((24, 3, 32, 32), dtype=np.float32))
    return bundle, tmp_path / "calib.npz"


def test_calibrating_an_existing_bundle_equals_exporting_with_it(exported, fp32_bundle, tmp_path):
    """The same thresholds and INT8 graphs as ``export --budgets --int8``: export is this step on its staged bundle."""
    bundle, calib = fp32_bundle
    new = calibrate_bundle(bundle, budgets="native,0.6", calibration=calib, int8=True, threads=1)
    direct = export_bundle(exported().checkpoint, tmp_path / "direct", budgets="native,0.6", calibration=calib, int8=True, threads=1)
    want = read_manifest(direct)
    assert read_manifest(bundle).budgets == new.budgets == want.budgets
    assert {k: a.sha256 for k, a in new.artifacts.items()} == {k: a.sha256 for k, a in want.artifacts.items()}
    assert new.parity["vs_fp32"]["int8"] == want.parity["vs_fp32"]["int8"]
    assert new.parity["decision_agreement"] == 1.0  # the fp32 parity against PyTorch, from the export, kept
    images = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with load_bundle(bundle, budget="0.6", precision="int8", threads=1) as a, load_bundle(direct, budget="0.6", precision="int8", threads=1) as b:
        np.testing.assert_array_equal(a.infer(images).logits, b.infer(images).logits)


def test_what_else_the_bundle_holds_is_kept(fp32_bundle):
    """tactics.json and an engine folder survive a calibration (linked into the new bundle, not rewritten)."""
    from adavit_deploy.tuner import tune

    bundle, calib = fp32_bundle
    tune(bundle, (1,), threads=1, reps=1)
    (bundle / "trt").mkdir()
    (bundle / "trt" / "engines.json").write_text("{}")
    tactics = (bundle / "tactics.json").read_bytes()
    calibrate_bundle(bundle, calibration=calib, fp16=True, threads=1)
    assert (bundle / "tactics.json").read_bytes() == tactics and (bundle / "trt" / "engines.json").read_text() == "{}"
    with load_bundle(bundle, threads=1) as rt:
        assert rt.tactics is not None


def test_a_failed_calibration_leaves_the_bundle_as_it_was(fp32_bundle):
    bundle, calib = fp32_bundle
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with pytest.raises(ConfigError) as e:
        calibrate_bundle(bundle, budgets="native,0.5", threads=1)  # no calibration set
    one_line(e, "budgets 0.5 needs a calibration set")
    with pytest.raises(AdaViTDeployError) as e:
        calibrate_bundle(bundle, budgets="native,0.001", calibration=calib, threads=1)  # unreachable: refused mid-way
    one_line(e, "0.001")
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_bf16_agreement_is_recorded_when_asked(fp32_bundle):
    ov = pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bfloat16 instructions")
    bundle, calib = fp32_bundle
    calibrate_bundle(bundle, calibration=calib, bf16=True, threads=1)
    bf16 = read_manifest(bundle).parity["vs_fp32"]["bf16"]
    assert bf16["samples"] == 24 and bf16["backend"] == "ov" and 0.9 <= bf16["decision_agreement"] <= 1.0
    assert not [p for p in bundle.iterdir() if "bf16" in p.name]  # no graphs: the fp32 ones run in bf16


def test_the_calibrate_command(fp32_bundle):
    bundle, calib = fp32_bundle
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(bundle), "--budgets", "native,0.7", "--calib", str(calib), "--fp16"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(bundle)
    assert sorted(manifest.budgets) == ["0.7", "native"] and "fp16" in manifest.precisions
    assert json.loads((bundle / "manifest.json").read_text())["calibration"]["budgets"]["0.7"]
    cli_error(runner.invoke(app, ["calibrate", str(bundle), "--budgets", "native,0.5"]), "--budgets 0.5 needs a calibration set")
    # --budgets left out: the bundle's budgets and their calibration record stay as they are
    record = read_manifest(bundle).calibration
    result = runner.invoke(app, ["calibrate", str(bundle), "--calib", str(calib), "--calib-count", "12", "--fp16"])
    assert result.exit_code == 0, result.output
    assert sorted(read_manifest(bundle).budgets) == ["0.7", "native"] and read_manifest(bundle).calibration == record
    # --budgets given: they replace the bundle's, calibrated on --calib
    result = runner.invoke(app, ["calibrate", str(bundle), "--budgets", "native,0.6", "--calib", str(calib), "--calib-count", "12"])
    assert result.exit_code == 0, result.output
    assert sorted(read_manifest(bundle).budgets) == ["0.6", "native"] and read_manifest(bundle).calibration["count"] == 12
    # a bundle given as "." from inside it, and through a symlink: the real bundle is the one replaced
    link = bundle.parent / "link"
    link.symlink_to(bundle)
    assert runner.invoke(app, ["calibrate", str(link), "--budgets", "native"]).exit_code == 0
    assert link.is_symlink() and sorted(read_manifest(bundle).budgets) == ["native"]
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_int8_ranges_are_observed_at_every_new_budget(fp32_bundle, monkeypatch):
    """INT8 is calibrated through the runtime that runs the budgets just found, as export always did."""
    from adavit_deploy.calibration import int8

    bundle, calib = fp32_bundle
    seen = []
    real = int8.calibrate
    monkeypatch.setattr(int8, "calibrate", lambda rt, images, *a: seen.append(sorted(rt.manifest.budgets)) or real(rt, images, *a))
    calibrate_bundle(bundle, budgets="native,0.6", calibration=calib, int8=True, threads=1)
    assert seen == [["0.6", "native"]]


def test_bad_input_is_refused_before_any_work(fp32_bundle, monkeypatch, tmp_path):
    """bf16 on a CPU without it, a cache directory that cannot be one, bf16 served off OpenVINO."""
    pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")
    from adavit_deploy.errors import BackendError
    from adavit_deploy.runtime.backends.ov import OvBackend
    from adavit_deploy.serving import RepositoryOptions, write_repository

    bundle, calib = fp32_bundle
    monkeypatch.setattr(OvBackend, "has_bf16", lambda self: False)
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(BackendError) as e:
        calibrate_bundle(bundle, budgets="native,0.5", calibration=calib, bf16=True, threads=1)
    one_line(e, "no bfloat16 instructions")
    assert (bundle / "manifest.json").read_bytes() == before
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub", ""):
        with pytest.raises(ConfigError) as e:
            load_bundle(bundle, "ov", cache_dir=bad)
        one_line(e, "cache_dir")
    with pytest.raises(ConfigError) as e:
        write_repository(bundle, tmp_path / "repo", RepositoryOptions(precision="bf16"))
    one_line(e, "bf16 runs on the ov backend")
    assert not (tmp_path / "repo").exists()
