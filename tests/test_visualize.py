"""``inspect``: one readable PNG per image of what each block decided."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.errors import AdaViTDeployError
from adavit_deploy.export import export_bundle
from adavit_deploy.visualize import inspect_bundle

pytest.importorskip("matplotlib", reason="inspect needs matplotlib (the plot extra)")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def setup(make_checkpoint, tmp_path):
    bundle = export_bundle(make_checkpoint(), tmp_path / "b")
    arrays = tmp_path / "x.npy"
    np.save(arrays, np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32))
    return bundle, arrays


def test_one_png_per_image(setup, tmp_path):
    bundle, arrays = setup
    paths = inspect_bundle(bundle, [arrays], tmp_path / "policy.png")
    assert [p.name for p in paths] == ["policy-x_0.png", "policy-x_1.png", "policy-x_2.png"]
    for p in paths:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5_000


def test_single_image_writes_exactly_out(setup, tmp_path):
    bundle, _ = setup
    one = tmp_path / "one.npy"
    np.save(one, np.zeros((1, 3, 32, 32), np.float32))
    result = CliRunner().invoke(app, ["inspect", str(bundle), str(one), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


def test_out_must_be_png(setup, tmp_path):
    bundle, arrays = setup
    with pytest.raises(AdaViTDeployError, match="png"):
        inspect_bundle(bundle, [arrays], tmp_path / "policy.jpg")
