"""Fixtures of the serving tests: a bundle, and a real tritonserver on free loopback ports.

These tests run in an environment with the ``serve`` and ``client`` extras
(numpy < 2, no torch: ``.ci/serve``), where the bundle is exported beforehand
by an environment with torch and named by ``ADAVIT_SERVE_BUNDLE``. In the main
environment, the Triton tests skip and the others use the main suite's
``half_gmacs_bundle``. Run them alone with ``--confcutdir tests/serving`` where
torch is absent (the main suite's conftest imports it).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="module")
def bundle(request: pytest.FixtureRequest) -> Path:
    """``ADAVIT_SERVE_BUNDLE`` (budgets native, 0.35, 0.25); else, where torch is installed, a tiny
    Ada-DeiT with those budgets, exported by the main suite."""
    path = os.environ.get("ADAVIT_SERVE_BUNDLE")
    if path:
        return Path(path)
    try:
        return request.getfixturevalue("budgets_bundle")
    except pytest.FixtureLookupError:  # the main suite's conftest (torch) is not loaded here
        pytest.skip("no bundle to serve: export one and set ADAVIT_SERVE_BUNDLE (.ci/serve does)")

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def make_ports() -> Callable[[], dict[str, int]]:
    """``make_ports()``: HTTP, gRPC and metrics ports on loopback that nobody listens on now (the OS picks them)."""
    return lambda: {"http_port": _free_port(), "grpc_port": _free_port(), "metrics_port": _free_port()}


@pytest.fixture
def ports(make_ports) -> dict[str, int]:
    return make_ports()
