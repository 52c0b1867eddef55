"""``bench``: the report's schema and internal consistency, exact parity, files written, one-line errors.

Wall-clock values are never asserted: only that the figures agree with each
other. Few iterations and tiny models keep this file fast.
"""

from __future__ import annotations

import json
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adavit_deploy.bench import BenchReport, bench, cycled_batches, parse_batch_sizes, parse_engines, time_engines, times
from adavit_deploy.bench.report import comparison, result_row
from adavit_deploy.bundle import read_manifest
from adavit_deploy.cli import app
from adavit_deploy.errors import ConfigError, InputError
from adavit_deploy.export import export_bundle
from checks import cli_error as _one_line_error

QUICK = dict(iterations=2, warmup=1, memory=False, baselines=False)  # the other CPU backends: their own test


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def bundle(half_gmacs_bundle):
    """One export for the module: bench only reads its bundle."""
    return half_gmacs_bundle


def test_report_schema_speedups_and_exact_parity(bundle, tmp_path):
    images = np.random.default_rng(3).standard_normal((5, 3, 32, 32), dtype=np.float32)
    report = bench(bundle, batch_sizes="1,2", images=images, **QUICK)
    d = json.loads(json.dumps(report.to_dict()))  # JSON-serialisable as it is
    assert {"results", "comparisons", "parity", "routing", "environment"} <= set(d)
    assert [(r["engine"], r["batch_size"]) for r in d["results"]] == [
        (e, b) for b in (1, 2) for e in ("adaptive", "dense", "reference")
    ]
    for r in d["results"]:
        assert set(r["latency_ms"]) >= {"p50", "p90", "p99"}
        assert r["gmacs_mean"] > 0 and r["iterations"] == 2 and r["peak_rss_mib"] is None
    dense_g = d["gmacs"]["dense"]
    for c in d["comparisons"]:
        b = c["batch_size"]
        row = {e: report.result(e, b) for e in ("adaptive", "dense", "reference")}
        # the reference decides like the runtime, and computes the dense model anyway
        assert row["reference"]["gmacs_mean"] == pytest.approx(row["adaptive"]["gmacs_mean"])
        assert row["reference"]["gmacs_executed_mean"] == row["dense"]["gmacs_mean"] == dense_g
    p = d["parity"]
    assert p["samples"] == 5 and p["decision_agreement"] == 1.0 and p["top1_agreement"] == 1.0
    assert p["max_abs_logit_diff"] < 1e-4
    assert [r["batch_size"] for r in d["routing"]["by_batch_size"]] == [1, 2]
    assert d["routing"]["by_batch_size"][0]["inputs_per_graph_call"] == 1.0  # batch 1: one input per call
    assert sum(v for k, v in d["routing"]["paths"].items() if k.startswith("0:attn:")) <= 5
    assert len(d["gmacs"]["per_image"]) == 5 and 0 < d["gmacs"]["ratio"] < 1
    env = d["environment"]
    assert env["threads"] == d["settings"]["threads"] >= 1 and env["backend"] == "ort" and env["cpu"]
    assert {"numpy", "onnxruntime", "torch"} <= set(env["versions"])
    report.save(tmp_path / "r.json")
    assert BenchReport.load(tmp_path / "r.json") == BenchReport(**{k: v for k, v in d.items() if not k.startswith("schema")})


def test_peak_memory_per_engine_and_image_directory(bundle, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg"):
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype("uint8")).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    report = bench(bundle, batch_sizes=[3], images=folder, engines="dense,adaptive", iterations=1, warmup=0, baselines=False)
    assert report.settings["images"] == {"source": str(folder), "count": 2}
    assert report.settings["engines"] == ["adaptive", "dense"] and report.parity is None
    peaks = {r["engine"]: r["peak_rss_mib"] for r in report.results}
    assert all(isinstance(v, float) and v > 10 for v in peaks.values()), peaks
    assert report.comparisons[0]["memory_ratio_vs_dense"] == pytest.approx(peaks["adaptive"] / peaks["dense"])


def test_reference_skipped_with_reason_when_checkpoint_is_gone(make_checkpoint, tmp_path):
    ckpt = make_checkpoint()
    bundle = export_bundle(ckpt, tmp_path / "bundle")
    ckpt.unlink()
    report = bench(bundle, batch_sizes=[2], **QUICK)
    assert "reference" in report.skipped and str(ckpt) in report.skipped["reference"]
    assert report.parity is None and report.settings["engines"] == ["adaptive", "dense"]
    assert report.comparisons[0]["reference_speedup_vs_dense"] is None
    assert report.comparisons[0]["speedup_vs_dense"] is not None


def test_reference_found_from_another_directory(make_checkpoint, tmp_path, monkeypatch):
    """The manifest names the checkpoint by its absolute path: a relative one would be lost after a cd."""
    made = tmp_path / "made"
    made.mkdir()
    make_checkpoint(made, name="ckpt.pth")
    monkeypatch.chdir(made)
    bundle = export_bundle("ckpt.pth", tmp_path / "bundle")
    assert read_manifest(bundle).source["checkpoint"] == str(made / "ckpt.pth")
    monkeypatch.chdir(tmp_path)
    report = bench(bundle, batch_sizes=[1], iterations=1, warmup=0, memory=False, baselines=False)
    assert report.skipped == {} and report.settings["engines"] == ["adaptive", "dense", "reference"]
    assert report.parity["decision_agreement"] == 1.0


def test_report_figures_from_timings():
    """Latency percentiles, throughput and the ratios, from hand-made timings (not the code's own formula)."""
    timed = {"seconds": [0.004, 0.002, 0.003], "gmacs": [np.array([1.0, 2.0]), np.array([3.0])]}
    row = result_row("adaptive", 2, timed, peak=50.0, dense=4.0)
    assert row["latency_ms"] == pytest.approx({"p50": 3.0, "p90": 3.8, "p99": 3.98, "mean": 3.0, "min": 2.0})
    assert row["throughput_ips"] == pytest.approx(2 / 0.003)
    assert row["gmacs_mean"] == row["gmacs_executed_mean"] == 2.0 and row["iterations"] == 3
    dense = result_row("dense", 2, {"seconds": [0.006], "gmacs": []}, peak=40.0, dense=4.0)
    assert dense["gmacs_mean"] == 4.0
    c = comparison(2, {"adaptive": row, "dense": dense}, 4.0)
    assert c["speedup_vs_dense"] == pytest.approx(2.0) and c["flops_ratio"] == pytest.approx(2.0)
    assert c["efficiency"] == pytest.approx(1.0) and c["memory_ratio_vs_dense"] == pytest.approx(1.25)
    assert c["reference_speedup_vs_dense"] is None and c["speedup_vs_fp32"] == {}
    assert times(1.523) == "1.52x" and times(0.0012345) == "0.0012x"


def test_cli_checkpoint_writes_json_and_png_and_removes_its_bundle(runner, make_checkpoint, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the temporary bundle goes
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["bench", str(make_checkpoint()), "--batch-sizes", "1,2", "--iterations", "2", "--warmup", "0", "--no-memory", "--no-baselines"]
    result = runner.invoke(app, [*args, "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    for fragment in ("adaptive", "dense", "reference", "decisions 100.00% equal", f"wrote {out_json}", "efficiency"):
        assert fragment in result.output, result.output
    report = json.loads(out_json.read_text())
    assert report["schema"] == "adavit-deploy/bench" and report["target"]["exported"] is True
    assert len(report["results"]) == 6 and report["parity"]["decision_agreement"] == 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out_png) as im:
        assert im.size[0] > 800 and im.size[1] > 400
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--batch-sizes", "0"], ["--batch-sizes", "'0'"]),
        (["--batch-sizes", "a"], ["--batch-sizes", "'a'"]),
        (["--batch-sizes", "1,,x"], ["--batch-sizes"]),
        (["--iterations", "0"], ["--iterations"]),
        (["--backend", "trt"], ["TensorRT"]),
        (["--backend", "tpu"], ["unknown backend", "tpu"]),
        (["--budget", "1.5"], ["budget '1.5'", "native", "(0, 1]"]),
        (["--engines", "fast"], ["--engines", "adaptive,dense,reference"]),
    ],
    ids=["batch-0", "batch-a", "batch-empty", "iterations", "trt", "unknown-backend", "budget", "engines"],
)
def test_cli_bad_options_are_one_line(runner, tmp_path, args, fragments):
    result = runner.invoke(app, ["bench", str(tmp_path / "missing.pth"), *args])
    _one_line_error(result, *fragments)


def test_cli_bad_targets_are_one_line(runner, tmp_path):
    _one_line_error(runner.invoke(app, ["bench", str(tmp_path / "missing.pth")]), "missing.pth", "no such")
    (tmp_path / "empty").mkdir()
    _one_line_error(runner.invoke(app, ["bench", str(tmp_path / "empty")]), "not a bundle")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    _one_line_error(runner.invoke(app, ["bench", str(tmp_path / "junk.pth")]), "junk.pth", "not a readable")


def test_cli_plot_without_matplotlib_says_how_to_install(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = runner.invoke(app, ["bench", str(tmp_path / "missing.pth"), "--plot", str(tmp_path / "p.png")])
    _one_line_error(result, "pip install 'adavit-deploy[plot]'")


def test_parsing_and_batches():
    assert parse_batch_sizes("1, 16,1") == (1, 16)
    assert parse_batch_sizes([8]) == (8,)
    for bad in ("", "0", "-1", "a", "1.5"):
        with pytest.raises(ConfigError):
            parse_batch_sizes(bad)
    assert parse_engines("reference,adaptive") == ("adaptive", "reference")
    assert parse_engines("dense,adaptive.int8,adaptive") == ("adaptive", "dense", "adaptive.int8")
    for bad in ("reference.int8", "adaptive.fp8", ""):
        with pytest.raises(ConfigError, match="engines '"):
            parse_engines(bad)
    pool = np.arange(5, dtype=np.float32)[:, None]
    batches = cycled_batches(pool, 2, 100)
    assert len(batches) == 5  # lcm(5, 2) / 2: then the cycle repeats
    assert [b[:, 0].tolist() for b in batches[:3]] == [[0, 1], [2, 3], [4, 0]]
    assert len(cycled_batches(pool, 8, 3)) == 3 and cycled_batches(pool, 8, 3)[0][:, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_dense_runs_on_every_cpu_backend_and_the_fastest_is_the_baseline(runner, bundle, tmp_path):
    """The honest baseline: dense on ort and ov (each precision asked for that the backend runs),
    adaptive headlined against the fastest dense engine at its precision; the JSON carries them all."""
    pytest.importorskip("openvino", reason="the ov extra (openvino) is not installed")
    out = tmp_path / "r.json"
    args = ["bench", str(bundle), "--backend", "ov", "--batch-sizes", "2", "--iterations", "2", "--warmup", "0",
            "--engines", "adaptive,dense,dense.bf16,adaptive.bf16", "--json", str(out)]  # fmt: skip
    has_bf16 = "BF16" in __import__("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if not has_bf16:
        args[args.index("adaptive,dense,dense.bf16,adaptive.bf16")] = "adaptive,dense"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    engines = {r["engine"]: r for r in report["results"]}
    want = {"adaptive", "dense", "dense@ort"} | ({"adaptive.bf16", "dense.bf16"} if has_bf16 else set())
    assert set(engines) == want  # no dense.bf16@ort: ONNX Runtime does not run bf16
    assert engines["dense@ort"]["backend"] == "ort" and engines["dense"]["backend"] == "ov"
    assert engines["dense@ort"]["peak_rss_mib"] > 0  # measured on its own backend, in its own child
    (c,) = report["comparisons"]
    fp32 = c["dense_p50_ms"]["fp32"]
    assert set(fp32) == {"dense", "dense@ort"} and c["fastest_dense"]["fp32"] == min(fp32, key=fp32.get)
    want_ratio = fp32[c["fastest_dense"]["fp32"]] / engines["adaptive"]["latency_ms"]["p50"]
    assert c["speedup_vs_fastest_dense"]["adaptive"] == pytest.approx(want_ratio)
    assert f"adaptive {times(want_ratio)} the fastest dense fp32 engine ({c['fastest_dense']['fp32']}" in result.output
    assert "avx" in " ".join(report["environment"]["cpu_flags"]) and report["environment"]["versions"]["openvino"]


def test_every_timed_batch_is_warmed_first():
    """Timed in the steady state: each engine runs every batch it is timed on once, untimed, first
    (OpenVINO compiles kernels per new shape); --warmup adds calls beyond that, never fewer."""
    from adavit_deploy.bench.engines import Engine, warmup_calls

    assert warmup_calls(0, 20, 32) == 20 and warmup_calls(2, 20, 2) == 2 and warmup_calls(30, 5, 32) == 30
    seen: list[int] = []
    batches = [np.full((1, 1), k, np.float32) for k in range(5)]
    engine = Engine("dense", lambda x: seen.append(int(x[0, 0])))
    ticks: list[str] = []
    time_engines([engine], batches, iterations=5, warmup=0, tick=ticks.append)
    assert seen[:5] == [0, 1, 2, 3, 4] and sorted(seen[5:]) == [0, 1, 2, 3, 4]  # warm-up pass, then the timed calls
    assert ticks.count("dense: warm-up") == 5 and ticks.count("dense: timing") == 5


def test_a_report_is_read_back_by_the_one_document_reader(tmp_path):
    """Saved and loaded through ``documents.Document``: a file that is not one is one line naming it."""
    report = BenchReport(results=[{"engine": "dense"}], comparisons=[], parity=None, routing={}, environment={})
    path = report.save(tmp_path / "r.json")
    assert BenchReport.load(path) == report
    for text, says in ((b"{not json", "malformed bench report (not UTF-8 JSON"),
                       (b'{"schema": "adavit-deploy/bench", "schema_version": 1, "results": 3}', "lacks")):  # fmt: skip
        path.write_bytes(text)
        with pytest.raises(InputError) as e:
            BenchReport.load(path)
        assert "\n" not in str(e.value) and says in str(e.value) and str(path) in str(e.value)
