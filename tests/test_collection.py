"""Image collections (collection.py): ImageFolder, flat folders with or without a labels CSV, streaming, refusals."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from checks import cli_error, one_line
from PIL import Image
from random_models import SMALL_ARCH
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.collection import Collection, infer_collection, open_collection, open_files
from adavit_deploy.config import AdaViTConfig
from adavit_deploy.errors import InputError
from adavit_deploy.inputs import eval_transform, read_image
from adavit_deploy.runtime import load_bundle

CFG = AdaViTConfig.from_flags(**SMALL_ARCH)  # 32 px, 7 classes


def _image(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (40, 36)) -> Path:
    """A seeded picture in ``mode``, saved in the format its suffix names."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    im = rgb.convert(mode)
    im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)
    return path


def _image_folder(root: Path, per_class: dict[str, int]) -> Path:
    seed = 0
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(root / cls / f"{i:02d}.png", seed := seed + 1)
    return root


def test_imagefolder_labels_follow_sorted_class_folders(tmp_path):
    root = _image_folder(tmp_path / "val", {"n02": 2, "n01": 1, "n03": 2})
    _image(root / "n01" / "deeper" / "x.jpg", 9)  # found recursively
    _image(root / "n03" / ".ipynb_checkpoints" / "y.png", 9)  # hidden: left out
    _image(root / "n02" / "ILSVRC2012_val_1.JPEG", 9)  # ImageNet's upper-case extension
    c = open_collection(root)
    assert c.kind == "imagefolder" and c.classes == ("n01", "n02", "n03")
    assert c.names == ("n01/00.png", "n01/deeper/x.jpg", "n02/00.png", "n02/01.png", "n02/ILSVRC2012_val_1.JPEG",
                       "n03/00.png", "n03/01.png")  # fmt: skip
    assert c.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert c.describe() == {"path": str(root), "kind": "imagefolder", "images": 7, "classes": 3}


def test_an_empty_class_folder_keeps_its_index_and_warns(tmp_path):
    root = _image_folder(tmp_path / "val", {"a": 1, "b": 0, "c": 1})
    with pytest.warns(UserWarning, match=r"1 class folder\(s\) hold no images \(b\); their class indices are kept"):
        c = open_collection(root)
    assert c.labels.tolist() == [0, 2] and c.num_classes == 3


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d.mkdir(), "no image files (.bmp, "),
        (lambda d: (_image_folder(d, {"a": 1}), _image(d / "loose.png", 1)), "holds both image files (loose.png, ...) and class folders"),
        (lambda d: None, "no such file or folder"),
    ],
    ids=["empty", "mixed-layout", "missing"],
)
def test_folders_refused_in_one_line_naming_the_path(tmp_path, make, fragment):
    folder = tmp_path / "imgs"
    make(folder)
    with pytest.raises(InputError) as e:
        open_collection(folder)
    one_line(e, str(folder), fragment)


def test_more_class_folders_than_the_model_has_classes(tmp_path):
    root = _image_folder(tmp_path / "val", {f"c{k}": 1 for k in range(8)})
    with pytest.raises(InputError) as e:
        open_collection(root).require_labels(CFG.num_classes)
    one_line(e, f"{root}: 8 class folders but the model has 7 classes")


def test_flat_folder_has_no_labels_and_evaluate_says_how_to_give_them(tmp_path):
    for i in range(3):
        _image(tmp_path / "flat" / f"{i}.png", i)
    c = open_collection(tmp_path / "flat")
    assert c.kind == "folder" and c.labels is None and len(c) == 3
    with pytest.raises(InputError) as e:
        c.require_labels(7)
    one_line(e, "evaluate needs labels", "ImageFolder tree", "labels FILE (CSV file,label)")


def test_labels_csv_lists_the_collection(tmp_path):
    flat = tmp_path / "flat"
    for name in ("a.png", "b.jpg", "c.png", "extra.png"):
        _image(flat / name, len(name))
    (tmp_path / "labels.csv").write_text("file,label\nb.jpg,3\na.png,0\nc.png,6\n")
    with pytest.warns(UserWarning, match=r"1 image\(s\) not in labels.csv left out \(extra.png, ...\)"):
        c = open_collection(flat, tmp_path / "labels.csv")
    assert c.names == ("b.jpg", "a.png", "c.png") and c.labels.tolist() == [3, 0, 6]
    c.check_classes(7)
    with pytest.raises(InputError) as e:
        c.check_classes(5)
    one_line(e, "label 6 of c.png is outside the model's 5 classes [0, 5)")


def test_labels_csv_from_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    _image(tmp_path / "flat" / "a.png", 0)
    _image(tmp_path / "flat" / "b.png", 1)
    (tmp_path / "l.csv").write_text("a.png,3\nb.png,5\n", encoding="utf-8-sig")
    c = open_collection(tmp_path / "flat", tmp_path / "l.csv")
    assert c.names == ("a.png", "b.png") and c.labels.tolist() == [3, 5] and c.num_classes == 2


def test_labels_csv_over_a_tree_names_what_it_leaves_out(tmp_path):
    root = _image_folder(tmp_path / "val", {"a": 2, "b": 1})
    (tmp_path / "l.csv").write_text("b/00.png,4\n")
    with pytest.warns(UserWarning, match=r"2 image\(s\) not in l.csv left out \(a/00.png, ...\)"):
        c = open_collection(root, tmp_path / "l.csv")
    assert c.names == ("b/00.png",) and c.labels.tolist() == [4]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("file,label\na.png,1\na.png,x\n", "row 3 'a.png,x' is not file,label"),
        ("a.png,1,2\n", "is not file,label"),
        ("gone.png,1\n", "row 1: "),
        ("file,label\n", "no file,label rows"),
        ("file,label\na.png,1\na.png,2\n", "row 3: a.png is already listed at row 2"),
        ("a.png,1\nmissing.png,1\n", "missing.png: no such file"),
        ("notes.txt,1\n", "notes.txt is not an image file"),
        ("/etc/a.png,1\n", "/etc/a.png: give a path relative to"),
        ("a.png,\u00b2\n", "is not file,label"),  # a superscript 2: isdigit() but not int()
        ("a.png,cat\n", "row 1 'a.png,cat' is not file,label"),  # a data row, not a header
    ],
)
def test_bad_labels_files_refused(tmp_path, text, fragment):
    _image(tmp_path / "flat" / "a.png", 0)
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(InputError) as e:
        open_collection(tmp_path / "flat", tmp_path / "l.csv")
    one_line(e, "l.csv", fragment)


def test_batches_decode_mixed_formats_and_modes_like_the_single_file_reader(tmp_path):
    files = [
        _image(tmp_path / "d" / "a.png", 1),
        _image(tmp_path / "d" / "b.jpg", 2, size=(64, 30)),
        _image(tmp_path / "d" / "c.png", 3, mode="L"),
        _image(tmp_path / "d" / "d.png", 4, mode="RGBA"),
        _image(tmp_path / "d" / "e.png", 5, mode="P"),
    ]
    c = open_collection(tmp_path / "d")
    batches = list(c.batches(CFG, batch_size=2, workers=3))
    assert [b.names for b in batches] == [["a.png", "b.jpg"], ["c.png", "d.png"], ["e.png"]]
    got = np.concatenate([b.images for b in batches])
    transform = eval_transform(CFG)
    want = np.stack([transform(read_image(f)) for f in files])
    assert got.dtype == np.float32 and got.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(got, want)


def test_a_corrupt_file_stops_the_run_or_is_skipped_by_name(tmp_path):
    d = tmp_path / "d"
    for i in range(5):
        _image(d / f"{i}.png", i)
    (d / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    c = open_collection(d)
    with pytest.raises(InputError) as e:
        list(c.batches(CFG, batch_size=2, workers=2))
    one_line(e, str(d / "2.png"), "skip_bad leaves such files out")  # --skip-bad on the command line
    with pytest.warns(UserWarning, match=r"skipped: .*2\.png"):
        batches = list(c.batches(CFG, batch_size=2, workers=2, skip_bad=True))
    assert [b.names for b in batches] == [["0.png", "1.png"], ["3.png"], ["4.png"]]
    assert batches[1].skipped == ["2.png"]
    with pytest.raises(InputError) as e:  # calibration and bench read all: they offer no skip_bad to suggest
        c.read_all(CFG)
    assert str(e.value) == f"{d / '2.png'}: not an image file"


def test_stopping_early_leaves_no_decode_thread_running(tmp_path):
    for i in range(24):
        _image(tmp_path / "d" / f"{i:02d}.png", i)
    stream = open_collection(tmp_path / "d").batches(CFG, batch_size=2, workers=2)
    next(stream)
    stream.close()  # what an error or Ctrl-C in the consumer does
    assert not [t for t in threading.enumerate() if t.name.startswith("adavit-decode")]


@pytest.mark.parametrize("command", ["infer", "evaluate"])
def test_ctrl_c_mid_run_stops_cleanly_and_writes_nothing(half_gmacs_bundle, tmp_path, monkeypatch, command):
    from adavit_deploy.runtime.adaptive import AdaptiveRuntime

    root = _image_folder(tmp_path / "val", {f"c{k}": 3 for k in range(7)})
    real, calls = AdaptiveRuntime.infer, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second batch: the first one's results are held, nothing is written yet
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AdaptiveRuntime, "infer", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(half_gmacs_bundle), str(root), "--batch-size", "4"]
    args += ["--output", str(out / "r.npz")] if command == "infer" else ["--data", args.pop(1), "--json", str(out / "r.json")]
    result = CliRunner().invoke(app, [command, *args])
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == "interrupted: nothing was written"
    assert len(calls) == 2 and not any(out.iterdir())
    assert not [t for t in threading.enumerate() if t.name.startswith("adavit-decode")]


def test_subset_is_seeded_class_balanced_and_in_order(tmp_path):
    labels = np.repeat(np.arange(4), [10, 10, 3, 10])
    c = Collection("x", "array", tuple(range(33)), tuple(map(str, range(33))), labels, array=np.zeros((33, 1)))
    s = c.subset(12, seed=0)
    assert np.bincount(s.labels, minlength=4).tolist() == [3, 3, 3, 3]
    assert list(s.items) == sorted(s.items) and s.items == c.subset(12, seed=0).items
    assert s.items != c.subset(12, seed=1).items
    assert np.bincount(c.subset(30).labels).tolist() == [9, 9, 3, 9]  # the small class given in full
    assert c.subset(None) is c
    with pytest.warns(UserWarning, match=r"^limit 99, but x holds 33 images: all of them are used$"):
        assert c.subset(99) is c


def test_a_limit_below_the_class_count_takes_seeded_classes_not_the_first(tmp_path):
    labels = np.repeat(np.arange(100), 5)
    c = Collection("x", "array", tuple(range(500)), tuple(map(str, range(500))), labels, array=np.zeros((500, 1)))
    picked = [sorted(set(c.subset(10, seed=seed).labels.tolist())) for seed in (0, 1)]
    assert all(len(p) == 10 for p in picked)  # ten images: ten classes, one each
    assert picked[0] != list(range(10)) and picked[0] != picked[1]
    assert np.bincount(c.subset(150, seed=0).labels, minlength=100).tolist().count(2) == 50  # 1 or 2 per class


def test_open_files_mixes_files_folders_and_arrays_named_as_given(tmp_path):
    a = _image(tmp_path / "a.png", 0)
    _image(tmp_path / "dir" / "b.png", 1)
    _image(tmp_path / "dir" / "cat" / "c.png", 2)  # top-level images and a subfolder: fine without labels
    np.save(tmp_path / "x.npy", np.ones((2, 3, 32, 32), np.float32))
    c = open_files([a, tmp_path / "dir", tmp_path / "x.npy", tmp_path / "dir"])
    t = tmp_path.as_posix()
    assert c.names == (f"{t}/a.png", f"{t}/dir/b.png", f"{t}/dir/cat/c.png", f"{t}/x.npy[0]", f"{t}/x.npy[1]",
                       f"{t}/dir/b.png", f"{t}/dir/cat/c.png")  # fmt: skip
    (batch,) = list(c.batches(CFG, 8))
    assert batch.images.shape == (7, 3, 32, 32) and (batch.images[3:5] == 1).all()


def test_a_symlink_cycle_is_walked_once(tmp_path):
    _image(tmp_path / "d" / "c" / "0.png", 0)
    (tmp_path / "d" / "c" / "up").symlink_to(tmp_path / "d")
    assert open_collection(tmp_path / "d").names == ("c/0.png",)
    assert open_files([tmp_path / "d"]).names == (f"{tmp_path.as_posix()}/d/c/0.png",)


def test_a_partial_tree_of_imagenet_synsets_gets_their_indices(tmp_path):
    pytest.importorskip("timm")  # ImageNet's synset list comes from timm's data files
    root = _image_folder(tmp_path / "val", {"n01443537": 1, "n01440764": 2, "n15075141": 1})
    c = open_collection(root)
    assert c.labels.tolist() == [0, 0, 1, 2]  # sorted positions ...
    mapped = c.for_model(1000)
    assert mapped.labels.tolist() == [0, 0, 1, 999]  # ... are ImageNet's indices for a 1000-class model
    assert mapped.num_classes == 3 and mapped.describe()["classes"] == 3  # the folders read, not 1000


def test_a_partial_tree_of_other_classes_warns_how_it_is_labelled(tmp_path, half_gmacs_bundle):
    root = _image_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    with pytest.warns(UserWarning, match=r"2 class folders for a model of 7 classes: the sorted folders are "
                                         r"labelled 0\.\.1 \(torchvision's rule\); .* give labels FILE"):  # fmt: skip
        assert open_collection(root).for_model(7).labels.tolist() == [0, 1]
    result = CliRunner().invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "warning: --limit 5, but" in result.output and "give --labels FILE" in result.output


def test_evaluate_on_a_folder_equals_infer_with_the_folder_labels(half_gmacs_bundle, tmp_path):
    """Issue 25: top-1 (and top-5) of evaluate --data DIR is what infer gives on the same files."""
    root = _image_folder(tmp_path / "val", {f"class{k}": 3 for k in range(7)})
    _image(root / "class3" / "gray.jpg", 99, mode="L")
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--json", str(tmp_path / "e.json"),
                              "--batch-size", "4", "--workers", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    table = json.loads((tmp_path / "e.json").read_text())
    assert table["source"] == {"path": str(root), "kind": "imagefolder", "images": 22, "classes": 7, "skipped": [],
                               "limit": None, "seed": None}  # fmt: skip
    res = runner.invoke(app, ["infer", str(half_gmacs_bundle), str(root), "--output", str(tmp_path / "o.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "o.npz") as z:
        names, logits, gmacs = z["names"].tolist(), z["logits"], z["gmacs"]
    assert names == [f"{root.as_posix()}/{n}" for n in open_collection(root).names]  # the paths as given
    labels = np.array([int(Path(n).parent.name[len("class"):]) for n in names])
    (native,) = [r for r in table["rows"] if r["budget"] == "native" and r["precision"] == "fp32"]
    assert native["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert native["top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))
    assert native["gmacs_mean"] == pytest.approx(gmacs.mean(), rel=1e-6)
    with load_bundle(half_gmacs_bundle) as rt:
        result, streamed_names = infer_collection(rt, open_collection(root), batch_size=5, workers=1)
    assert streamed_names == list(open_collection(root).names)
    np.testing.assert_allclose(result.logits, logits, atol=1e-5)


def test_evaluate_limit_and_skip_bad_through_the_cli(half_gmacs_bundle, tmp_path):
    root = _image_folder(tmp_path / "val", {f"c{k}": 4 for k in range(7)})
    (root / "c1" / "01.png").write_bytes(b"broken")
    runner = CliRunner()
    out = tmp_path / "e.json"
    cli_error(runner.invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--json", str(out)]),
              str(root / "c1" / "01.png"), "--skip-bad")  # fmt: skip
    assert not out.exists()  # stopped: nothing half-written
    res = runner.invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--json", str(out), "--skip-bad"])
    assert res.exit_code == 0, res.output
    source = json.loads(out.read_text())["source"]
    assert source["images"] == 27 and source["skipped"] == ["c1/01.png"] and source["limit"] is None
    res = runner.invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--json", str(out), "--limit", "14"])
    assert res.exit_code == 0, res.output
    source = json.loads(out.read_text())["source"]
    assert (source["images"], source["limit"], source["seed"]) == (14, 14, 0)


def test_evaluate_refuses_a_folder_where_every_image_was_skipped(half_gmacs_bundle, tmp_path):
    root = tmp_path / "val"
    for k in range(2):
        (root / f"c{k}").mkdir(parents=True)
        (root / f"c{k}" / "0.png").write_bytes(b"broken")
    out = tmp_path / "e.json"
    args = ["evaluate", str(half_gmacs_bundle), "--data", str(root), "--json", str(out), "--skip-bad"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    *warned, error = result.output.strip().splitlines()
    assert sum(w.startswith("warning: skipped: ") for w in warned) == 2, result.output
    assert error == f"error: {root}: every image was unreadable (2 skipped)"
    assert not out.exists()


def test_infer_refuses_a_corrupt_file_and_writes_nothing(half_gmacs_bundle, tmp_path):
    d = tmp_path / "d"
    for i in range(3):
        _image(d / f"{i}.png", i)
    (d / "1.png").write_bytes(b"")
    out = tmp_path / "out.npz"
    cli_error(CliRunner().invoke(app, ["infer", str(half_gmacs_bundle), str(d), "--output", str(out)]), "1.png: is empty (0 bytes)")
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))
