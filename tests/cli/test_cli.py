"""The ``adavit-deploy`` command line: ``info``, error handling, help, entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.errors import CheckpointError


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def tiny_full(fixtures_dir) -> Path:
    return fixtures_dir / "tiny_full.pth.tar"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_info_json(runner, tiny_full):
    result = runner.invoke(app, ["info", str(tiny_full), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    arch = report["architecture"]
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"]) == (96, 6, 3)
    assert (arch["patch_size"], arch["img_size"], arch["num_classes"], arch["num_tokens"]) == (8, 64, 10, 65)
    assert report["kind"] == "reference"
    expected = {
        "ada_head": True,
        "ada_layer": True,
        "ada_token": True,
        "ada_token_with_mlp": True,
        "keep_layers": 1,
        "ada_token_start_layer": 0,
        "norm_policy": False,
    }
    assert report["flags"] == expected
    # ... which is what the reference wrote into the checkpoint's own args
    args = vars(torch.load(tiny_full, map_location="cpu", weights_only=False)["args"])
    assert {k: args[k] for k in expected} == report["flags"]
    assert report["checkpoint_args"]["ada_token_with_mlp"] is True
    assert report["thresholds"] == {"head": 0.5, "layer": 0.5, "token": 0.6}
    assert report["decision_blocks"]["token_select"] == [0, 1, 2, 3, 4, 5]
    assert report["decision_blocks"]["head_select"] == [1, 2, 3, 4, 5]
    assert report["parameters"] == sum(v.numel() for v in torch.load(tiny_full, weights_only=False)["state_dict"].values())
    # a ViT by hand: 6 blocks of 65 tokens x 96 wide (q/k/v/proj 4NC^2, attention 2N^2C, MLP 2NC*384),
    # the 8x8 patch embedding (64 patches x 96 x 192) and the 10-class head
    assert report["dense_gmacs"] == round((6 * (4 * 65 * 96**2 + 2 * 65**2 * 96 + 2 * 65 * 96 * 384) + 64 * 96 * 192 + 960) / 1e9, 4)


def test_info_json_other_fixtures(runner, fixtures_dir):
    result = runner.invoke(app, ["info", str(fixtures_dir / "tiny_attn_tokens_normpolicy.pth.tar"), "--json"])
    assert result.exit_code == 0, result.output
    flags = json.loads(result.stdout)["flags"]
    assert flags == {
        "ada_head": True,
        "ada_layer": True,
        "ada_token": True,
        "ada_token_with_mlp": False,
        "keep_layers": 2,
        "ada_token_start_layer": 1,
        "norm_policy": True,
    }
    result = runner.invoke(app, ["info", str(fixtures_dir / "tiny_heads_only.pth.tar"), "--json"])
    flags = json.loads(result.stdout)["flags"]
    assert (flags["ada_head"], flags["ada_layer"], flags["ada_token"], flags["keep_layers"]) == (True, False, False, 1)


def test_info_table(runner, tiny_full):
    result = runner.invoke(app, ["info", str(tiny_full)])
    assert result.exit_code == 0, result.output
    assert "embed_dim" in result.output
    assert "ada_token_with_mlp" in result.output
    assert "reference" in result.output


def test_info_overrides(runner, make_checkpoint):
    path = make_checkpoint()
    result = runner.invoke(app, ["info", str(path), "--json", "--token-threshold", "0.7", "--no-token-with-mlp"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["thresholds"]["token"] == 0.7
    assert report["flags"]["ada_token_with_mlp"] is False
    assert report["architecture"]["embed_dim"] == 48


def _bad_files(tmp_path: Path, real: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(real.read_bytes()[:1000])
    text = tmp_path / "notes.txt"
    text.write_text("not\na checkpoint\n")
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": _Evil(tmp_path / "pwned")}, evil)
    return {"truncated": truncated, "text": text, "malicious": evil, "missing": tmp_path / "missing.pth"}


@pytest.mark.parametrize("which", ["truncated", "text", "malicious", "missing"])
def test_errors_are_one_line(runner, tmp_path, make_checkpoint, which):
    path = _bad_files(tmp_path, make_checkpoint())[which]
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert path.name in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""  # the error goes to stderr
    assert not (tmp_path / "pwned").exists()
    if which == "malicious":
        assert "refused" in lines[0]


@pytest.mark.parametrize("which", ["truncated", "text", "malicious"])
def test_debug_propagates_the_exception(runner, tmp_path, make_checkpoint, which):
    path = _bad_files(tmp_path, make_checkpoint())[which]
    result = runner.invoke(app, ["--debug", "info", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CheckpointError)
    assert not (tmp_path / "pwned").exists()
    # --debug does not stick to later invocations
    assert runner.invoke(app, ["info", str(path)]).exit_code == 1


def test_config_error_is_one_line(runner, tmp_path, make_model):
    path = tmp_path / "bare.pth"
    torch.save(make_model().state_dict(), path)  # selects tokens, no args
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--token-with-mlp" in lines[0]
    assert runner.invoke(app, ["info", str(path), "--token-with-mlp"]).exit_code == 0


@pytest.mark.parametrize("name", ["model[v2].pth", "[bold]x.pth"])
def test_error_message_is_not_rich_markup(runner, tmp_path, name):
    """Brackets in a path are printed as they are, not eaten as styles."""
    path = tmp_path / name
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert str(path) in result.output


def test_markup_like_path_does_not_crash(runner, tmp_path):
    path = tmp_path / "a[" / "x]" / "m.pth"  # the message holds "[/x]", a rich closing tag
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error:") and str(path) in result.output


def test_help(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Export AdaViT checkpoints" in result.output
    assert "info" in result.output and "--debug" in result.output
    result = runner.invoke(app, ["info", "--help"])
    assert result.exit_code == 0
    assert "Show the architecture, decision flags" in result.output
    for option in ("--json", "--num-heads", "--token-with-mlp", "--token-threshold"):
        assert option in result.output


def test_version(runner):
    from adavit_deploy import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_importing_the_main_module_runs_nothing(monkeypatch):
    """Only ``python -m adavit_deploy`` runs the program; importing ``adavit_deploy.__main__`` (pydoc,
    ``pytest --doctest-modules``) neither exits nor makes this process the pool's owner."""
    import importlib

    from adavit_deploy import cli

    monkeypatch.setattr(sys, "argv", ["adavit-deploy", "--version"])
    monkeypatch.delitem(sys.modules, "adavit_deploy.__main__", raising=False)
    monkeypatch.setitem(cli._state, "owns_process", False)
    importlib.import_module("adavit_deploy.__main__")
    assert cli._state["owns_process"] is False


@pytest.mark.parametrize("program", ["console script", "python -m"])
def test_console_script(exported, tmp_path, program):
    """The installed entry point, and ``python -m adavit_deploy``, run a command end to end
    (``infer``, which imports no torch: a quick process)."""
    from adavit_deploy.runtime import load_bundle

    if program == "python -m":
        command = [sys.executable, "-m", "adavit_deploy"]
    else:
        script = shutil.which("adavit-deploy", path=str(Path(sys.executable).parent)) or shutil.which("adavit-deploy")
        assert script, "the adavit-deploy entry point is not installed"
        command = [script]
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    args = [*command, "infer", str(exported().bundle), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with load_bundle(exported().bundle) as rt, np.load(tmp_path / "o.npz") as z:
        np.testing.assert_allclose(z["logits"], rt.infer(x).logits, rtol=0, atol=1e-6)



@pytest.mark.parametrize(
    "command, shown",
    [
        ("build-trt", "[default: BUNDLE/trt]"),
        ("export", "[default: export/bundles/<checkpoint name>]"),
        ("evaluate", "[default: all of the bundle's]"),
    ],
)
def test_help_shows_the_defaults_written_in_brackets(runner, command, shown):
    """Help text is rich markup: an unescaped "[default: ...]" would vanish as a style tag."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and shown in result.output


def test_printed_lines_stay_whole_and_table_titles_centred():
    """Piped output (rich's 80 columns): a long line is not wrapped, a table still fits and centres its title."""
    import io

    from rich.console import Console
    from rich.table import Table

    from adavit_deploy import cli, render

    out = io.StringIO()
    console = Console(file=out, width=40, soft_wrap=cli.console.soft_wrap)  # the CLI's setting
    render.print_written(console, Path("/a") / ("x" * 60))
    table = Table("a", "b", title="t")
    table.add_row("1" * 10, "2" * 10)
    render._print_table(console, table)
    lines = out.getvalue().splitlines()
    assert lines[0] == "wrote /a/" + "x" * 60
    assert lines[1].strip() == "t" and lines[1].startswith("     ")


def test_help_text_is_not_broken_at_80_columns():
    """Typer keeps a docstring's line breaks: a body line past 78 columns wraps at 80 (piped, a default
    terminal) and leaves a stub line (`tune --help` showed "inputs reach;" alone). The summary line is reflowed."""
    import inspect

    from adavit_deploy import cli

    for command in cli.app.registered_commands:
        body = inspect.cleandoc(command.callback.__doc__ or "").split("\n\n", 1)[1:]
        long = [line for line in "".join(body).splitlines() if len(line) > 78]
        assert not long, (command.callback.__name__, long)
