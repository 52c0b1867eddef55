"""Bad output paths, options and labels on the command line: one line, exit 1, nothing on disk.

Also what the CLI prints: literal brackets in help texts and in user paths
survive rich markup, and flags show no ``<bool>`` metavar.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from adavit_deploy.atomic import remove_stale, staged_directory
from adavit_deploy.bundle import is_bundle
from adavit_deploy.cli import app
from checks import cli_error as _one_line_error

WIDE = {"COLUMNS": "1000"}  # no wrapping: literal text can be searched for


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def arrays(tmp_path) -> Path:
    path = tmp_path / "in.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    return path


# -- output paths: checked before anything runs -------------------------------------------------


@pytest.mark.parametrize(
    "make_output, fragment",
    [
        (lambda tmp: (tmp / "a_dir").mkdir() or tmp / "a_dir", "is a directory"),
        (lambda tmp: tmp / "missing" / "out.npz", "does not exist"),
    ],
)
def test_infer_output_that_cannot_be_written(runner, half_gmacs_bundle, arrays, tmp_path, make_output, fragment):
    output = make_output(tmp_path)
    before = _files(tmp_path)
    result = runner.invoke(app, ["infer", str(half_gmacs_bundle), str(arrays), "--output", str(output)])
    _one_line_error(result, "--output", fragment)
    assert _files(tmp_path) == before  # no .partial left, no folder made


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_bench_and_evaluate_check_outputs_before_running(runner, half_gmacs_bundle, tmp_path, monkeypatch, option):
    import adavit_deploy.bench as bench
    import adavit_deploy.evaluate as evaluate

    def never(*args, **kwargs):
        raise AssertionError("must not run with an unwritable output")

    monkeypatch.setattr(bench, "bench", never)
    monkeypatch.setattr(evaluate, "evaluate", never)
    before = _files(tmp_path)
    for command in ("bench", "evaluate"):
        result = runner.invoke(app, [command, str(half_gmacs_bundle), option, str(tmp_path / "nowhere" / "out.x")])
        _one_line_error(result, option, "does not exist")
        result = runner.invoke(app, [command, str(half_gmacs_bundle), option, str(tmp_path)])
        _one_line_error(result, option, "is a directory")
    assert _files(tmp_path) == before


def test_export_opset_outside_the_supported_range(runner, make_checkpoint, tmp_path):
    checkpoint = make_checkpoint()
    before = _files(tmp_path)
    for opset in ("99", "16"):
        result = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "b"), "--opset", opset])
        _one_line_error(result, f"--opset {opset} is not supported: choose 17")
    assert _files(tmp_path) == before


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (np.zeros((4, 2), np.int64), "1-D"),
        (np.zeros(3, np.int64), "4 images but 3 labels"),
        (np.array([0.0, 1.5, 2.0, 3.0]), "integer class indices; got float64"),
        (np.array([0, 1, 7, -1]), "label 7 of data.npz[2] is outside the model's 7 classes [0, 7) (2 such labels)"),
    ],
)
def test_evaluate_refuses_bad_labels(runner, half_gmacs_bundle, tmp_path, labels, fragment):
    data = tmp_path / "data.npz"
    np.savez(data, images=np.zeros((4, 3, 32, 32), np.float32), labels=labels)
    before = _files(tmp_path)
    result = runner.invoke(app, ["evaluate", str(half_gmacs_bundle), "--data", str(data), "--json", str(tmp_path / "e.json")])
    _one_line_error(result, fragment)
    assert _files(tmp_path) == before


def test_malformed_manifest_through_the_cli(runner, half_gmacs_bundle, arrays, tmp_path):
    import shutil

    bundle = Path(shutil.copytree(half_gmacs_bundle, tmp_path / "b"))
    for text in (b"\xff\xfe", b"[]", b'{"schema": 1}'):
        (bundle / "manifest.json").write_bytes(text)
        _one_line_error(runner.invoke(app, ["infer", str(bundle), str(arrays)]), "manifest")


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_same_file_name_in_two_folders_writes_two_figures(runner, half_gmacs_bundle, tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    images = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        images.append(tmp_path / folder / "x.png")
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(images[-1])
    out = tmp_path / "policy.png"
    result = runner.invoke(app, ["inspect", str(half_gmacs_bundle), *map(str, images), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("policy*.png"))
    assert written == ["policy-x-1.png", "policy-x-2.png"]
    assert (tmp_path / written[0]).read_bytes() != (tmp_path / written[1]).read_bytes()


def test_inspect_checks_out_before_running(runner, half_gmacs_bundle, arrays, tmp_path, monkeypatch):
    import adavit_deploy.runtime as runtime

    def never(*args, **kwargs):
        raise AssertionError("must not load the bundle for a bad --out")

    monkeypatch.setattr(runtime, "load_bundle", never)
    before = _files(tmp_path)
    _one_line_error(runner.invoke(app, ["inspect", str(half_gmacs_bundle), str(arrays), "--out", str(tmp_path / "p.jpg")]), ".png")
    _one_line_error(
        runner.invoke(app, ["inspect", str(half_gmacs_bundle), str(arrays), "--out", str(tmp_path / "no" / "p.png")]),
        "does not exist",
    )
    assert _files(tmp_path) == before


# -- rich markup: brackets survive ---------------------------------------------------------------


def _help_texts(command) -> list[str]:
    texts = [command.help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    return [t.replace("\\[", "[") for t in texts]  # the command class escaped them for rich


@pytest.mark.parametrize("name", [None, *(c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands)])
def test_help_shows_literal_brackets_and_no_bool_metavar(runner, name):
    group = typer.main.get_command(app)
    command = group if name is None else group.commands[name]
    literals = {m for text in _help_texts(command) for m in re.findall(r"\S*\[[^\]\n]*\]\S*", text)}
    result = runner.invoke(app, ([name] if name else []) + ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    for literal in literals:
        assert literal in shown, f"{literal!r} missing from {name} --help"
    assert "<bool>" not in result.output
    if name == "build-trt":
        assert "'adavit-deploy[gpu]'" in shown and "[default: BUNDLE/trt]" in shown


def test_paths_with_brackets_are_printed_intact(runner, make_checkpoint, arrays, tmp_path):
    out = tmp_path / "my ckpt[v2]"
    result = runner.invoke(app, ["export", str(make_checkpoint()), "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"bundle written: {out}" in result.output
    npz = tmp_path / "out[bold].npz"
    result = runner.invoke(app, ["infer", str(out), str(arrays), "--output", str(npz)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"wrote {npz}:" in result.output
    named = tmp_path / "img[v2].npy"
    named.write_bytes(arrays.read_bytes())
    result = runner.invoke(app, ["infer", str(out), str(named)], env=WIDE)
    assert result.exit_code == 0 and "img[v2].npy[0]" in result.output, result.output


# -- staging directories left by a killed export ------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_dirs_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".bundle.partial-{dead}-k2j4"
    old = tmp_path / f".other.old-{dead}"
    live = tmp_path / f".bundle.partial-{alive}-x9"
    unrelated = tmp_path / ".bundle.partial-notapid"
    for d in (stale, old, live, unrelated):
        d.mkdir()
        (d / "stem.onnx").write_bytes(b"x")
    with staged_directory(tmp_path / "bundle", ours=is_bundle, what="a bundle") as stage:
        assert stage.name.startswith(f".bundle.partial-{alive}-")
        (stage / "manifest.json").write_text("{}")
    assert not stale.exists() and not old.exists()
    assert live.exists() and unrelated.exists()
    assert (tmp_path / "bundle" / "manifest.json").exists()
    assert remove_stale(tmp_path) == []


def test_overwrite_replaces_only_what_we_wrote(runner, make_checkpoint, tmp_path):
    """``--overwrite`` replaces a bundle or repository this tool wrote, never a user's folder."""
    checkpoint = make_checkpoint()
    victim = tmp_path / "notes"
    victim.mkdir()
    (victim / "notes.txt").write_text("important")
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(victim), "--overwrite"])
    _one_line_error(result, f"{victim} exists and is not a bundle")
    bundle = tmp_path / "bundle"
    assert runner.invoke(app, ["export", str(checkpoint), "--out", str(bundle)]).exit_code == 0
    assert oct(bundle.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # the user's umask, not mkdtemp's 0700
    result = runner.invoke(app, ["triton-repo", str(bundle), "--out", str(victim), "--overwrite"])
    _one_line_error(result, f"{victim} exists and is not a repository written by triton-repo")
    assert (victim / "notes.txt").read_text() == "important"
    repo = tmp_path / "repo"
    for _ in range(2):  # the second time over our own repository
        assert runner.invoke(app, ["triton-repo", str(bundle), "--out", str(repo), "--overwrite"]).exit_code == 0
    assert runner.invoke(app, ["export", str(checkpoint), "--out", str(bundle), "--overwrite"]).exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["export", str(checkpoint), "--out", str(empty), "--overwrite"]).exit_code == 0


def _umask() -> int:
    probe = os.umask(0)
    os.umask(probe)
    return probe


def test_export_into_an_unwritable_place_is_one_line(runner, make_checkpoint, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    checkpoint = make_checkpoint()
    before = _files(tmp_path)
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(blocker / "bundle")])
    _one_line_error(result, f"cannot write {blocker / 'bundle'}", str(blocker))
    assert _files(tmp_path) == before


def test_missing_and_misplaced_paths_say_what_they_are(runner, tmp_path):
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    _one_line_error(runner.invoke(app, ["infer", str(tmp_path / "nope"), str(a_file)]), "no such bundle directory")
    _one_line_error(runner.invoke(app, ["infer", str(a_file), str(a_file)]), "is a file, not a bundle directory")
    _one_line_error(runner.invoke(app, ["export", str(a_dir)]), f"{a_dir}: is a directory, not a checkpoint file")
    _one_line_error(runner.invoke(app, ["evaluate", str(a_dir), "--data", str(tmp_path / "no.npz")]), "no.npz: no such file or folder")
