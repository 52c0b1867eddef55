"""The ``tritonserver`` process shipped in the ``nvidia-pytriton`` wheel, started on a model repository.

The wheel's binary is a real Triton Inference Server with the Python
backend; PyTriton's own Python API is not used (it fails whole batches on one
bad request and returns tracebacks). What it takes to run the binary directly:

- a backend directory whose ``python/`` holds the backend library and the
  stub built for *this* Python (the wheel ships one stub per version);
- ``LD_LIBRARY_PATH`` starting with this Python's ``LIBDIR`` (the stub links
  ``libpython3.X.so``) and the wheel's ``nvidia_pytriton.libs``;
- this Python's ``bin`` first on ``PATH``: the stub takes its environment
  (site-packages, hence adavit-deploy and onnxruntime) from ``python3`` there.

The server runs in its own session (a terminal's Ctrl-C reaches only us, and
we drain it with one SIGTERM) and dies with its parent (``PR_SET_PDEATHSIG``),
so no server is left behind by a killed caller.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import IO, Callable

from ..errors import BackendError, ConfigError
from .repository import RepositoryOptions, write_repository

#: ``pip install`` hint when the wheel is missing.
INSTALL_HINT = "pip install 'adavit-deploy[serve]' (Linux x86_64)"
READY_TIMEOUT_S = 120.0
#: How long Triton waits for in-flight requests (and open client connections) on SIGTERM.
EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class TritonInstall:
    """The parts of the ``nvidia-pytriton`` wheel the server needs."""

    binary: Path
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python
    libs: Path  # nvidia_pytriton.libs: libtritonserver and its dependencies


def find_triton() -> TritonInstall:
    """Locate the wheel's server, Python backend, stub for this Python and libraries."""
    spec = util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"Triton Inference Server is not installed: {INSTALL_HINT}")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub, install.libs):
        if not path.exists():
            raise BackendError(f"the nvidia-pytriton wheel has no {path.name} for Python {version}: {INSTALL_HINT}")
    return install


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ours) with the library path and ``PATH`` the server and its stubs need."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    ld = [p for p in (libdir, str(install.libs), env.get("LD_LIBRARY_PATH")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(ld)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def check_port_free(host: str, port: int, option: str) -> None:
    """A one-line error now rather than a server that dies while starting."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"{option} {port}: cannot listen on {host}:{port} ({e.strerror}); choose another port") from None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class TritonServer:
    """A running ``tritonserver`` on ``repository``; ``stop`` drains it. Use as a context manager.

    ``log``: where the server's own log goes (default: our stdout and stderr).
    """

    def __init__(self, repository: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, log: IO | None = None, exit_timeout_s: int = EXIT_TIMEOUT_S) -> None:  # fmt: skip
        self.repository, self.host = Path(repository), host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log, self.exit_timeout_s = log, exit_timeout_s
        self.process: subprocess.Popen | None = None
        self._backends: Path | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        return [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]  # fmt: skip

    def check_ports(self) -> None:
        """Each port in range, the three distinct and free: one line now, not Triton's usage text later."""
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        for option, port in ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"{option} {port}: must be a port number in 1..65535")
        if len(set(ports.values())) < len(ports):
            raise ConfigError(f"{', '.join(f'{o} {p}' for o, p in ports.items())}: the three ports must differ")
        for option, port in ports.items():
            check_port_free(self.host, port, option)

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> "TritonServer":
        """Start the server and wait until every model is loaded; a one-line error if it is not."""
        install = find_triton()
        self.check_ports()
        self._backends = Path(tempfile.mkdtemp(prefix="adavit-triton-backends-"))
        python = self._backends / "python"
        python.mkdir()
        for src in (*install.python_backend.iterdir(), install.stub):
            if src.is_file():
                (python / src.name).symlink_to(src)
        self.process = subprocess.Popen(
            self.command(install, self._backends),
            env=server_environment(install),
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise BackendError(f"tritonserver exited with code {code} while loading the models: see its log above")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise BackendError(f"tritonserver was not ready after {timeout_s:.0f} s: see its log above")

    def terminate(self) -> None:
        """Ask the server to drain and stop (SIGTERM); ``wait`` or ``stop`` then."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """Drain and stop: SIGTERM, then SIGKILL to its whole session if it outlives the exit timeout."""
        code = None
        if self.process is not None:
            self.terminate()
            try:
                code = self.process.wait(timeout=self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait()
        if self._backends is not None:
            shutil.rmtree(self._backends, ignore_errors=True)
            self._backends = None
        return code

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(bundle: str | Path, options: RepositoryOptions, host: str = "127.0.0.1", http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002,
          on_ready: Callable[[TritonServer], None] | None = None) -> int:  # fmt: skip
    """Serve ``bundle`` in the foreground until SIGINT or SIGTERM, then drain, stop and clean up.

    The repository (``write_repository`` with ``options``) lives in a temporary
    folder removed on the way out. ``on_ready(server)`` is called once the models
    are loaded. Returns the server's exit code once a signal stopped it.
    """
    find_triton()  # the install hint, and the ports, before the bundle is copied
    work = Path(tempfile.mkdtemp(prefix="adavit-triton-"))
    server = TritonServer(work / "models", host, http_port, grpc_port, metrics_port)
    stopping: list[int] = []

    def drain(signum: int, _frame) -> None:
        stopping.append(signum)
        server.terminate()

    previous = {s: signal.signal(s, drain) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.check_ports()
        write_repository(bundle, server.repository, options)
        try:
            server.start()
        except BackendError:
            if stopping:  # Ctrl-C while the models loaded
                return 0
            raise
        if on_ready is not None:
            on_ready(server)
        while server.process.poll() is None:  # a bounded wait: the signal handler's SIGTERM ends it
            try:
                server.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        code = server.stop() or 0
        if not stopping:
            raise BackendError(f"tritonserver exited on its own with code {code}: see its log above")
        return code
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
