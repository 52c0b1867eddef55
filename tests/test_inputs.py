"""Inputs: timm's eval transform without torch (bitwise), every Pillow mode, and bad input refused in one line.

Bad input goes in through the library and every command that reads inputs
(``infer``, ``inspect``, ``bench --images``, ``evaluate --data``); what comes
out is one line naming the file or samples, exit code 1, and no file written.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adavit_deploy.calibration import load_calibration
from adavit_deploy.cli import app
from adavit_deploy.config import AdaViTConfig, Preprocess, Thresholds
from adavit_deploy.errors import ConfigError, InputError
from adavit_deploy.collection import open_collection
from adavit_deploy.inputs import check_finite, eval_transform, load_inputs, to_rgb
from checks import cli_error as _one_line_error

REPO = Path(__file__).resolve().parents[1]
CFG = AdaViTConfig(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_hidden=96, num_classes=7)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of bad inputs for a 32 px, 3-channel model, and ``ok.npy`` beside them."""
    d = tmp_path_factory.mktemp("bad-inputs")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    np.save(d / "ok.npy", x)
    nan = x.copy()
    nan[1, 0, 3, 3] = np.nan
    np.save(d / "one_nan.npy", nan)
    inf = x.copy()
    inf[2] = np.inf
    np.save(d / "inf_sample.npy", inf)
    np.save(d / "all_nan.npy", np.full_like(x, np.nan))
    np.save(d / "huge.npy", x.astype(np.float64) * 1e39)  # finite in float64, Inf in float32
    (d / "empty.npy").write_bytes(b"")
    (d / "truncated.npy").write_bytes((d / "ok.npy").read_bytes()[:500])
    np.savez(d / "ok.npz", images=x)
    (d / "corrupt.npz").write_bytes((d / "ok.npz").read_bytes()[:700])
    np.savez(d / "strings.npz", images=np.array(["a", "b"]))
    (d / "folder.png").mkdir()
    (d / "bomb.png").write_bytes(_png_header(30000, 30000))
    return d


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` RGB pixels and holds almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


#: bad input -> fragments of its one-line error
BAD = {
    "one_nan.npy": "NaN or Inf values in 1 of 3 inputs (one_nan.npy[1])",
    "inf_sample.npy": "NaN or Inf values in 1 of 3 inputs (inf_sample.npy[2])",
    "all_nan.npy": "NaN or Inf values in 3 of 3 inputs (all_nan.npy[0], all_nan.npy[1], all_nan.npy[2])",
    "huge.npy": "NaN or Inf values in 3 of 3 inputs",
    "empty.npy": "empty.npy: is empty (0 bytes)",
    "truncated.npy": "truncated.npy: not a readable numpy file (ValueError",
    "corrupt.npz": "corrupt.npz: not a readable numpy file (BadZipFile",
    "strings.npz": "strings.npz: images must be float arrays of shape (B, 3, 32, 32); got <U1",
    "folder.png": "folder.png: no image files",  # a folder is read as one
    "bomb.png": "bomb.png: refused: Image size (900000000 pixels) exceeds limit",
}


# -- timm's eval transform, without torch ---------------------------------------------------


@pytest.mark.parametrize(
    "size, img_size, crop_pct, interpolation",
    [
        ((37, 53), 32, 0.9, "bicubic"),  # portrait, the defaults
        ((53, 37), 32, 0.875, "bicubic"),  # landscape
        ((300, 200), 224, 0.9, "bicubic"),  # downscale to 248, crop 224
        ((32, 32), 32, 1.0, "bilinear"),  # no resize at all
        ((35, 35), 32, 0.95, "nearest"),  # odd crop margin: round half to even
        ((64, 33), 48, 0.5, "box"),
        ((1, 90), 32, 0.9, "hamming"),  # a 1-pixel-wide strip
        ((250, 251), 224, 0.875, "lanczos"),
    ],
)
def test_eval_transform_is_timms_bitwise(size, img_size, crop_pct, interpolation):
    timm_data = pytest.importorskip("timm.data", reason="timm (the export extra) is not installed: nothing to compare with")
    pre = Preprocess(crop_pct=crop_pct, interpolation=interpolation, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    cfg = CFG.replace(img_size=img_size, patch_size=8 if img_size != 224 else 16, preprocess=pre)
    w, h = size
    im = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    timm = timm_data.create_transform(
        input_size=(3, img_size, img_size), interpolation=interpolation, crop_pct=crop_pct, mean=pre.mean, std=pre.std
    )
    want = timm(im).numpy()
    got = eval_transform(cfg)(im)
    assert got.dtype == np.float32 and got.shape == (3, img_size, img_size)
    np.testing.assert_array_equal(got, want)


def test_inputs_need_no_torch(tmp_path):
    """Images and arrays load with torch, torchvision and timm unimportable (a lean inference install)."""
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 32, 32), np.float32))
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'timm'): sys.modules[m] = None\n"
        "from adavit_deploy.config import AdaViTConfig\n"
        "from adavit_deploy.inputs import load_inputs\n"
        "cfg = AdaViTConfig(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_hidden=96)\n"
        f"x, labels = load_inputs([{str(tmp_path / 'a.png')!r}, {str(tmp_path / 'b.npy')!r}], cfg)\n"
        "print(x.shape, labels)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 3, 32, 32) ['a.png', 'b.npy[0]', 'b.npy[1]']"


def test_preprocess_that_timm_cannot_run_is_refused():
    with pytest.raises(ConfigError, match="crop_pct 1.2 is not in"):
        Preprocess(crop_pct=1.2)
    with pytest.raises(ConfigError, match="crop_pct 0 is not in"):
        Preprocess(crop_pct=0)
    with pytest.raises(ConfigError, match="interpolation 'random': choose one of nearest, bilinear, bicubic"):
        Preprocess(interpolation="random")


# -- Pillow modes -------------------------------------------------------------------------


def _image(mode: str, value) -> Image.Image:
    return Image.new(mode, (3, 2), value)


@pytest.mark.parametrize(
    "mode, value, rgb",
    [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (77, 77, 77)),  # alpha dropped: the grey under a transparent pixel
        ("La", (100, 128), (199, 199, 199)),  # premultiplied: undone, 100 * 255 / 128
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
        ("RGBa", (100, 50, 20, 128), (199, 99, 39)),
        ("RGBX", (10, 20, 30, 0), (10, 20, 30)),
        ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # cyan
        ("YCbCr", (255, 128, 128), (255, 255, 255)),
        ("HSV", (0, 255, 255), (255, 0, 0)),  # red
        ("LAB", (255, 128, 128), (254, 255, 254)),  # white, as Pillow rounds it
        ("I;16", 65535, (255, 255, 255)),  # the full 16-bit range onto 0..255
        ("I;16", 30000, (117, 117, 117)),  # round(30000 / 257)
        ("I;16B", 257 * 40, (40, 40, 40)),
        ("I;16L", 128, (0, 0, 0)),  # 128 / 257 rounds down
        ("I;16N", 129, (1, 1, 1)),
        ("I", 65535, (255, 255, 255)),
        ("F", 1.0, (255, 255, 255)),
        ("F", 0.5, (128, 128, 128)),  # round(127.5) to even
        ("F", 0.2, (51, 51, 51)),
    ],
)
def test_every_pillow_mode_becomes_8bit_rgb(mode, value, rgb):
    out = to_rgb(_image(mode, value))
    assert out.mode == "RGB" and out.size == (3, 2)
    assert (np.asarray(out) == rgb).all()


def test_palette_modes_use_their_palette():
    for mode in ("P", "PA"):
        im = Image.new(mode, (2, 2))
        im.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
        im.putpixel((0, 0), 1 if mode == "P" else (1, 255))
        assert to_rgb(im).getpixel((0, 0)) == (200, 100, 50) and to_rgb(im).getpixel((1, 1)) == (0, 0, 0)


@pytest.mark.parametrize(
    "im, message",
    [
        (_image("F", 2.0), "mode F (32-bit float) image with values in [2, 2]: only floats in [0, 1]"),
        (_image("F", -0.5), "values in [-0.5, -0.5]"),
        (_image("F", float("nan")), "mode F (32-bit float) image with values in [nan, nan]"),
        (_image("I", -1), "mode I image with values -1..-1: only 0..65535 (16-bit) is read"),
        (_image("I", 70000), "mode I image with values 70000..70000"),
        (SimpleNamespace(mode="BGR;16"), "Pillow image mode 'BGR;16' is not supported"),
    ],
)
def test_modes_without_a_known_scale_are_refused(im, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        to_rgb(im)


def test_16bit_png_and_float_tiff_read_like_their_8bit_twins(tmp_path):
    """The issue's cases, as files: a 16-bit PNG no longer saturates, a 0..1 float TIFF is no longer black."""
    gray8 = np.random.default_rng(4).integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(gray8.astype(np.float32) / 255).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16" and Image.open(tmp_path / "float.tif").mode == "F"
    want, _ = load_inputs([tmp_path / "gray8.png"], CFG)
    for name in ("gray16.png", "float.tif"):
        got, labels = load_inputs([tmp_path / name], CFG)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert labels == [name]


# -- bad inputs, one line each ----------------------------------------------------------------


def test_check_finite_names_samples_by_index_or_label():
    x = np.zeros((8, 3, 4, 4), np.float32)
    check_finite(x)
    x[[1, 2, 3, 4, 5, 7], 0, 0, 0] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.nan]
    with pytest.raises(InputError, match=r"^NaN or Inf values in 6 of 8 inputs \(#1, #2, #3, #4, #5 and 1 more\)"):
        check_finite(x)
    with pytest.raises(InputError, match=r"in 1 of 2 inputs \(b\.png\)"):
        check_finite(x[:2], ["a.png", "b.png"])


@pytest.mark.parametrize("name", BAD)
def test_load_inputs_refuses_in_one_line(bad_inputs, name):
    with pytest.raises(InputError) as e:
        load_inputs([bad_inputs / "ok.npy", bad_inputs / name], CFG)
    expected = "folder.png: is a directory" if name == "folder.png" else BAD[name]  # only infer reads folders
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", BAD)
def test_infer_refuses_in_one_line_and_writes_nothing(half_gmacs_bundle, bad_inputs, tmp_path, name):
    out = tmp_path / "out.npz"
    result = CliRunner().invoke(app, ["infer", str(half_gmacs_bundle), str(bad_inputs / name), "-o", str(out)])
    _one_line_error(result, BAD[name])
    assert not any(tmp_path.iterdir())


def test_inspect_refuses_a_decompression_bomb(half_gmacs_bundle, bad_inputs, tmp_path):
    out = tmp_path / "policy.png"
    result = CliRunner().invoke(app, ["inspect", str(half_gmacs_bundle), str(bad_inputs / "bomb.png"), "-o", str(out)])
    _one_line_error(result, BAD["bomb.png"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["one_nan.npy", "bomb.png", "bomb-folder"])
def test_bench_images_refuses_in_one_line_and_writes_nothing(half_gmacs_bundle, bad_inputs, tmp_path, name):
    if name == "bomb-folder":  # a folder: every image file of it is read
        (tmp_path / "imgs").mkdir()
        Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "fine.png")
        (tmp_path / "imgs" / "bomb.png").write_bytes((bad_inputs / "bomb.png").read_bytes())
        images, fragment = tmp_path / "imgs", BAD["bomb.png"]
    else:
        images, fragment = bad_inputs / name, BAD[name]
    out = tmp_path / "out"
    out.mkdir()
    args = ["bench", str(half_gmacs_bundle), "--images", str(images), "--engines", "adaptive", "--no-memory"]
    args += ["--iterations", "1", "--json", str(out / "r.json"), "--plot", str(out / "r.png")]
    result = CliRunner().invoke(app, args)
    _one_line_error(result, fragment)
    assert not any(out.iterdir())


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"images": "one_nan", "labels": np.arange(3)}, "NaN or Inf values in 1 of 3 inputs (data.npz[1])"),
        ({"images": "ok", "labels": np.zeros((3, 7))}, "labels must be one class index per image (1-D); got shape (3, 7)"),
        ({"images": "ok", "labels": np.arange(2)}, "3 images but 2 labels: give one label per image"),
        ({"images": "ok", "labels": np.array(["a", "b", "c"])}, "labels must be integer class indices; got <U1"),
        ({"images": "ok"}, "data.npz: evaluate needs labels: give an ImageFolder tree (one subfolder per class)"),
        ({"images": np.array(["a", "b"]), "labels": np.arange(2)}, "must be float arrays of shape (B, C, H, W); got <U1"),
    ],
    ids=["nan", "2d-labels", "count", "string-labels", "no-labels", "string-images"],
)
def test_evaluate_data_refused_in_one_line(half_gmacs_bundle, bad_inputs, tmp_path, arrays, fragment):
    arrays = {k: np.load(bad_inputs / f"{v}.npy") if isinstance(v, str) else v for k, v in arrays.items()}
    np.savez(tmp_path / "data.npz", **arrays)
    out = tmp_path / "out"
    out.mkdir()
    args = ["evaluate", str(half_gmacs_bundle), "--data", str(tmp_path / "data.npz"), "--json", str(out / "e.json")]
    _one_line_error(CliRunner().invoke(app, args), fragment)
    assert not any(out.iterdir())


def test_evaluate_refuses_unreadable_data(half_gmacs_bundle, bad_inputs):
    for name, fragment in [
        ("empty.npy", "empty.npy: is empty (0 bytes)"),
        ("corrupt.npz", "corrupt.npz: not a readable numpy file (BadZipFile"),
    ]:
        result = CliRunner().invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(bad_inputs / name)])
        _one_line_error(result, fragment)


# -- thresholds and budgets ------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5, "0.5", None, True])
def test_thresholds_outside_0_1_are_refused(value):
    with pytest.raises(ConfigError, match=rf"^token threshold {value!r} is not a number in \[0, 1\]".replace("(", r"\(")):
        Thresholds(token=value)
    assert Thresholds(0, 1, 0.25) == Thresholds(head=0, layer=1, token=0.25)  # the ends are fine


def test_threshold_options_are_refused_in_one_line(make_checkpoint, tmp_path):
    ckpt = make_checkpoint()
    runner = CliRunner()
    result = runner.invoke(app, ["info", str(ckpt), "--head-threshold", "nan"])
    _one_line_error(result, "head threshold nan is not a number in [0, 1]")
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "b"), "--layer-threshold", "1.5"])
    _one_line_error(result, "layer threshold 1.5 is not a number in [0, 1]")
    assert not (tmp_path / "b").exists()


def test_unknown_budget_lists_the_bundles_budgets(half_gmacs_bundle, bad_inputs, tmp_path):
    args = ["infer", str(half_gmacs_bundle), str(bad_inputs / "ok.npy"), "-o", str(tmp_path / "o.npz")]
    for budget in ("abc", "nan", "2"):
        result = CliRunner().invoke(app, [*args, "--budget", budget])
        _one_line_error(result, f"budget '{budget}' is neither 'native' nor a fraction", "this bundle's budgets are native")
    assert not any(tmp_path.iterdir())


# -- which files of a folder are images: one answer for bench and calibration ----------------------


def test_one_image_file_test_for_bench_and_calibration(tmp_path):
    for name in ("b.png", "A.JPG", "c.tif", ".hidden.png", "notes.txt", "report.pdf"):
        Image.new("RGB", (40, 40)).save(tmp_path / name, format="PNG")
    (tmp_path / "dir.png").mkdir()
    assert open_collection(tmp_path).names == ("A.JPG", "b.png", "c.tif")
    record = load_calibration(tmp_path, CFG).record
    assert [f["file"] for f in record["files"]] == ["A.JPG", "b.png", "c.tif"]
    with pytest.raises(InputError, match=r"dir\.png: no image files \(\.bmp, .*\) in this folder or its subfolders"):
        open_collection(tmp_path / "dir.png")
