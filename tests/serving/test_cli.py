"""The serving commands at the CLI boundary: what they print, one-line errors, exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.serving import server


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_triton_repo_writes_and_says_what(runner, bundle, tmp_path):
    result = runner.invoke(app, ["triton-repo", str(bundle), "--out", str(tmp_path / "m"), "--with-dense", "--name", "ada"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["repository", "written:", str(tmp_path / "m"), "(models:", "ada,", "ada_dense)"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["ada", "ada_dense"]


def test_triton_repo_error_is_one_line(runner, bundle, tmp_path):
    result = runner.invoke(app, ["triton-repo", str(bundle), "--out", str(tmp_path / "m"), "--max-batch", "0"])
    assert result.exit_code == 1
    assert result.output == "error: --max-batch must be >= 1, got 0\n"
    assert not (tmp_path / "m").exists()


def test_serve_without_the_extra_says_how_to_install(runner, bundle, monkeypatch):
    monkeypatch.setattr(server.util, "find_spec", lambda name: None)
    result = runner.invoke(app, ["serve", str(bundle)])
    assert result.exit_code == 1
    assert result.output == "error: Triton Inference Server is not installed: pip install 'adavit-deploy[serve]' (Linux x86_64)\n"


def test_serve_without_bundle_needs_the_demo_export(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "the default bundle export/bundles/ada_digits does not exist: create it with `adavit-deploy export`" in result.output


def test_bench_server_rejects_bad_concurrency(runner):
    result = runner.invoke(app, ["bench-server", "127.0.0.1:1", "--concurrency", "0,2"])
    assert result.exit_code == 1
    assert result.output == "error: --concurrency '0,2': expected comma-separated integers >= 1, e.g. 1,8,32\n"


def test_bench_url_still_works_and_names_its_new_command(runner):
    """``bench --url`` (before ``bench-server``): the same run, a note first, its options hidden from ``bench --help``."""
    result = runner.invoke(app, ["bench", "--url", "127.0.0.1:1", "--concurrency", "0,2"])
    assert result.exit_code == 1
    assert result.output == (
        "note: `bench --url HOST:PORT` is now `adavit-deploy bench-server HOST:PORT`\n"
        "error: --concurrency '0,2': expected comma-separated integers >= 1, e.g. 1,8,32\n"
    )
    help_text = runner.invoke(app, ["bench", "--help"]).output
    assert "--url" not in help_text and "--concurrency" not in help_text and "bench-server" in help_text


@pytest.mark.parametrize("address", ["http://127.0.0.1:8000", "127.0.0.1:99999", "127.0.0.1:abc", "8000"])
def test_bench_server_checks_its_address_first(runner, address):
    result = runner.invoke(app, ["bench-server", address])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: server address {address!r}: give HOST:PORT") and result.output.count("\n") == 1
