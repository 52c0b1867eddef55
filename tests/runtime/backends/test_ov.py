"""The OpenVINO backend (``runtime/backends/ov.py``): exact in fp32, bf16 where the CPU has it, its cache."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from checks import assert_matches, one_line

from adavit_deploy.errors import BackendError, ConfigError
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.backends import get_backend

ov = pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")

from adavit_deploy.runtime.backends.ov import OvBackend  # noqa: E402

HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bfloat16 instructions (OpenVINO: no BF16)")


@pytest.fixture(scope="session")
def ov_cache(tmp_path_factory):
    """One compiled-model cache for the session: a graph compiled once is imported by later tests."""
    return tmp_path_factory.mktemp("ov-cache")


@pytest.mark.parametrize("batch", [8, 1])
def test_fp32_matches_the_reference_fixtures(reference_case, reference_bundle, batch, ov_cache):
    """The public fixtures on ov, as on ort: decisions equal, logits within 1e-4, batched and one at a time."""
    with load_bundle(reference_bundle(reference_case.name), "ov", threads=1, cache_dir=ov_cache) as rt:
        res = rt.infer(reference_case.images, batch_size=batch)
    assert_matches(res, reference_case.logits, reference_case.decisions)


def test_every_graph_is_compiled_at_an_explicit_precision(half_gmacs_bundle):
    """OpenVINO's own default on a bf16 CPU is bf16: fp32 must say f32, bf16 must say bf16."""
    images = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    precisions = ["fp32", "bf16"] if HAS_BF16 else ["fp32"]
    for precision, want in zip(precisions, (ov.Type.f32, ov.Type.bf16)):
        with load_bundle(half_gmacs_bundle, "ov", threads=1, precision=precision) as rt:
            rt.infer(images)
            rt.dense(images)
            hints = {n: r.compiled.get_property("INFERENCE_PRECISION_HINT") for n, r in rt.runners.items()}
        assert len(hints) > 5 and set(hints.values()) == {want}, hints


@needs_bf16
def test_bf16_runs_the_fp32_graphs_close_to_fp32(half_gmacs_bundle):
    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32), dtype=np.float32)
    with load_bundle(half_gmacs_bundle, "ov", threads=1) as rt, load_bundle(half_gmacs_bundle, "ov", threads=1, precision="bf16") as bf:
        want, got = rt.infer(images), bf.infer(images)
        files = {r.artifact.file for r in bf.runners.values()}
    assert all(f.count(".") == 1 for f in files), files  # attn_1.onnx, not attn_1.bf16.onnx: no bf16 graph exists
    assert np.abs(got.logits - want.logits).max() < 0.5
    assert np.mean(got.logits.argmax(1) == want.logits.argmax(1)) >= 0.75


def test_bf16_is_refused_off_openvino_and_on_a_cpu_without_it(half_gmacs_bundle, monkeypatch):
    with pytest.raises(BackendError) as e:
        load_bundle(half_gmacs_bundle, "ort", precision="bf16")
    one_line(e, "bf16 runs on the ov backend", "not on ort")
    monkeypatch.setattr(OvBackend, "has_bf16", lambda self: False)
    with pytest.raises(BackendError) as e:
        load_bundle(half_gmacs_bundle, "ov", precision="bf16")
    one_line(e, "no bfloat16 instructions", "avx512_bf16", "OpenVINO would ignore the bf16 hint and run f32", "use fp32")


def test_unknown_precision_names_the_valid_ones(half_gmacs_bundle):
    with pytest.raises(ConfigError) as e:
        load_bundle(half_gmacs_bundle, "ov", precision="fp8")
    one_line(e, "unknown precision 'fp8'", "fp32, fp16, int8, bf16")


def test_int8_graphs_run_on_openvino(tmp_path, make_checkpoint):
    """The bundle's Q/DQ graphs: OpenVINO reads them as they are, close to fp32."""
    from adavit_deploy.export import export_bundle

    rng = np.random.default_rng(2)
    np.savez(tmp_path / "calib.npz", images=rng.standard_normal((16, 3, 32, 32), dtype=np.float32))
    bundle = export_bundle(make_checkpoint(), tmp_path / "b", calibration=tmp_path / "calib.npz", int8=True)
    images = rng.standard_normal((4, 3, 32, 32), dtype=np.float32)
    with load_bundle(bundle, "ov", threads=1) as fp32, load_bundle(bundle, "ov", threads=1, precision="int8") as int8:
        want, got = fp32.infer(images), int8.infer(images)
        assert any(r.artifact.file.endswith(".int8.onnx") for r in int8.runners.values())
    assert np.abs(got.logits - want.logits).max() < 0.5


def test_the_compiled_model_cache_is_keyed_and_reused(half_gmacs_bundle, tmp_path):
    images = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with load_bundle(half_gmacs_bundle, "ov", threads=1, cache_dir=tmp_path / "cache") as rt:
        want = rt.infer(images)
    blobs = sorted((tmp_path / "cache").iterdir())
    assert blobs and all(b.suffix == ".blob" and b.stat().st_size > 0 for b in blobs)
    assert not [b for b in blobs if b.name.startswith(".")]  # written atomically: no staging left
    stamps = {b: b.stat().st_mtime_ns for b in blobs}
    with load_bundle(half_gmacs_bundle, "ov", threads=1, cache_dir=tmp_path / "cache") as rt:
        got = rt.infer(images)  # imported from the cache: nothing rewritten
    assert {b: b.stat().st_mtime_ns for b in sorted((tmp_path / "cache").iterdir())} == stamps
    np.testing.assert_array_equal(got.logits, want.logits)
    # a corrupt blob is compiled again and rewritten, not trusted; another thread count is another blob
    for blob in blobs:
        blob.write_bytes(b"not a compiled model")
    with load_bundle(half_gmacs_bundle, "ov", threads=1, cache_dir=tmp_path / "cache") as rt:
        np.testing.assert_array_equal(rt.infer(images).logits, want.logits)
    assert all(b.read_bytes() != b"not a compiled model" for b in blobs)
    with load_bundle(half_gmacs_bundle, "ov", threads=2, cache_dir=tmp_path / "cache") as rt:
        np.testing.assert_allclose(rt.infer(images).logits, want.logits, atol=1e-5)
    assert len(list((tmp_path / "cache").iterdir())) > len(blobs)


def test_the_cache_name_changes_with_what_the_blob_depends_on(half_gmacs_bundle):
    from adavit_deploy.bundle import read_manifest

    art = read_manifest(half_gmacs_bundle).artifacts["attn_1"]
    backend = OvBackend(1, cache_dir="c")
    config = backend.config(art, "fp32")
    name = backend._blob(art, config)
    assert backend._blob(art, backend.config(art, "bf16")) != name
    assert backend._blob(type(art)(art.file, "0" * 64, art.inputs, art.outputs), config) != name  # another graph
    backend.version = "2099.1"
    assert backend._blob(art, config) != name  # another OpenVINO


def test_cache_dir_is_for_openvino_only():
    with pytest.raises(ConfigError) as e:
        get_backend("ort", cache_dir="x")
    one_line(e, "cache_dir", "ov backend")


def test_a_missing_openvino_is_one_line_naming_the_extra(half_gmacs_bundle):
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from adavit_deploy import load_bundle, AdaViTDeployError\n"
        "try:\n    load_bundle(sys.argv[1], 'ov')\nexcept AdaViTDeployError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(half_gmacs_bundle)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "openvino is not installed: pip install 'adavit-deploy[ov]'"


def test_tuning_ov_keeps_the_ort_table(tmp_path, half_gmacs_bundle):
    import shutil

    from adavit_deploy.runtime.tactics import read_tables
    from adavit_deploy.tuner import tune

    bundle = tmp_path / "b"
    shutil.copytree(half_gmacs_bundle, bundle)
    tune(bundle, (1,), threads=1, reps=1)
    tune(bundle, (1,), threads=1, reps=1, backend="ov")
    tables = read_tables(bundle)
    assert sorted(tables) == ["ort/fp32", "ov/fp32"]
    assert tables["ov/fp32"].machine["openvino"] == ov.get_version()
    with load_bundle(bundle, "ov", threads=1) as rt, load_bundle(bundle, "ort", threads=1) as ort:
        assert rt.tactics.timings == tables["ov/fp32"].timings and ort.tactics.timings == tables["ort/fp32"].timings
    assert json.loads((bundle / "tactics.json").read_text())["schema_version"] == 2
