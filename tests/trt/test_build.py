"""build-trt on CPU: what would be built (plan, profiles), argument checks, the graphs fed to TensorRT.

Building itself needs TensorRT and a GPU: tests/runtime/backends/test_trt.py. Here, everything
around it: the plan per precision and TensorRT major version, one-line CLI
errors (TensorRT is hidden with ``sys.modules["tensorrt"] = None`` so the
"not installed" path is tested on any machine), and the graphs TensorRT would
parse: valid ONNX, no data-dependent ops, only ops its ONNX parser supports,
and runnable at every profile's min / opt / max shapes.
"""

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from adavit_deploy.bundle import Artifact, read_manifest, resolve_bundle, variant_key
from adavit_deploy.cli import app
from adavit_deploy.errors import BackendError, BundleError, ConfigError
from adavit_deploy.runtime.backends import get_backend
from adavit_deploy.tensorrt.build import (
    GraphPlan,
    engine_loader,
    graph_names,
    plan_build,
    resolve_precision,
    validate_build_args,
)
from adavit_deploy.tensorrt.environment import import_polygraphy_trt
from adavit_deploy.tensorrt.profiles import ProfileSpec, ShapeRange, graph_profiles
from checks import cli_error as _one_line

#: Data-dependent ops TensorRT handles badly or not at all; the host routes instead.
FORBIDDEN_OPS = {"NonZero", "TopK", "Loop", "If", "Scan", "Unique", "Compress"}
#: Ops our graphs use, each "Y" in onnx-tensorrt docs/operators.md (TensorRT 10.x, opset 9-24).
TRT_PARSER_OPS = {
    "Add", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Equal", "Erf", "Expand", "Gather", "Gemm",
    "Greater", "Identity", "LayerNormalization", "MatMul", "Mul", "Reshape", "Shape", "Sigmoid", "Slice",
    "Softmax", "Split", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where", "Cast", "Sqrt", "Pow", "ReduceMean",
    "Exp", "ReduceSum",  # the T2T performer stem's random features and normaliser
}  # fmt: skip


@pytest.fixture(scope="module", params=["deit", "t2t"])
def bundle(request):
    """A ~50% GMACs bundle of each family (17 tokens, 3 blocks, 3 heads, max batch 4)."""
    return request.getfixturevalue("half_gmacs_bundle" if request.param == "deit" else "t2t_half_gmacs_bundle")


@pytest.fixture(scope="module")
def manifest(bundle):
    return read_manifest(bundle)


def _with_variants(manifest, precision, graphs=None):
    """The manifest as ``export --fp16/--int8`` extends it: a ``<graph>.<precision>`` artifact per graph."""
    arts = dict(manifest.artifacts)
    for g in graph_names(manifest) if graphs is None else graphs:
        a = manifest.artifacts[g]
        arts[variant_key(g, precision)] = Artifact(a.file.replace(".onnx", f".{precision}.onnx"), "f" * 64, a.inputs, a.outputs)
    return dataclasses.replace(manifest, artifacts=arts)


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` fails, as on a machine without it (whether or not this one has it)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# -- the plan --------------------------------------------------------------------------


def test_graph_names_are_the_fp32_graphs(manifest):
    names = graph_names(manifest)
    assert names[0] == "stem" and names[-2:] == ["head", "dense"]
    assert "constants" not in names
    assert {n.split("_")[0] for n in names} == {"stem", "policy", "attn", "mlp", "head", "dense"}
    assert graph_names(_with_variants(manifest, "fp16")) == names


@pytest.mark.parametrize("major", [10, 11])
def test_fp32_plan(manifest, major):
    plan = plan_build(manifest, "fp32", major)
    assert [p.graph for p in plan] == graph_names(manifest)
    assert all(p == GraphPlan(p.graph, p.graph, "fp32", strongly_typed=True, tf32=False) for p in plan)
    assert plan[0].builder_flags == ["-TF32"]


def test_fp16_on_tensorrt10_falls_back_to_the_builder_flag(manifest):
    plan = {p.graph: p for p in plan_build(manifest, "fp16", 10)}
    assert plan["attn_1"] == GraphPlan("attn_1", "attn_1", "fp16", strongly_typed=False, fp16_flag=True)
    assert plan["attn_1"].builder_flags == ["FP16"]
    assert plan["stem"].fp16_flag and plan["dense"].fp16_flag
    assert plan["policy_1"] == GraphPlan("policy_1", "policy_1", "fp32", strongly_typed=True, tf32=False)


@pytest.mark.parametrize("precision, major", [("fp16", 11), ("fp16", 12), ("int8", 10), ("int8", 11)])
def test_reduced_precision_without_its_graphs_is_one_clear_error(manifest, precision, major):
    with pytest.raises(BundleError) as exc:
        plan_build(manifest, precision, major, "b")
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"no {precision} graphs" in msg and f"export --{precision}" in msg


@pytest.mark.parametrize("precision, major", [("fp16", 10), ("fp16", 11), ("int8", 10), ("int8", 11)])
def test_reduced_precision_graphs_are_a_lookup(manifest, precision, major):
    plan = plan_build(_with_variants(manifest, precision), precision, major)
    assert [p.source for p in plan] == [f"{g}.{precision}" for g in graph_names(manifest)]
    assert all(p.strongly_typed and not p.fp16_flag and p.precision == precision for p in plan)


def test_partial_variants_are_refused(manifest):
    with pytest.raises(BundleError, match="fp16 graphs for 2 of"):
        plan_build(_with_variants(manifest, "fp16", ["stem", "head"]), "fp16", 11, "b")


def test_unknown_precision(manifest):
    with pytest.raises(ConfigError, match="unknown precision"):
        plan_build(manifest, "fp8", 10)


# -- arguments ----------------------------------------------------------------------------


def test_argument_validation(tmp_path):
    assert resolve_precision() == "fp32" and resolve_precision(fp16=True) == "fp16" and resolve_precision(int8=True) == "int8"
    with pytest.raises(ConfigError, match="exclude each other"):
        resolve_precision(True, True)
    validate_build_args(1, 0.5, tmp_path / "cache.bin", tmp_path / "new")
    for kwargs, match in [
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"workspace_gib": 0}, "workspace_gib must be > 0"),
        ({"workspace_gib": -2}, "workspace_gib must be > 0"),
        ({"workspace_gib": float("nan")}, "workspace_gib must be > 0"),
        ({"timing_cache": tmp_path}, "is a directory"),
    ]:
        with pytest.raises(ConfigError, match=match):
            validate_build_args(**kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        validate_build_args(out=tmp_path / "file")


def test_resolve_bundle(bundle, tmp_path, monkeypatch):
    assert resolve_bundle(bundle) == bundle
    with pytest.raises(BundleError, match="no such bundle directory"):
        resolve_bundle(tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match="default bundle export/bundles/ada_digits does not exist"):
        resolve_bundle(None)
    (tmp_path / "export/bundles/ada_digits").mkdir(parents=True)
    assert resolve_bundle(None).as_posix() == "export/bundles/ada_digits"


# -- the loaders (Polygraphy's; the GPU test builds with them) ----------------------------


class _Recorder:
    """Stands in for one Polygraphy loader class: records how it was constructed."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def add(self, name, min, opt, max):  # Profile.add
        self.args += ((name, min, opt, max),)
        return self


def test_engine_loader_hands_the_plan_to_polygraphy(tmp_path):
    fake = SimpleNamespace(**{n: type(n, (_Recorder,), {}) for n in
                              ["Profile", "CreateConfig", "NetworkFromOnnxPath", "EngineFromNetwork", "SaveEngine"]})  # fmt: skip
    plan = GraphPlan("attn_0", "attn_0", "fp16", strongly_typed=False, fp16_flag=True)
    profiles = [{"x": ShapeRange((1, 1, 8), (4, 5, 8), (4, 5, 8))}, {"x": ShapeRange((1, 6, 8), (4, 9, 8), (4, 9, 8))}]
    save = engine_loader(fake, tmp_path / "a.onnx", plan, profiles, tmp_path / "a.engine", {"WORKSPACE": 7}, tmp_path / "t.cache")
    assert type(save).__name__ == "SaveEngine" and save.args[1] == str(tmp_path / "a.engine")
    engine = save.args[0]
    network, config = engine.args
    assert type(engine).__name__ == "EngineFromNetwork" and engine.kwargs == {"save_timing_cache": str(tmp_path / "t.cache")}
    assert network.args == (str(tmp_path / "a.onnx"),) and network.kwargs == {"strongly_typed": False}
    kw = config.kwargs
    assert (kw["tf32"], kw["fp16"], kw["memory_pool_limits"], kw["load_timing_cache"]) == (True, True, {"WORKSPACE": 7}, str(tmp_path / "t.cache"))
    assert [p.args for p in kw["profiles"]] == [(("x", (1, 1, 8), (4, 5, 8), (4, 5, 8)),), (("x", (1, 6, 8), (4, 9, 8), (4, 9, 8)),)]


def test_without_polygraphy_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    with pytest.raises(BackendError) as exc:
        import_polygraphy_trt()
    assert "\n" not in str(exc.value) and "Polygraphy is not installed" in str(exc.value) and "[gpu]" in str(exc.value)


# -- the command line --------------------------------------------------------------------


def test_build_trt_without_tensorrt_is_one_line(bundle, no_tensorrt):
    result = CliRunner().invoke(app, ["build-trt", str(bundle), "--fp16", "--max-batch", "2", "--workspace", "1.5"])
    _one_line(result, "TensorRT is not installed", "pip install 'adavit-deploy[gpu]'", "NVIDIA GPU")
    assert not (bundle / "trt").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--max-batch", "0"], ["--max-batch must be >= 1, got 0"]),
        (["--workspace", "0"], ["--workspace must be > 0 GiB"]),
        (["--workspace", "-1"], ["--workspace must be > 0 GiB"]),
        (["--fp16", "--int8"], ["--fp16 and --int8 exclude each other"]),
        (["--int8"], ["no int8 graphs", "export --int8"]),  # before the TensorRT check: same on every machine
    ],
    ids=["max-batch", "workspace-0", "workspace-neg", "fp16+int8", "int8-without-qdq"],
)
def test_build_trt_argument_errors(bundle, no_tensorrt, args, fragments):
    _one_line(CliRunner().invoke(app, ["build-trt", str(bundle), *args]), *fragments)


def test_build_trt_bundle_errors(tmp_path, monkeypatch, no_tensorrt):
    runner = CliRunner()
    _one_line(runner.invoke(app, ["build-trt", str(tmp_path / "nope")]), "no such bundle directory", "adavit-deploy export")
    (tmp_path / "empty").mkdir()
    _one_line(runner.invoke(app, ["build-trt", str(tmp_path / "empty")]), "not a bundle")
    monkeypatch.chdir(tmp_path)
    _one_line(runner.invoke(app, ["build-trt"]), "default bundle export/bundles/ada_digits does not exist")


def test_build_trt_help():
    result = CliRunner().invoke(app, ["build-trt", "--help"])
    assert result.exit_code == 0
    for option in ("--fp16", "--int8", "--max-batch", "--workspace", "--timing-cache", "--out"):
        assert option in result.output


# -- the graphs TensorRT would parse ------------------------------------------------------


def test_graphs_are_valid_and_trt_friendly(bundle, manifest):
    for name in graph_names(manifest):
        model = onnx.load(str(bundle / manifest.artifacts[name].file))
        onnx.checker.check_model(model, full_check=True)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & FORBIDDEN_OPS, (name, ops & FORBIDDEN_OPS)
        assert ops <= TRT_PARSER_OPS, (name, ops - TRT_PARSER_OPS)
        assert model.opset_import[0].version >= 17


def _inputs(artifact, shapes, rng):
    feed = {}
    for t in artifact.inputs:
        shape = shapes[t.name]
        if t.name == "heads":
            feed[t.name] = np.arange(shape[0], dtype=np.int64)
        elif t.name == "key_bias":
            feed[t.name] = np.zeros(shape, np.float32)
        else:
            feed[t.name] = rng.standard_normal(shape, dtype=np.float32)
    return feed


def test_every_profile_shape_runs_on_onnx_runtime(bundle, manifest):
    """Each profile's min, opt and max shapes are shapes the graph really takes (the ONNX TensorRT gets)."""
    spec = ProfileSpec.from_manifest(manifest)
    assert spec.max_batch == 4 and spec.token_edges == (5, 9, 13, 17)
    backend, rng = get_backend("ort"), np.random.default_rng(0)
    for name in graph_names(manifest):
        art = manifest.artifacts[name]
        runner = backend.runner(bundle, art)
        profiles = graph_profiles(art.inputs, spec, name)
        assert len(profiles) == (4 if name.startswith(("attn", "mlp")) else 1)
        for profile in profiles:
            for which in ("min", "opt", "max"):
                shapes = {k: getattr(r, which) for k, r in profile.items()}
                out = runner(**_inputs(art, shapes, rng))
                batch = shapes[art.inputs[0].name][0]
                for spec_out, value in zip(art.outputs, out.values()):
                    assert value.shape[0] == batch, (name, which, spec_out.name, value.shape)
                    assert np.isfinite(value).all() if value.dtype.kind == "f" else True
