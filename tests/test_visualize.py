"""``inspect``: one readable PNG per image of what each block decided."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.errors import AdaViTDeployError
from adavit_deploy.visualize import inspect_bundle

pytest.importorskip("matplotlib", reason="inspect needs matplotlib (the plot extra)")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def setup(exported, tmp_path):
    """The session's default random bundle (read-only) and 3 images beside the test."""
    bundle = exported().bundle
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


def test_out_and_matplotlib_checked_before_running(tmp_path, monkeypatch):
    """A bundle that does not exist is never reached: the .png and the plot extra are checked first."""
    missing, inputs = tmp_path / "no-bundle", [tmp_path / "x.npy"]
    with pytest.raises(AdaViTDeployError, match=r"\.png"):
        inspect_bundle(missing, inputs, tmp_path / "policy.jpg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(AdaViTDeployError, match=r"pip install 'adavit-deploy\[plot\]'"):
        inspect_bundle(missing, inputs, tmp_path / "policy.png")


def _decisions_of(bundle, images):
    from adavit_deploy.runtime import load_bundle

    rt = load_bundle(bundle)
    return rt.cfg, rt.infer(images)


def test_strip_has_one_square_per_head_and_sub_layer(setup):
    """Heads are separate, countable cells: green where the block ran it, white where it skipped it,
    pale where the block has no selector; kept patches are printed above each block's column."""
    from matplotlib.colors import to_hex
    from matplotlib.patches import Rectangle

    from adavit_deploy.plots import FIXED, RAN, SKIPPED, draw_strip, pyplot
    from adavit_deploy.visualize import block_decisions

    bundle, arrays = setup
    cfg, result = _decisions_of(bundle, np.load(arrays))
    heads, layers, tokens = block_decisions(cfg, result, 1)
    fig, ax = pyplot().subplots()
    draw_strip(ax, cfg, heads, layers, tokens, fontsize=8)
    colors = [to_hex(p.get_facecolor()) for p in ax.patches if isinstance(p, Rectangle)]
    assert len(colors) == cfg.depth * (2 + cfg.num_heads)
    fixed = cfg.depth * (2 + cfg.num_heads) - 2 * len(cfg.layer_select) - cfg.num_heads * len(cfg.head_select)
    ran = int(result.head_select[1].sum() + result.layer_select[1].sum())
    assert colors.count(FIXED) == fixed
    assert colors.count(RAN) == ran
    assert colors.count(SKIPPED) == len(colors) - fixed - ran
    top = ax.child_axes[0] if ax.child_axes else None
    assert top is not None and [t.get_text() for t in top.get_xticklabels()] == [str(int(t.sum())) for t in tokens]
    pyplot().close(fig)


def test_block_decisions_spread_each_sample_over_every_block():
    """Blocks without a selector run everything (ones); ``i`` indexes samples as Python does (-1: the last)."""
    from adavit_deploy.config import AdaViTConfig
    from adavit_deploy.runtime.adaptive import InferResult
    from adavit_deploy.runtime.routing import RoutingStats
    from adavit_deploy.visualize import block_decisions

    cfg = AdaViTConfig(img_size=16, patch_size=8, embed_dim=12, depth=3, num_heads=3, head_select=(2,), token_select=(1, 2))
    rng = np.random.default_rng(0)
    heads, tokens = (rng.random((2, 1, 3)) < 0.5).astype(np.float32), (rng.random((2, 2, 5)) < 0.5).astype(np.float32)
    result = InferResult(np.zeros((2, 1000), np.float32), heads, np.zeros((2, 0, 2), np.float32), tokens, np.zeros(2), RoutingStats())
    for i in (1, -1):
        h, layers, t = block_decisions(cfg, result, i)
        np.testing.assert_array_equal(h, [[1, 1, 1], [1, 1, 1], heads[1, 0]])
        np.testing.assert_array_equal(layers, np.ones((3, 2)))
        np.testing.assert_array_equal(t, [[1, 1, 1, 1], tokens[1, 0, 1:], tokens[1, 1, 1:]])
    with pytest.raises(IndexError):
        block_decisions(cfg, result, 2)


def test_dropped_patches_are_tinted_blue_kept_ones_untouched():
    from adavit_deploy.config import AdaViTConfig
    from adavit_deploy.plots import draw_image, pyplot

    cfg = AdaViTConfig(img_size=16, patch_size=8)
    gray = np.full((3, 16, 16), 0.5, np.float32)  # normalised: the same grey before the tint everywhere
    fig, ax = pyplot().subplots()
    draw_image(ax, cfg, gray, np.array([1.0, 0.0, 1.0, 0.5]))
    shown = ax.images[0].get_array()
    kept, dropped, half = shown[0, 0], shown[0, 8], shown[8, 8]
    expected = np.clip(0.5 * np.array(cfg.preprocess.std) + np.array(cfg.preprocess.mean), 0, 1)
    np.testing.assert_allclose(kept, expected, atol=1e-6)
    assert dropped[2] > expected[2] + 0.2 and dropped[0] < expected[0]  # bluer and less red
    assert dropped[2] > half[2] > kept[2]  # dropped by half the blocks: half the tint
    pyplot().close(fig)


def test_grid_writes_exactly_out_with_every_image(setup, tmp_path):
    bundle, arrays = setup
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["inspect", str(bundle), str(arrays), "--grid", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["grid.png"]
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 20_000
    from PIL import Image

    single = tmp_path / "one.npy"
    np.save(single, np.load(arrays)[:1])
    one = inspect_bundle(bundle, [single], tmp_path / "one.png", grid=True)
    assert one == [tmp_path / "one.png"]
    assert Image.open(out).width > 2.5 * Image.open(one[0]).width  # three images side by side
