"""engines.json: round trip and the load-time TensorRT version / GPU / source checks (fabricated metadata, CPU)."""

from __future__ import annotations

import json

import pytest

from adavit_deploy.bundle import Artifact
from adavit_deploy.errors import BackendError, BundleError
from adavit_deploy.tensorrt.manifest import (
    EngineEntry,
    EngineManifest,
    TrtEnvironment,
    check_entry,
    check_environment,
    read_engine_manifest,
)
from adavit_deploy.tensorrt.profiles import ShapeRange
from checks import one_line as _one_line

H100 = TrtEnvironment("10.8.0.43", "NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture
def manifest() -> EngineManifest:
    entry = EngineEntry(
        file="attn_0.engine",
        sha256="e" * 64,
        graph_file="attn_0.onnx",
        graph_sha256="a" * 64,
        source_file="attn_0.onnx",
        source_sha256="a" * 64,
        precision="fp32",
        strongly_typed=True,
        builder_flags=["-TF32"],
        profiles=[{"x": ShapeRange((1, 1, 8), (4, 9, 8), (4, 9, 8))}, {"x": ShapeRange((1, 10, 8), (4, 17, 8), (4, 17, 8))}],
    )
    return EngineManifest(H100, "fp32", 4, [9, 17], {"attn_0": entry}, workspace_bytes=1 << 30, producer={"adavit_deploy": "0.1.0"})


def test_round_trip(manifest, tmp_path):
    (tmp_path / "engines.json").write_text(manifest.to_json())
    back = read_engine_manifest(tmp_path)
    assert back == manifest
    d = json.loads(manifest.to_json())
    assert d["environment"] == {"tensorrt": "10.8.0.43", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}
    engine = d["engines"]["attn_0"]
    assert (engine["source_file"], engine["source_sha256"]) == ("attn_0.onnx", "a" * 64)
    assert engine["profiles"][1]["x"] == {"min": [1, 10, 8], "opt": [4, 17, 8], "max": [4, 17, 8]}
    assert d["precision"] == "fp32" and d["token_edges"] == [9, 17]


def test_same_environment_passes(manifest):
    check_environment(manifest.environment, H100, "b/trt", "b")


@pytest.mark.parametrize(
    "here, fragments",
    [
        (TrtEnvironment("10.9.0.34", H100.gpu, (9, 0)), ("TensorRT 10.8.0.43", "TensorRT 10.9.0.34")),
        (TrtEnvironment("11.0.0.1", H100.gpu, (9, 0)), ("TensorRT 11.0.0.1",)),
        (TrtEnvironment(H100.tensorrt, "NVIDIA A100-SXM4-80GB", (8, 0)), ("NVIDIA A100-SXM4-80GB (sm_80)", "sm_90")),
        (TrtEnvironment(H100.tensorrt, "NVIDIA H100 PCIe", (9, 0)), ("NVIDIA H100 PCIe",)),
        (TrtEnvironment(H100.tensorrt, H100.gpu, (8, 9)), ("sm_89",)),
    ],
    ids=["patch-version", "major-version", "other-gpu", "same-arch-other-model", "other-cc"],
)
def test_other_tensorrt_or_gpu_is_refused(manifest, here, fragments):
    with pytest.raises(BackendError) as exc:
        check_environment(manifest.environment, here, "b/trt", "b")
    _one_line(exc, "b/trt", *fragments, "rebuild them with `adavit-deploy build-trt b`")


def test_engine_from_another_export_is_refused(manifest):
    entry = manifest.engines["attn_0"]
    check_entry(entry, Artifact("attn_0.onnx", "a" * 64), "b/trt", "b", source_sha256="a" * 64)
    with pytest.raises(BackendError) as exc:
        check_entry(entry, Artifact("attn_0.onnx", "b" * 64), "b/trt", "b")
    _one_line(exc, "attn_0.engine", "build-trt b")
    with pytest.raises(BackendError):  # the fp16 / Q/DQ source changed since the build
        check_entry(entry, Artifact("attn_0.onnx", "a" * 64), "b/trt", "b", source_sha256="c" * 64)


def test_lookup_by_graph_file(manifest):
    assert manifest.entry_for(Artifact("attn_0.onnx", "a" * 64), "b/trt").file == "attn_0.engine"
    with pytest.raises(BackendError) as exc:
        manifest.entry_for(Artifact("mlp_0.onnx", "m" * 64), "b/trt", "b")
    _one_line(exc, "no TensorRT engine for mlp_0.onnx", "build-trt b")


def test_missing_or_malformed_manifest(manifest, tmp_path):
    with pytest.raises(BackendError) as exc:
        read_engine_manifest(tmp_path / "trt", "bundle")
    _one_line(exc, "engines.json missing", "adavit-deploy build-trt bundle")
    (tmp_path / "engines.json").write_text("{not json")
    with pytest.raises(BackendError, match="malformed"):
        read_engine_manifest(tmp_path)
    d = json.loads(manifest.to_json())
    del d["environment"]["compute_capability"]
    (tmp_path / "engines.json").write_text(json.dumps(d))
    with pytest.raises(BackendError, match="malformed"):
        read_engine_manifest(tmp_path)
    d = json.loads(manifest.to_json())
    d["schema_version"] = 99
    (tmp_path / "engines.json").write_text(json.dumps(d))
    with pytest.raises(BackendError, match="version 99"):
        read_engine_manifest(tmp_path)
    (tmp_path / "engines.json").write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(BackendError, match="not an adavit-deploy TensorRT engine manifest"):
        read_engine_manifest(tmp_path)


@pytest.mark.parametrize("file", ["../../outside.engine", "/etc/passwd"])
def test_engine_paths_outside_the_engine_dir_are_refused(manifest, tmp_path, file):
    manifest.engines["attn_0"].file = file
    engines = tmp_path / "trt"
    engines.mkdir()
    (engines / "engines.json").write_text(manifest.to_json())
    with pytest.raises(BundleError) as exc:
        read_engine_manifest(engines)
    _one_line(exc, "points outside", "build-trt")


@pytest.mark.parametrize("text", [b"\xff\xfe{", b"[]", b'{"schema": "adavit-deploy/trt-engines", "schema_version": 2}'])
def test_malformed_engine_manifest_is_one_line(tmp_path, text):
    (tmp_path / "engines.json").write_bytes(text)
    with pytest.raises(BackendError) as exc:
        read_engine_manifest(tmp_path)
    _one_line(exc, "engines.json")


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: d.update(max_batch=2.7), "max_batch should be an integer, got 2.7"),
        (lambda d: d["environment"].update(compute_capability=[9]), "environment.compute_capability should be a list of 2"),
        (lambda d: d["environment"].update(compute_capability=["9", "0"]), "compute_capability[0] should be an integer"),
        (lambda d: d["engines"]["attn_0"].update(strongly_typed="yes"), "engines.attn_0.strongly_typed should be true or false"),
        (lambda d: d["engines"]["attn_0"].pop("graph_sha256"), "engines.attn_0 lacks ['graph_sha256']"),
        (lambda d: d["engines"]["attn_0"]["profiles"][0]["x"].update(max=[4, "9", 8]), "profiles[0].x.max[1] should be an integer"),
        (lambda d: d["engines"]["attn_0"].update(tactic="x"), "engines.attn_0 has unknown keys ['tactic']"),
    ],
    ids=["max_batch-float", "cc-short", "cc-strings", "typed-str", "graph-no-sha", "shape-str", "unknown-key"],
)
def test_every_field_is_typed_on_load(manifest, tmp_path, edit, says):
    """No silent int() of 2.7 or "9": a wrong field is one line naming it and the rebuild."""
    d = json.loads(manifest.to_json())
    edit(d)
    (tmp_path / "engines.json").write_text(json.dumps(d))
    with pytest.raises(BackendError) as exc:
        read_engine_manifest(tmp_path)
    _one_line(exc, "engines.json", says, "adavit-deploy build-trt")
