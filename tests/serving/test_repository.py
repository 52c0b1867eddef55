"""The repository writer: config.pbtxt from the manifest, model.py, a verifiable bundle copy, atomic errors."""

from __future__ import annotations

from importlib import resources

import pytest

from adavit_deploy.bundle import read_manifest
from adavit_deploy.errors import AdaViTDeployError, BundleError, ConfigError
from adavit_deploy.serving import RepositoryOptions, write_repository


def test_writes_config_model_and_bundle(bundle, tmp_path):
    options = RepositoryOptions(name="m", max_batch=8, queue_delay_us=500, instances=2, threads=1, with_dense=True)
    repo = write_repository(bundle, tmp_path / "repo", options)
    cfg = read_manifest(bundle).model
    config = (repo / "m" / "config.pbtxt").read_text()
    assert 'name: "m"' in config and 'backend: "python"' in config and "max_batch_size: 8" in config
    assert f'{{ name: "images", data_type: TYPE_FP32, dims: [ {cfg.in_chans}, {cfg.img_size}, {cfg.img_size} ] }}' in config
    assert f'{{ name: "logits", data_type: TYPE_FP32, dims: [ {cfg.num_classes} ] }}' in config
    assert f'{{ name: "token_select", data_type: TYPE_FP32, dims: [ {len(cfg.token_select)}, {cfg.num_tokens} ] }}' in config
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in config
    assert "instance_group [ { count: 2, kind: KIND_CPU } ]" in config
    for key, value in (("mode", "adaptive"), ("threads", "1"), ("budget", "native"), ("precision", "fp32"), ("backend", "ort")):
        assert f'parameters: {{ key: "{key}", value: {{ string_value: "{value}" }} }}' in config
    template = resources.files("adavit_deploy.serving").joinpath("model.py").read_text()
    for model in ("m", "m_dense"):
        assert (repo / model / "1" / "model.py").read_text() == template
        assert read_manifest(repo / model / "1" / "bundle").model == cfg  # copied whole: sha256 sums verify
    dense = (repo / "m_dense" / "config.pbtxt").read_text()
    assert 'string_value: "dense"' in dense and "head_select" not in dense and 'name: "logits"' in dense
    assert sorted(p.name for p in repo.iterdir()) == ["m", "m_dense"]


def test_without_dense_one_model(bundle, tmp_path):
    repo = write_repository(bundle, tmp_path / "repo")
    assert [p.name for p in repo.iterdir()] == ["adavit"]


@pytest.mark.parametrize(
    "options, error, message",
    [
        (RepositoryOptions(budget="0.3"), BundleError, "has no budget 0.3"),
        (RepositoryOptions(precision="int8"), ConfigError, "no int8 graphs"),
        (RepositoryOptions(precision="fp8"), ConfigError, "unknown precision 'fp8'"),
        (RepositoryOptions(name="a b"), ConfigError, "model name 'a b'"),
        (RepositoryOptions(max_batch=0), ConfigError, "max_batch must be >= 1, got 0"),
        (RepositoryOptions(backend="tvm"), ConfigError, "unknown backend 'tvm'"),
    ],
)
def test_refuses_bad_options_and_writes_nothing(bundle, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        write_repository(bundle, tmp_path / "repo", options)
    assert list(tmp_path.iterdir()) == []


def test_refuses_tampered_bundle_and_existing_out(bundle, tmp_path):
    repo = write_repository(bundle, tmp_path / "repo")
    with pytest.raises(BundleError, match="already exists: pass overwrite=True"):
        write_repository(bundle, repo)
    copy = repo / "adavit" / "1" / "bundle"
    with open(copy / "head.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(AdaViTDeployError, match="head.onnx"):
        write_repository(copy, tmp_path / "again")
    assert not (tmp_path / "again").exists()
