"""The TensorRT backend (and the ONNX Runtime CUDA backend): load errors on CPU, engines on a GPU.

Tests that need TensorRT and a CUDA GPU skip with the reason "tensorrt not
installed" or "no CUDA GPU". On a machine that has both (docs/TENSORRT.md):
``pip install -e '.[gpu,dev]' && python -m pytest -q tests/test_tensorrt*.py``.
They build fp32 engines for a tiny bundle once per module, then check the
engine manifest, parity with ONNX Runtime through the adaptive runtime (same
decisions, close logits), chunking past the engines' max batch, and that
engines from another TensorRT version or GPU are refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adavit_deploy.errors import BackendError, BundleError
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.backends import get_backend
from adavit_deploy.tensorrt.environment import require_cuda

# -- without TensorRT / without a GPU (run everywhere) --------------------------------------


def test_trt_backend_without_tensorrt_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError) as exc:
        get_backend("trt")
    msg = str(exc.value)
    assert "\n" not in msg and "TensorRT is not installed" in msg and "pip install 'adavit-deploy[gpu]'" in msg


def test_no_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError) as exc:
        require_cuda()
    msg = str(exc.value)
    assert "\n" not in msg and "no CUDA GPU" in msg and "backend=\"ort\"" in msg


def test_a_tactics_table_tuned_on_tensorrt_holds_only_for_its_gpu_and_version():
    """``tactics.json`` is used where its fingerprint matches: on TensorRT that is the engines'
    GPU and TensorRT version too, not only the host CPU (which another GPU can share)."""
    from adavit_deploy.runtime.backends.trt import TrtBackend
    from adavit_deploy.tensorrt.manifest import TrtEnvironment

    def fingerprint(env: TrtEnvironment) -> dict:
        backend = object.__new__(TrtBackend)  # no TensorRT here: the fingerprint reads only the environment
        backend.environment = env
        return backend.fingerprint()

    h200 = fingerprint(TrtEnvironment("10.3.0", "NVIDIA H200", (9, 0)))
    assert (h200["backend"], h200["gpu"], h200["tensorrt"], h200["sm"]) == ("trt", "NVIDIA H200", "10.3.0", "sm_90")
    assert fingerprint(TrtEnvironment("10.3.0", "NVIDIA L4", (8, 9))) != h200
    assert fingerprint(TrtEnvironment("10.4.0", "NVIDIA H200", (9, 0))) != h200


def test_unknown_backend_lists_trt():
    with pytest.raises(BackendError, match="ort, ov, ort-cuda, trt"):
        get_backend("tensorrt")


def test_ort_cuda_without_the_cuda_provider_is_one_line():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: see test_ort_cuda_matches_cpu")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        get_backend("ort-cuda")


# -- on a GPU -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(half_gmacs_bundle, tmp_path_factory):
    """A copy of the session's bundle: the engines are built into it."""
    return Path(shutil.copytree(half_gmacs_bundle, tmp_path_factory.mktemp("trt") / "bundle"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).standard_normal((9, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def trt_module():
    trt = pytest.importorskip("tensorrt", reason="tensorrt not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return trt


@pytest.fixture(scope="module")
def engines(trt_module, bundle, tmp_path_factory):
    """fp32 engines for ``bundle`` in ``<bundle>/trt``, built once (with a timing cache)."""
    from adavit_deploy.tensorrt.build import build_engines

    cache = tmp_path_factory.mktemp("cache") / "timing.cache"
    out = build_engines(bundle, timing_cache=cache)
    assert cache.is_file() and cache.stat().st_size > 0
    return out


def test_engine_manifest_records_the_build(trt_module, engines, bundle):
    from adavit_deploy.bundle import read_manifest
    from adavit_deploy.tensorrt.manifest import read_engine_manifest

    built, graphs = read_engine_manifest(engines), read_manifest(bundle)
    env = built.environment
    here = (trt_module.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    assert (env.tensorrt, env.gpu, env.compute_capability) == here
    assert built.precision == "fp32" and built.max_batch == 4 and built.token_edges == [5, 9, 13, 17]
    for name, entry in built.engines.items():
        assert entry.source_sha256 == graphs.artifacts[name].sha256
        assert (engines / entry.file).is_file()
        assert len(entry.profiles) == (4 if name.startswith(("attn", "mlp")) else 1)


def test_adaptive_runtime_on_tensorrt_matches_onnx_runtime(engines, bundle, images):
    want = load_bundle(bundle, backend="ort").infer(images)
    rt = load_bundle(bundle, backend="trt")
    got = rt.infer(images, batch_size=3)
    for key in ("head_select", "layer_select", "token_select"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
    np.testing.assert_allclose(got.logits, want.logits, atol=1e-3)
    np.testing.assert_allclose(rt.dense(images), load_bundle(bundle, backend="ort").dense(images), atol=1e-3)
    routed = [rt.runner(n) for n in rt.manifest.artifacts if n.startswith(("attn", "mlp"))]
    buckets = {i for r in routed for i, calls in enumerate(r.profile_calls) if calls}
    assert len(buckets) > 1, "every routed call fell into one token bucket: the test model does not vary"


def test_close_releases_contexts_engines_and_streams(engines, bundle, images):
    """Contexts go before their engines, the runtime that deserialized them last; a closed runtime refuses to run."""
    with load_bundle(bundle, backend="trt") as rt:
        rt.infer(images[:2])
        runners, backend = list(rt.runners.values()), rt.backend
    assert runners and all(r.closed and r.context is None and r.engine is None and r.stream is None for r in runners)
    assert backend.closed and backend.runtime is None
    with pytest.raises(BackendError, match="is closed"):
        rt.infer(images[:2])


def test_batch_above_the_engines_max_is_run_in_chunks(engines, bundle, images):
    rt = load_bundle(bundle, backend="trt")
    assert len(images) > 4  # the engines' max batch
    np.testing.assert_allclose(rt.dense(images), load_bundle(bundle, backend="ort").dense(images), atol=1e-3)


def test_engines_from_another_tensorrt_or_gpu_are_refused(engines, bundle, tmp_path):
    from adavit_deploy.runtime.backends.trt import TrtBackend

    for field, value in (("tensorrt", "9.9.9"), ("gpu", "Some Other GPU"), ("compute_capability", [1, 0])):
        other = tmp_path / field
        shutil.copytree(engines, other)
        d = json.loads((other / "engines.json").read_text())
        d["environment"][field] = value
        (other / "engines.json").write_text(json.dumps(d))
        with pytest.raises(BackendError) as exc:
            load_bundle(bundle, backend=TrtBackend(engines=other)).infer(np.zeros((1, 3, 32, 32), np.float32))
        assert "\n" not in str(exc.value) and "adavit-deploy build-trt" in str(exc.value)


def test_tampered_engine_is_refused(engines, bundle, tmp_path):
    from adavit_deploy.runtime.backends.trt import TrtBackend

    other = tmp_path / "tampered"
    shutil.copytree(engines, other)
    (other / "stem.engine").write_bytes(b"not an engine")
    with pytest.raises(BackendError, match="sha256"):
        load_bundle(bundle, backend=TrtBackend(engines=other)).infer(np.zeros((1, 3, 32, 32), np.float32))


def test_fp16(trt_module, bundle, images, tmp_path):
    """TensorRT 10: the FP16 builder flag on the fp32 graphs; 11: needs FP16 graphs (export --fp16)."""
    from adavit_deploy.runtime.backends.trt import TrtBackend
    from adavit_deploy.tensorrt.environment import tensorrt_major
    from adavit_deploy.tensorrt.build import build_engines

    if tensorrt_major(trt_module) >= 11:
        with pytest.raises(BundleError, match="no fp16 graphs"):
            build_engines(bundle, precision="fp16", out=tmp_path / "fp16")
        return
    out = build_engines(bundle, precision="fp16", out=tmp_path / "fp16")
    got = load_bundle(bundle, backend=TrtBackend(engines=out)).infer(images)
    want = load_bundle(bundle, backend="ort").infer(images)
    # a random model sits on its decision thresholds, so fp16 may flip some: a loose check
    assert np.isfinite(got.logits).all() and got.logits.shape == want.logits.shape
    assert (got.logits.argmax(1) == want.logits.argmax(1)).mean() >= 0.5


@pytest.fixture(scope="module")
def cuda_provider():
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


def test_ort_cuda_matches_cpu(cuda_provider, bundle, images):
    got = load_bundle(bundle, backend="ort-cuda").infer(images)
    want = load_bundle(bundle, backend="ort").infer(images)
    np.testing.assert_array_equal(got.token_select, want.token_select)
    np.testing.assert_allclose(got.logits, want.logits, atol=1e-3)
