"""The manifest as untrusted input: paths confined to the bundle, types checked, graphs as the config implies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from adavit_deploy import bundle as bundle_module
from adavit_deploy.bundle import MANIFEST, read_manifest
from adavit_deploy.config import AdaViTConfig
from adavit_deploy.errors import BundleError
from adavit_deploy.graphs import graphs
from adavit_deploy.runtime import load_bundle


@pytest.fixture
def bundle(half_gmacs_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the module's tiny bundle, free to tamper with."""
    return Path(shutil.copytree(half_gmacs_bundle, tmp_path / "bundle"))


def _edit(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle / MANIFEST
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _refused(bundle: Path, *fragments: str, verify: bool = True) -> str:
    with pytest.raises(BundleError) as exc:
        read_manifest(bundle, verify=verify)
    msg = str(exc.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


# -- artifact paths -----------------------------------------------------------------------


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file read_manifest hashes (the refused ones must never be among them)."""
    hashed: list[Path] = []
    real = bundle_module.sha256

    def spy(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(bundle_module, "sha256", spy)
    return hashed


@pytest.mark.parametrize("verify", [True, False])
def test_traversal_path_is_refused_before_any_read(bundle, no_reads, verify):
    def point_outside(d):
        d["artifacts"]["stem"]["file"] = "../../../../etc/passwd"

    _edit(bundle, point_outside)
    _refused(bundle, "'../../../../etc/passwd' points outside", verify=verify)
    assert no_reads == []


def test_absolute_path_to_another_bundles_graph_is_refused(bundle, half_gmacs_bundle, no_reads):
    other = half_gmacs_bundle / "stem.onnx"  # same graph, same sha256: only the path is wrong

    def point_elsewhere(d):
        d["artifacts"]["stem"]["file"] = str(other)

    _edit(bundle, point_elsewhere)
    _refused(bundle, "points outside")
    assert no_reads == []
    with pytest.raises(BundleError, match="points outside"):
        load_bundle(bundle)


def test_symlink_out_of_the_bundle_is_refused(bundle, tmp_path, no_reads):
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / "stem.onnx", outside)
    (bundle / "stem.onnx").unlink()
    (bundle / "stem.onnx").symlink_to(outside)  # sha256 still matches
    _refused(bundle, "'stem.onnx' points outside")
    assert no_reads == []


# -- malformed manifests: one line, never a traceback -----------------------------------------


def _set(*keys: str, value: Any) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


MALFORMED = {
    "artifacts as a list": (_set("artifacts", value=[]), "artifacts should be an object"),
    "max_batch 0": (_set("max_batch", value=0), "max_batch must be >= 1, got 0"),
    "budget fraction NaN": (_set("budgets", "native", "gmacs_fraction", value=float("nan")), "need finite values >= 0"),
    "token edges reversed": (_set("budgets", "native", "token_edges", value=[17, 9]), "need increasing counts >= 1"),
    "opt_heads 0": (_set("budgets", "native", "opt_heads", value=0), "opt_heads 0 is not >= 1"),
    "a threshold 'x'": (_set("model", "thresholds", "head", value="x"), "model.thresholds.head should be a number"),
    "budget threshold 'x'": (_set("budgets", "native", "thresholds", "token", value="x"), "budgets.native.thresholds.token"),
    "missing opset": (_drop("opset"), "lacks ['opset']"),
    "depth as a string": (_set("model", "depth", value="3"), "model.depth should be an integer"),
    "depth as a bool": (_set("model", "depth", value=True), "model.depth should be an integer"),
    "max_batch null": (_set("max_batch", value=None), "max_batch should be an integer"),
    "shape of strings and floats": (_set("artifacts", "head", "inputs", 0, "shape", value=[1.5]), "shape[0]"),
    "unknown model key": (_set("model", "depth_typo", value=3), "unknown keys ['depth_typo']"),
    "artifact without sha256": (lambda d: d["artifacts"]["head"].pop("sha256"), "lacks ['sha256']"),
    "model not divisible": (_set("model", "num_heads", value=5), "not divisible by 5 heads"),
    "eps past float": (_set("model", "eps", value=10**400), "model.eps should be a number within float range"),
    "eps NaN": (_set("model", "eps", value=float("nan")), "LayerNorm eps nan is not a positive number"),
    "no heads": (_set("model", "num_heads", value=0), "num_heads 0 is not >= 1"),
    "std 0": (_set("model", "preprocess", "std", value=[0, 0, 0]), "std > 0"),
    "mean NaN": (_set("model", "preprocess", "mean", value=[float("nan")] * 3), "mean [nan, nan, nan]"),
    "depth 10**9": (_set("model", "depth", value=10**9), "artifacts cannot hold a 1000000000-block model"),
}
#: caught by the model config's own checks, not by the reader's types
_CONFIG = ("model not divisible", "eps NaN", "no heads", "std 0", "mean NaN", "depth 10**9", "max_batch 0", "budget fraction NaN",
           "token edges reversed", "opt_heads 0")


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_one_line(bundle, case):
    change, fragment = MALFORMED[case]
    _edit(bundle, change)
    _refused(bundle, "" if case in _CONFIG else "malformed manifest", fragment)


@pytest.mark.parametrize(
    "text, fragment",
    [(b'{"schema": "\xff\xfe"}', "not UTF-8 JSON"), (b"[1, 2]", "a JSON list, not an object"), (b"{", "not UTF-8 JSON"),
     (b"[" * 10**5 + b"]" * 10**5, "maximum recursion depth"), (b'{"opset": ' + b"9" * 5000 + b"}", "4300 digits")],  # fmt: skip
)
def test_unreadable_manifest_is_one_line(bundle, text, fragment):
    (bundle / MANIFEST).write_bytes(text)
    _refused(bundle, fragment)


# -- the manifest against its config and its graphs ---------------------------------------------


def test_graphs_of_a_config_are_what_export_wrote(half_gmacs_bundle):
    manifest = read_manifest(half_gmacs_bundle)
    expected = graphs(manifest.model)
    assert [k for k in manifest.artifacts if k != "constants"] == list(expected)
    for name, graph in expected.items():
        assert [t.name for t in manifest.artifacts[name].inputs] == [p.name for p in graph.inputs]
        assert [t.name for t in manifest.artifacts[name].outputs] == [p.name for p in graph.outputs]
    cfg = manifest.model
    assert expected["policy_1"].outputs[1].shape == ("batch", cfg.num_heads)
    assert expected["stem"].outputs[0].shape == ("batch", cfg.num_tokens, cfg.embed_dim)
    assert [p.name for p in expected["attn_1"].inputs] == ["x", "heads", "key_bias"]
    assert not expected["policy_1"].converts_to("fp16") and not expected["head"].converts_to("int8")


def test_layout_decides_which_graphs_exist():
    cfg = AdaViTConfig.from_flags(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, mlp_hidden=96,
                                  ada_token=False, ada_layer=False, keep_layers=2)  # fmt: skip
    g = graphs(cfg)
    assert list(g) == [
        "stem", "attn_0", "mlp_0", "attn_1", "mlp_1", "policy_2", "attn_2", "mlp_2", "attn_masked_2", "mlp_masked_2", "head", "dense"
    ]  # fmt: skip
    assert [p.name for p in g["policy_2"].outputs] == ["heads"]
    assert [(p.name, p.shape) for p in g["attn_masked_2"].inputs] == [("x", ("batch", "tokens", 48)), ("head_mask", ("batch", 3))]
    assert [p.name for p in g["attn_0"].inputs] == ["x"]


def test_edited_num_heads_is_refused(bundle):
    _edit(bundle, _set("model", "num_heads", value=6))  # 48 / 6 divides: only the graphs disagree
    _refused(bundle, "policy_1", "heads(batch, 3)", "heads(batch, 6)", "disagrees")


def test_edited_num_heads_with_matching_signatures_is_refused_by_the_graph_file(bundle):
    """A manifest edited consistently passes read_manifest; the graph file it points to does not."""

    def consistent(d):
        d["model"]["num_heads"] = 6
        for key, art in d["artifacts"].items():
            for t in art["outputs"]:
                if t["name"] == "heads":
                    t["shape"] = ["batch", 6]
            for t in art["inputs"]:
                if t["name"] == "head_mask":
                    t["shape"] = ["batch", 6]

    _edit(bundle, consistent)
    rt = load_bundle(bundle)
    images = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(BundleError, match="policy_1.onnx: the graph's inputs/outputs are not the ones the manifest"):
        rt.infer(images)


@pytest.mark.parametrize("depth, fragment", [(2, "head_select names blocks [2] outside 0..1"), (4, "no artifact")])
def test_wrong_depth_is_refused(bundle, depth, fragment):
    _edit(bundle, _set("model", "depth", value=depth))
    _refused(bundle, fragment)


def test_swapped_graphs_are_refused(bundle):
    def swap(d):
        a, m = d["artifacts"]["attn_0"], d["artifacts"]["mlp_0"]
        (a["file"], a["sha256"]), (m["file"], m["sha256"]) = (m["file"], m["sha256"]), (a["file"], a["sha256"])

    _edit(bundle, swap)
    rt = load_bundle(bundle)  # every sha256 matches its (swapped) file
    with pytest.raises(BundleError, match="mlp_0.onnx: the graph's inputs/outputs are not the ones the manifest records"):
        rt.infer(np.zeros((2, 3, 32, 32), np.float32))


def test_signature_recorded_under_another_graph_is_refused(bundle):
    def swap(d):
        d["artifacts"]["attn_0"], d["artifacts"]["mlp_0"] = d["artifacts"]["mlp_0"], d["artifacts"]["attn_0"]

    _edit(bundle, swap)
    _refused(bundle, "attn_0 takes x(batch, tokens, 48) -> y", "the config implies x(batch, tokens, 48), key_bias")


def test_extra_or_missing_artifacts_are_refused(bundle):
    _edit(bundle, lambda d: d["artifacts"].pop("mlp_2"))
    _refused(bundle, "no artifact mlp_2")
    _edit(bundle, lambda d: d["artifacts"].__setitem__("mlp_2.int4", d["artifacts"]["head"]))
    _refused(bundle, "'mlp_2.int4' has an unknown precision suffix")
