"""``export`` and ``infer`` from the command line: outputs, and bad input that writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adavit_deploy.cli import app
from checks import cli_error as _one_line_error


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def bundle(exported, tmp_path_factory):
    """``export`` of the session's random checkpoint, once for this module (read-only)."""
    out = tmp_path_factory.mktemp("cli") / "bundle"
    result = CliRunner().invoke(app, ["export", str(exported().checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "bundle written" in result.output and "decisions 100.00% equal" in result.output
    return out


def test_export_then_infer_writes_reference_shaped_npz(runner, bundle, tmp_path):
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32), dtype=np.float32)
    np.savez(tmp_path / "in.npz", images=images)
    out = tmp_path / "out.npz"
    result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "in.npz"), "-o", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 5 inputs, mean " in result.output
    np.save(tmp_path / "one.npy", images[:1])
    result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "one.npy"), "-o", str(tmp_path / "one.npz")])
    assert f"wrote {tmp_path / 'one.npz'}: 1 input, mean " in result.output
    with np.load(out) as z:
        assert z["logits"].shape == (5, 7)
        assert z["head_select"].shape == (5, 2, 3)  # blocks 1..2 select heads (keep_layers 1)
        assert z["layer_select"].shape == (5, 2, 2)
        assert z["token_select"].shape == (5, 3, 17)  # every block, class token first
        assert z["gmacs"].shape == (5,)
        assert np.all(z["token_select"][:, :, 0] == 1)


def test_infer_prints_top5_for_images(runner, bundle, tmp_path):
    Image.fromarray((np.random.default_rng(1).random((40, 50, 3)) * 255).astype("uint8")).save(tmp_path / "a.png")
    result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    assert "a.png" in result.output and "class" in result.output


def test_infer_bad_inputs_write_nothing(runner, bundle, tmp_path):
    out = tmp_path / "out.npz"
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 16, 16), np.float32))
    np.save(tmp_path / "gray.npy", np.zeros((2, 1, 32, 32), np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    cases = {
        "small.npy": "(B, 3, 32, 32)",
        "gray.npy": "(B, 3, 32, 32)",
        "notes.txt": "not an image",
        "missing.png": "no such file",
    }
    for name, fragment in cases.items():
        result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / name), "-o", str(out)])
        _one_line_error(result, name, fragment)
        assert not out.exists()


def test_infer_refuses_tampered_bundle(runner, bundle, tmp_path):
    bundle = Path(shutil.copytree(bundle, tmp_path / "b"))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    with open(bundle / "attn_1.onnx", "ab") as f:
        f.write(b"x")
    result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz")])
    _one_line_error(result, "attn_1.onnx", "sha256")
    assert not (tmp_path / "o.npz").exists()


def test_infer_on_a_backend_that_is_not_here(runner, bundle, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = runner.invoke(app, ["infer", str(bundle), str(tmp_path / "x.npy"), "--backend", "nope"])
    _one_line_error(result, "unknown backend 'nope'", "ort, ov, ort-cuda, trt")


def test_export_refuses_existing_and_bad_opset(runner, bundle, make_checkpoint):
    _one_line_error(runner.invoke(app, ["export", str(make_checkpoint()), "--out", str(bundle)]), "--overwrite")
    result = runner.invoke(app, ["export", str(make_checkpoint()), "--out", str(bundle.parent / "b2"), "--opset", "13"])
    _one_line_error(result, "opset")
    assert not (bundle.parent / "b2").exists()


def test_help_explains_commands(runner):
    for cmd in ("export", "infer"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0
    assert "pruned" in runner.invoke(app, ["infer", "--help"]).output
