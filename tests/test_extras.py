"""An inference box needs no torch (``extras.py``): with torch, timm and onnx unimportable, the
package, the runtime and the CLI still load a bundle and run ``infer``; what needs them says so in one line.

Each case runs in a fresh interpreter whose ``sys.meta_path`` refuses those three imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from adavit_deploy.inputs import load_inputs
from adavit_deploy.runtime import load_bundle

ROOT = Path(__file__).resolve().parents[1]

_LEAN = """
import importlib.abc, json, sys
BLOCKED = ("torch", "timm", "onnx")

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked: a lean install)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import numpy as np
from typer.testing import CliRunner
import adavit_deploy, adavit_deploy.runtime
from adavit_deploy.cli import app

BUNDLE, INPUT, OUT = sys.argv[1:4]
cli = CliRunner()
report = {"help": cli.invoke(app, ["--help"]).exit_code}
with adavit_deploy.load_bundle(BUNDLE) as rt:  # the Python API
    from adavit_deploy.inputs import load_inputs
    images, _ = load_inputs([INPUT], rt.cfg)
    report["api_logits"] = rt.infer(images).logits.tolist()
done = cli.invoke(app, ["infer", BUNDLE, INPUT, "--output", OUT])
report["infer"] = [done.exit_code, done.output]
for command in (["export", "--out", OUT + ".bundle"], ["info", OUT]):
    done = cli.invoke(app, command)
    report[command[0]] = [done.exit_code, done.output]
report["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps(report))
"""


def _npy(directory: Path, images: np.ndarray) -> Path:
    np.save(directory / "images.npy", images)
    return directory / "images.npy"


#: How each kind of input is written; an image file joins once preprocessing is torch-free.
INPUT_WRITERS: dict[str, Callable[[Path, np.ndarray], Path]] = {"npy": _npy}


@pytest.fixture(scope="module", params=sorted(INPUT_WRITERS))
def lean_run(request, half_gmacs_bundle, tmp_path_factory) -> tuple[dict, np.ndarray, Path]:
    """What the lean interpreter reported, the logits the full install gives, and the ``--output`` path."""
    d = tmp_path_factory.mktemp(f"lean-{request.param}")
    images = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=np.float32)
    path = INPUT_WRITERS[request.param](d, images)
    with load_bundle(half_gmacs_bundle, threads=1) as rt:
        want = rt.infer(load_inputs([path], rt.cfg)[0]).logits
    out = d / "out.npz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", _LEAN, str(half_gmacs_bundle), str(path), str(out)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), want, out


def test_nothing_imports_torch_timm_or_onnx(lean_run):
    report, _, _ = lean_run
    assert report["imported"] == [] and report["help"] == 0


def test_the_api_and_infer_run_without_them(lean_run):
    report, want, out = lean_run
    np.testing.assert_allclose(np.asarray(report["api_logits"]), want, atol=1e-5)
    assert report["infer"][0] == 0, report["infer"][1]
    with np.load(out) as z:
        np.testing.assert_allclose(z["logits"], want, atol=1e-5)


@pytest.mark.parametrize("command", ["export", "info"])
def test_what_needs_the_export_extra_says_so_in_one_line(lean_run, command):
    report, _, out = lean_run
    code, output = report[command]
    lines = output.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in output, output
    hint = "needs the export extra (torch is not installed): pip install 'adavit-deploy[export]'"
    assert lines[0].startswith(f"error: {command}") and lines[0].endswith(hint), lines[0]
    assert not Path(str(out) + ".bundle").exists()
