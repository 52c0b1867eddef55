"""Backends: the runner lifecycle (close, ``with``, use after close), thread counts, and
ONNX Runtime as a good citizen of its host process (``runtime/backends/{base,ort}.py``)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from adavit_deploy.errors import BackendError, ConfigError
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.backends import get_backend, resolve_threads
from adavit_deploy.runtime.backends.ort import OrtBackend
from checks import one_line as _one_line

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((6, 3, 32, 32), dtype=np.float32)


# -- lifecycle -------------------------------------------------------------------------


def test_close_releases_every_session(half_gmacs_bundle, batch):
    rt = load_bundle(half_gmacs_bundle, threads=1)
    rt.infer(batch)
    rt.dense(batch)
    sessions = [weakref.ref(r.session) for r in rt.runners.values()]
    assert len(sessions) >= 5 and "dense" in rt.runners
    rt.close()
    assert rt.closed and not rt.runners and rt.backend.closed  # load_bundle made the backend: it closes too
    gc.collect()
    assert all(s() is None for s in sessions)
    rt.close()  # idempotent


def test_a_closed_runtime_refuses_to_run_in_one_line(half_gmacs_bundle, batch):
    rt = load_bundle(half_gmacs_bundle, threads=1)
    rt.close()
    for call in (lambda: rt.infer(batch), lambda: rt.dense(batch), lambda: rt.runner("stem")):
        with pytest.raises(BackendError) as e:
            call()
        _one_line(e, str(half_gmacs_bundle), "is closed", "load the bundle again")


def test_context_manager_closes(half_gmacs_bundle, batch):
    with load_bundle(half_gmacs_bundle, threads=1) as rt:
        logits = rt.infer(batch).logits
        runners = list(rt.runners.values())
    assert logits.shape == (6, 7) and rt.closed and runners and all(r.closed for r in runners)


def test_a_backend_passed_in_stays_the_callers(half_gmacs_bundle, batch):
    """Closing a runtime closes its runners only; closing the backend closes every runner it made."""
    backend = OrtBackend(1)
    with load_bundle(half_gmacs_bundle, backend) as rt:
        want = rt.infer(batch).logits
    assert not backend.closed
    other = load_bundle(half_gmacs_bundle, backend)
    np.testing.assert_array_equal(other.infer(batch).logits, want)
    with backend:
        pass
    assert backend.closed and all(r.closed for r in other.runners.values())
    with pytest.raises(BackendError) as e:
        other.infer(batch)
    _one_line(e, "is closed")
    with pytest.raises(BackendError) as e:
        load_bundle(half_gmacs_bundle, backend).infer(batch)
    _one_line(e, "the ort backend is closed")


# -- threads ---------------------------------------------------------------------------


def test_threads_zero_is_one_per_core():
    assert resolve_threads(0) == (os.cpu_count() or 1) and resolve_threads(1) == 1


@pytest.mark.parametrize("threads", [-1, 1025, 4 * (os.cpu_count() or 1) + 1, 2.5])
def test_bad_thread_counts_are_one_line_errors(threads):
    for make in (lambda: get_backend("ort", threads), lambda: OrtBackend(threads), lambda: get_backend("trt", threads)):
        with pytest.raises(ConfigError) as e:
            make()
        _one_line(e, f"threads {threads}")


def test_two_runtimes_with_different_thread_counts_in_one_process(half_gmacs_bundle, batch):
    with load_bundle(half_gmacs_bundle, threads=1) as one, load_bundle(half_gmacs_bundle, threads=2) as two:
        for _ in range(2):  # interleaved: each keeps its own pool
            a, b = one.infer(batch), two.infer(batch)
            for key in ("head_select", "layer_select", "token_select"):
                np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
            np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
            np.testing.assert_allclose(one.dense(batch), two.dense(batch), atol=1e-5)


def test_small_graphs_run_on_the_calling_thread(half_gmacs_bundle, batch):
    with load_bundle(half_gmacs_bundle, threads=2) as rt:
        rt.infer(batch)
        threads = {name: r.session.get_session_options().intra_op_num_threads for name, r in rt.runners.items()}
    assert threads["stem"] == threads["attn_0"] == 2
    policies = [t for name, t in threads.items() if name.startswith("policy_")]
    assert threads["head"] == 1 and policies and set(policies) == {1}


# -- host-process citizenship (each case in a fresh process: ORT's state is process-wide) --

_USER_SESSION = """
import numpy as np, onnxruntime as ort
user = ort.InferenceSession(BUNDLE + "/head.onnx", providers=["CPUExecutionProvider"])  # default options
cls = np.random.default_rng(1).standard_normal((2, 48), dtype=np.float32)
assert user.run(None, {"cls": cls})[0].shape == (2, 7)
"""
_OURS = """
import numpy as np, adavit_deploy
with adavit_deploy.load_bundle(BUNDLE, threads=2) as rt:
    np.testing.assert_allclose(rt.infer(np.load(IMAGES)).logits, np.load(WANT), atol=1e-5)
"""


@pytest.mark.parametrize("order", ["ours first", "user first"])
def test_the_hosts_own_sessions_and_ours_both_work(half_gmacs_bundle, batch, tmp_path, order):
    np.save(tmp_path / "images.npy", batch)
    with load_bundle(half_gmacs_bundle, threads=1) as rt:
        np.save(tmp_path / "want.npy", rt.infer(batch).logits)
    steps = [_OURS, _USER_SESSION] if order == "ours first" else [_USER_SESSION, _OURS]
    head = f"BUNDLE, IMAGES, WANT = {str(half_gmacs_bundle)!r}, {str(tmp_path / 'images.npy')!r}, {str(tmp_path / 'want.npy')!r}\n"
    code = head + "".join(steps) + "print('both ran')\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "both ran" in done.stdout, done.stderr


_PROCESS_POOL = """
import numpy as np, adavit_deploy
from adavit_deploy.errors import BackendError
from adavit_deploy.runtime.backends.ort import OrtBackend, pool_mode, use_process_pool
assert pool_mode() == "session"
assert use_process_pool(2) == 2 and use_process_pool(2) == 2 and pool_mode() == "process"
with adavit_deploy.load_bundle(BUNDLE, threads=2) as rt:
    assert all(not r.session.get_session_options().use_per_session_threads for r in [rt.runner("stem")])
    got = rt.infer(np.load(IMAGES))
    np.testing.assert_allclose(got.logits, np.load(WANT), atol=1e-5)
for wrong in (lambda: use_process_pool(1), lambda: OrtBackend(1)):
    try:
        wrong()
        raise SystemExit("a second pool size was accepted")
    except BackendError as e:
        assert "pool of 2 threads" in str(e) or "already has 2 threads" in str(e), e
print("process pool ok")
"""


def test_the_process_pool_is_opt_in_exact_and_one_size(half_gmacs_bundle, batch, tmp_path):
    """``use_process_pool``: the owner of a process opts in (the CLI as a program, the Triton model)."""
    np.save(tmp_path / "images.npy", batch)
    with load_bundle(half_gmacs_bundle, threads=1) as rt:
        np.save(tmp_path / "want.npy", rt.infer(batch).logits)
    head = f"BUNDLE, IMAGES, WANT = {str(half_gmacs_bundle)!r}, {str(tmp_path / 'images.npy')!r}, {str(tmp_path / 'want.npy')!r}\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", head + _PROCESS_POOL], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "process pool ok" in done.stdout, done.stderr


def test_the_cli_as_a_program_uses_the_process_pool_and_gives_the_same_results(half_gmacs_bundle, batch, tmp_path):
    np.save(tmp_path / "images.npy", batch)
    with load_bundle(half_gmacs_bundle, threads=1) as rt:
        want = rt.infer(batch)
    code = (
        "import sys; from adavit_deploy import cli\n"
        "from adavit_deploy.runtime.backends import ort\n"
        "sys.argv = ['adavit-deploy'] + sys.argv[1:]\n"
        "try:\n    cli.main()\nfinally:\n    print('pool', ort.pool_mode())\n"
    )
    args = ["infer", str(half_gmacs_bundle), str(tmp_path / "images.npy"), "--threads", "2", "--output", str(tmp_path / "out.npz")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "pool process" in done.stdout, done.stdout + done.stderr
    assert not done.stderr.strip(), done.stderr  # no ONNX Runtime warning per session
    with np.load(tmp_path / "out.npz") as got:
        for key in ("head_select", "layer_select", "token_select"):
            np.testing.assert_array_equal(got[key], getattr(want, key))
        np.testing.assert_allclose(got["logits"], want.logits, atol=1e-5)


# -- profiling -----------------------------------------------------------------------------


def test_every_session_profiles_to_its_own_file(half_gmacs_bundle, tmp_path):
    """ORT names a profile prefix + a millisecond timestamp: sessions made in the same millisecond
    shared one file (and `kernel_time.py` read a mix of two profiles). Each session has its own prefix."""
    from adavit_deploy.bundle import read_manifest

    artifact = read_manifest(half_gmacs_bundle, verify=False).artifacts["head"]
    cls = np.zeros((1, 48), np.float32)
    with OrtBackend(1, profile_dir=tmp_path) as backend:
        runners = [backend.runner(half_gmacs_bundle, artifact) for _ in range(6)]  # within a few ms
        for r in runners:
            r(cls=cls)
        files = [r.end_profiling() for r in runners]
    assert len(set(files)) == 6 and all(f.parent == tmp_path for f in files)
    for f in files:
        events = json.loads(f.read_text())
        assert any(e.get("cat") == "Node" for e in events)
