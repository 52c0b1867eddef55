"""A real tritonserver from the ``serve`` extra's wheel, on free loopback ports.

Served results equal in-process ones over HTTP and gRPC, the dynamic batcher
forms batches, bad requests fail alone with one line, the stub's death is
contained, and SIGTERM leaves no process and no temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="needs the client extra: pip install 'adavit-deploy[client]'")
pytest.importorskip("tritonclient.grpc", reason="needs the client extra: pip install 'adavit-deploy[client]'")

from tritonclient.utils import InferenceServerException  # noqa: E402

from adavit_deploy import load_bundle  # noqa: E402
from adavit_deploy.errors import AdaViTDeployError, BackendError, ConfigError  # noqa: E402
from adavit_deploy.serving import RepositoryOptions, write_repository  # noqa: E402
from adavit_deploy.bench.server import Client, run_load  # noqa: E402
from adavit_deploy.serving.server import TritonServer, find_triton, serve  # noqa: E402

try:
    TRITON = find_triton()
except BackendError as e:
    pytest.skip(f"needs the serve extra: {e}", allow_module_level=True)

MAX_BATCH = 8
#: Long enough that concurrent requests meet in one batch, short enough for the tests.
QUEUE_DELAY_US = 20_000
DECISIONS = ("head_select", "layer_select", "token_select")


def _start(repo: Path, ports: dict[str, int], log_path: Path) -> TritonServer:
    return TritonServer(repo, log=open(log_path, "w"), **ports).start()


@pytest.fixture(scope="module")
def repository(bundle, tmp_path_factory) -> Path:
    options = RepositoryOptions(max_batch=MAX_BATCH, queue_delay_us=QUEUE_DELAY_US, threads=1, with_dense=True)
    return write_repository(bundle, tmp_path_factory.mktemp("serve") / "models", options)


@pytest.fixture(scope="module")
def server(repository, make_ports, tmp_path_factory):
    server = _start(repository, make_ports(), tmp_path_factory.mktemp("log") / "triton.log")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def images(bundle) -> np.ndarray:
    cfg = load_bundle(bundle).cfg
    return np.random.default_rng(3).standard_normal((6, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)


@pytest.fixture(scope="module")
def expected(bundle, images):
    """In-process results, one image per call (as each request is sent)."""
    rt = load_bundle(bundle)
    return [rt.infer(x[None]) for x in images], rt.dense(images)


def test_wheel_layout():
    """What server.py relies on in the pinned nvidia-pytriton wheel."""
    assert os.access(TRITON.binary, os.X_OK) and TRITON.binary.name == "tritonserver"
    assert (TRITON.python_backend / "libtriton_python.so").is_file()
    assert (TRITON.python_backend / "triton_python_backend_utils.py").is_file()
    assert os.access(TRITON.stub, os.X_OK) and TRITON.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert any(p.name.startswith("libtritonserver") for p in TRITON.libs.iterdir())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_equals_in_process(server, protocol, images, expected):
    per_image, dense = expected
    client = Client(server.http_url if protocol == "http" else server.grpc_url, protocol)
    try:
        for x, want in zip(images, per_image):
            got = client.infer("adavit", x[None])
            assert sorted(got) == sorted(["logits", "gmacs", "budget", *DECISIONS])
            assert got["budget"].tolist() == [[b"native"]]
            for key in DECISIONS:
                np.testing.assert_array_equal(got[key], getattr(want, key))
            np.testing.assert_allclose(got["logits"], want.logits, rtol=0, atol=1e-6)
            np.testing.assert_allclose(got["gmacs"][:, 0], want.gmacs, rtol=1e-6)
        got = client.infer("adavit_dense", images[:3])  # a request may carry several images
        np.testing.assert_allclose(got["logits"], dense[:3], rtol=0, atol=1e-5)
    finally:
        client.close()


def test_served_on_openvino_equals_in_process(bundle, images, make_ports, tmp_path):
    """``--backend ov``: the Triton model runs the bundle on OpenVINO, exactly as in-process (fp32)."""
    pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")
    options = RepositoryOptions(max_batch=MAX_BATCH, threads=1, backend="ov")
    repo = write_repository(bundle, tmp_path / "models", options)
    with load_bundle(bundle, "ov", threads=1) as rt:
        want = rt.infer(images)
    server = _start(repo, make_ports(), tmp_path / "triton.log")
    client = Client(server.http_url, "http")
    try:
        got = client.infer("adavit", images)
        for key in DECISIONS:
            np.testing.assert_array_equal(got[key], getattr(want, key))
        np.testing.assert_allclose(got["logits"], want.logits, rtol=0, atol=1e-6)
    finally:
        client.close()
        assert server.stop() == 0


def test_dynamic_batcher_forms_batches(server):
    report = run_load(server.grpc_url, "grpc", [MAX_BATCH], duration=2.0, metrics_url=server.metrics_url, rounds=1,
                      warmup_s=0.2)  # fmt: skip
    for model in ("adavit", "adavit_dense"):
        row = report.result(model, MAX_BATCH)
        assert row["errors"] == 0 and row["requests"] > 0
        assert row["server_batch_mean"] > 1.5, row  # 8 clients, 20 ms queue delay: batches of several requests
    assert [c["concurrency"] for c in report.comparisons] == [MAX_BATCH]  # the ratio itself is wall-clock: not asserted


def _bad_requests(images: np.ndarray):
    import tritonclient.http as tc

    def tensor(name, array, dtype="FP32"):
        t = tc.InferInput(name, list(array.shape), dtype)
        t.set_data_from_numpy(array)
        return t

    nan = images[:1].copy()
    nan[0, 0, 0, 0] = np.nan
    return {
        "wrong shape": [tensor("images", images[:1, :, :4])],
        "wrong dtype": [tensor("images", images[:1].astype(np.float64), "FP64")],
        "missing input": [tensor("pixels", images[:1])],
        "batch over the maximum": [tensor("images", np.repeat(images[:1], MAX_BATCH + 1, axis=0))],
        "NaN": [tensor("images", nan)],
    }


def test_bad_requests_fail_alone_and_the_server_keeps_serving(server, images, expected):
    import tritonclient.http as tc

    client = tc.InferenceServerClient(server.http_url)
    try:
        for what, inputs in _bad_requests(images).items():
            with pytest.raises(InferenceServerException) as e:
                client.infer("adavit", inputs)
            message = str(e.value)
            assert "\n" not in message.strip() and "Traceback" not in message and "/" not in message, (what, message)
            assert e.value.status() == "400", (what, message)
        assert "NaN" in message
        # a NaN request batched with good ones fails alone
        results: dict[int, object] = {}

        def send(k: int, x: np.ndarray) -> None:
            c = Client(server.http_url, "http")
            try:
                results[k] = c.infer("adavit", x)
            except InferenceServerException as err:
                results[k] = err
            finally:
                c.close()

        nan = images[:1].copy()
        nan[0, 1, 2, 3] = np.nan
        batch = [images[1:2], nan, images[2:3], images[3:4]]
        threads = [threading.Thread(target=send, args=(k, x)) for k, x in enumerate(batch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert isinstance(results[1], InferenceServerException) and "NaN" in str(results[1])
        for k, image in ((0, 1), (2, 2), (3, 3)):
            np.testing.assert_allclose(results[k]["logits"], expected[0][image].logits, rtol=0, atol=1e-6)
    finally:
        client.close()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_stub_killed_mid_load_fails_its_requests_and_nothing_hangs(repository, ports, tmp_path, images):
    """Triton 2.51 does not restart a killed Python-backend stub: its model answers 500 to every request
    (while still reported ready); the other model serves on; SIGTERM stops the server within its exit timeout."""
    server = _start(repository, ports, tmp_path / "triton.log")
    try:
        stubs = {pid: Path(f"/proc/{pid}/cmdline").read_text() for pid in _children(server.process.pid)}
        (adaptive,) = [pid for pid, cmd in stubs.items() if "/adavit/1/model.py" in cmd]
        load = threading.Thread(target=run_load, args=(server.http_url, "http", [4], 3.0),
                                kwargs={"metrics_url": server.metrics_url, "rounds": 1, "warmup_s": 0.2})  # fmt: skip
        load.start()
        time.sleep(1.0)
        os.kill(adaptive, signal.SIGKILL)
        load.join(timeout=120)
        assert not load.is_alive()
        client = Client(server.http_url, "http")
        try:
            with pytest.raises(InferenceServerException, match="Stub process 'adavit_0_0' is not healthy"):
                client.infer("adavit", images[:1])
            assert client.infer("adavit_dense", images[:1])["logits"].shape[0] == 1
        finally:
            client.close()
    finally:
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < server.exit_timeout_s + 15
    assert all(_gone(pid) for pid in [server.process.pid, *stubs])


def _ours(tmpdir: Path) -> list[Path]:
    """What serve put in the temporary folder (other tools of the host may write there too)."""
    return sorted(tmpdir.glob("adavit-triton-*"))


def test_serve_stops_on_sigterm_and_leaves_nothing(bundle, ports, tmp_path):
    """The CLI in the foreground: ready line, SIGTERM drains it, exit 0, no process, temporary folders removed."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    cmd = [str(Path(sys.executable).parent / "adavit-deploy"), "serve", str(bundle), "--threads", "1",
           *(f"--{k.replace('_', '-')}={v}" for k, v in ports.items())]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            if "Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "serve exited before it was ready"
        (server,) = _children(proc.pid)
        stubs = _children(server)
        assert len(_ours(tmpdir)) == 2  # the repository and the backend folder
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(_gone(pid) for pid in [server, *stubs])
    assert _ours(tmpdir) == []


def test_serve_refuses_a_taken_port_before_starting(bundle, ports, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["grpc_port"]))
        taken.listen()
        with pytest.raises(ConfigError, match=f"--grpc-port {ports['grpc_port']}: cannot listen on 127.0.0.1"):
            serve(bundle, RepositoryOptions(), **ports)


@pytest.mark.parametrize("change, message", [
    ({"http_port": 70000}, "--http-port 70000: must be a port number in 1..65535"),
    ({"metrics_port": -5}, "--metrics-port -5: must be a port number in 1..65535"),
    ({"grpc_port": "same"}, "the three ports must differ"),
])  # fmt: skip
def test_serve_refuses_bad_ports_in_one_line(bundle, ports, change, message):
    if change.get("grpc_port") == "same":
        change = {"grpc_port": ports["http_port"]}
    with pytest.raises(ConfigError) as e:
        serve(bundle, RepositoryOptions(), **{**ports, **change})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unloadable_bundle_is_a_one_line_error(repository, ports, tmp_path):
    broken = tmp_path / "models"
    shutil.copytree(repository / "adavit", broken / "adavit")
    with open(broken / "adavit" / "1" / "bundle" / "head.onnx", "ab") as f:
        f.write(b"tampered")
    log = tmp_path / "triton.log"
    with pytest.raises(AdaViTDeployError, match="tritonserver exited with code 1 while loading the models"):
        _start(broken, ports, log)
    assert "head.onnx" in log.read_text()  # the sha256 check refused it, in the server's log
