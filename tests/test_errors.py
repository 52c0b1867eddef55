"""The library's errors (``errors.py``): a parameter is named as its reader knows it."""

from __future__ import annotations

import numpy as np
import pytest
from checks import cli_error, one_line
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.errors import ConfigError, param
from adavit_deploy.runtime import load_bundle


def test_a_parameter_is_the_python_name_to_python_and_the_flag_on_the_command_line():
    e = ConfigError(f"{param('num_heads')} 5: pass {param('calibration', 'calib')} or {param('overwrite', python='overwrite=True')}")
    assert str(e) == "num_heads 5: pass calibration or overwrite=True"
    assert e.for_cli() == "--num-heads 5: pass --calib or --overwrite"


def test_the_same_mistake_from_python_and_from_the_cli(half_gmacs_bundle, tmp_path):
    with pytest.raises(ConfigError) as e:
        load_bundle(half_gmacs_bundle, threads=-1)
    one_line(e, "threads -1: must be >= 0")
    assert "--threads" not in str(e.value)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    result = CliRunner().invoke(app, ["infer", str(half_gmacs_bundle), str(tmp_path / "x.npy"), "--threads", "-1"])
    cli_error(result, "--threads -1: must be >= 0")
