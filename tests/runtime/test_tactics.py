"""Tactics (``runtime/tactics.py``): every tactic exact, the tuner's table written, read and used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from adavit_deploy.cli import app
from adavit_deploy.errors import BundleError, ConfigError, InputError
from adavit_deploy.export import export_bundle
from adavit_deploy.model import load_model
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.routing import route
from adavit_deploy.runtime.tactics import FILE, TACTICS, TacticTable, Timing, read_tables, write_table
from adavit_deploy.tuner import tune
from checks import assert_matches, cli_error, one_line


@pytest.fixture
def tunable(half_gmacs_bundle, tmp_path):
    """A private copy of the ~50% GMACs bundle (tuning writes into it)."""
    return shutil.copytree(half_gmacs_bundle, tmp_path / "bundle")


@pytest.mark.parametrize("tactic", [None, *TACTICS])
def test_reference_fixtures_are_exact_under_each_tactic(reference_case, reference_bundle, fixture_name, tactic):
    """Decisions identical and logits within 1e-4 of the reference, by default and with either tactic
    forced on every stage, on the whole batch and one image at a time."""
    with load_bundle(reference_bundle(fixture_name), tactic=tactic) as rt:
        results = [rt.infer(reference_case.images, batch_size=batch) for batch in (8, 1)]
        has_heads = bool(rt.cfg.head_select)
    for res in results:
        assert_matches(res, reference_case.logits, reference_case.decisions)
        assert res.logits.shape == (len(reference_case.images), 10)
        if has_heads and tactic:
            assert res.routing.tactics.get(tactic, 0) > 0, res.routing.tactics
            masked_paths = [p for p in res.routing.paths if p.endswith(":masked")]
            assert bool(masked_paths) == (tactic == "masked")


def test_masked_samples_of_different_head_sets_share_one_call():
    heads = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1]], bool)
    tokens = np.ones((3, 5), bool)
    active = np.ones(3, bool)
    assert len(route(active, heads, tokens)) == 2  # gather: one call per head set
    everything_masked = np.ones((3, 1), bool)
    (group,) = route(active, heads, tokens, everything_masked)
    assert sorted(group.samples) == [0, 1, 2]


def _machine(rt) -> dict:
    return rt.backend.fingerprint()


def test_mixed_tactics_in_one_batch_give_the_gather_results(tunable):
    """A table choosing masked for some kept-head counts and gather for others: both run in one batch, same results."""
    x = np.random.default_rng(3).standard_normal((4, 3, 32, 32), dtype=np.float32)
    with load_bundle(tunable, tactic="gather") as rt:
        want = rt.infer(x)
        cfg, machine = rt.cfg, _machine(rt)
    timings = [
        Timing(b, stage, k, 4, {"gather": 1.0, "masked": 0.5}, 1, "masked" if k % 2 else "gather")
        for b in cfg.head_select for stage in ("attn", "mlp") for k in range(1, cfg.num_heads + 1)
    ]  # fmt: skip
    write_table(tunable, TacticTable(machine, "fp32", timings))
    with load_bundle(tunable) as rt:
        assert rt.tactics is not None
        got = rt.infer(x)
    assert set(got.routing.tactics) == {"gather", "masked"}, got.routing.tactics
    np.testing.assert_allclose(got.logits, want.logits, atol=1e-5)
    for key in ("head_select", "layer_select", "token_select"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)


def test_tune_writes_a_table_the_runtime_uses(tunable):
    table, path = tune(tunable, (1, 4), threads=1, reps=1)
    assert path == tunable / FILE
    doc = json.loads(path.read_text())
    assert doc["schema"] == "adavit-deploy/tactics" and doc["schema_version"] == 2
    (stored,) = read_tables(tunable).values()
    assert stored.machine["cpu"] and stored.machine["threads"] == 1 and stored.machine["backend"] == "ort"
    assert stored.margin == 0.05
    with load_bundle(tunable, threads=1) as rt:
        head_blocks = set(rt.cfg.head_select)
        assert rt.tactics is not None and rt.tactics.timings == stored.timings
    assert {t.batch_size for t in stored.timings} == {1, 4}
    assert {t.block for t in stored.timings} <= head_blocks and {t.stage for t in stored.timings} == {"attn", "mlp"}
    for t in stored.timings:
        assert set(t.ms) == set(TACTICS) and all(v > 0 for v in t.ms.values()) and t.samples > 0
        assert t.tactic == ("masked" if t.ms["masked"] < 0.95 * t.ms["gather"] else "gather")  # the default 5% margin
    rows = table.summary()
    assert sum(r["blocks"] for r in rows) == len(stored.timings)


def test_a_table_from_another_machine_is_ignored_with_a_warning(tunable):
    with load_bundle(tunable, threads=1) as rt:
        machine = _machine(rt)
    write_table(tunable, TacticTable({**machine, "cpu": "another CPU"}, "fp32", [Timing(1, "attn", 1, 1, {"gather": 1.0, "masked": 0.1}, 1, "masked")]))
    with pytest.warns(UserWarning, match="tuned on another machine .*cpu"):
        rt = load_bundle(tunable, threads=1)
    with rt:
        assert rt.tactics is None


def test_bad_tactics_and_tables_are_one_line_errors(tunable):
    with pytest.raises(InputError) as e:
        load_bundle(tunable, tactic="fastest")
    one_line(e, "unknown tactic 'fastest'", "gather, masked")
    (tunable / FILE).write_text("{not json")
    with pytest.raises(BundleError) as e:
        load_bundle(tunable)
    one_line(e, "malformed tactics file (not UTF-8 JSON", "adavit-deploy tune")
    (tunable / FILE).write_text(json.dumps({"schema": "adavit-deploy/tactics", "schema_version": 9, "tables": {}}))
    with pytest.raises(BundleError) as e:
        load_bundle(tunable)
    one_line(e, "version 9 is not 2", "adavit-deploy tune")
    with pytest.raises(ConfigError) as e:
        tune(tunable, "0,4")
    one_line(e, "batch_sizes '0,4'")
    with pytest.raises(InputError) as e:
        tune(tunable, "1", margin=1.5)
    one_line(e, "margin must be in [0, 1)")


def test_cli_tune_prints_the_choices_and_writes_the_file(tunable):
    result = CliRunner().invoke(app, ["tune", str(tunable), "--batch-sizes", "1,2", "--threads", "1", "--reps", "1"])
    assert result.exit_code == 0, result.output
    assert "stage time per batch" in result.output and "picked" in result.output
    assert f"wrote {tunable / FILE}" in result.output.splitlines()  # one line, though longer than 80 columns
    assert (tunable / FILE).is_file()
    cli_error(CliRunner().invoke(app, ["tune", str(tunable), "--batch-sizes", "x"]), "--batch-sizes 'x'")
    cli_error(CliRunner().invoke(app, ["tune", str(tunable / "nope")]), "no such bundle directory")


def test_bench_reports_the_tactics_that_ran(tunable):
    from adavit_deploy.bench import bench

    report = bench(tunable, engines="adaptive,dense", batch_sizes="1,4", iterations=1, warmup=0, memory=False, tactic="masked")
    assert report.settings["tactics"] == {"fp32": "masked"}
    for row in report.routing["by_batch_size"]:
        by_tactic = row["calls_per_batch_by_tactic"]
        assert by_tactic["masked"] > 0 and sum(by_tactic.values()) == row["graph_calls_per_batch"]
    untuned = bench(tunable, engines="adaptive", batch_sizes="1", iterations=1, warmup=0, memory=False)
    assert untuned.settings["tactics"] == {"fp32": "default"}


def test_reduced_precision_variants_of_both_tactics(make_checkpoint, images, tmp_path):
    """FP16 and INT8 masked graphs exist, run, and agree with fp32 as the gathered ones do."""
    ckpt = make_checkpoint(seed=3)
    model, _ = load_model(ckpt)
    x = images(model.cfg, batch=16, seed=7).numpy()
    np.savez(tmp_path / "calib.npz", images=x)
    bundle = export_bundle(ckpt, tmp_path / "b", calibration=tmp_path / "calib.npz", fp16=True, int8=True)
    with load_bundle(bundle, tactic="gather") as rt:
        fp32 = rt.infer(x)
    for precision in ("fp16", "int8"):
        for tactic in TACTICS:
            with load_bundle(bundle, precision=precision, tactic=tactic) as rt:
                got = rt.infer(x)
                masked_file = rt.manifest.artifacts[f"attn_masked_1.{precision}"].file
            assert masked_file == f"attn_masked_1.{precision}.onnx"  # a converted graph, not the fp32 one
            assert got.routing.tactics[tactic] > 0
            assert np.mean(got.logits.argmax(1) == fp32.logits.argmax(1)) >= 0.9, (precision, tactic)
            assert np.abs(got.logits - fp32.logits).max() < 0.5, (precision, tactic)


def test_untuned_runtime_loads_no_masked_graph(tunable):
    """A masked graph is a second copy of its block's weights: without a tuned table none is loaded."""
    x = np.random.default_rng(4).standard_normal((4, 3, 32, 32), dtype=np.float32)
    with load_bundle(tunable) as rt:
        res = rt.infer(x)
        loaded = set(rt.runners)
    assert set(res.routing.tactics) == {"gather"}
    assert {"attn_1", "mlp_1"} <= loaded and not any("masked" in name for name in loaded)


def _tuned_doc(bundle, machine=None) -> dict:
    """A valid ``tactics.json`` for ``bundle`` (masked for every key), as a dict to edit."""
    with load_bundle(bundle, tactic="gather") as rt:
        cfg, here = rt.cfg, _machine(rt)
    timings = [
        Timing(b, stage, k, 1, {"gather": 1.0, "masked": 0.5}, 1, "masked")
        for b in cfg.head_select for stage in ("attn", "mlp") for k in range(1, cfg.num_heads + 1)
    ]  # fmt: skip
    write_table(bundle, TacticTable(machine or here, "fp32", timings))
    return json.loads((bundle / FILE).read_text())


def _first(doc: dict) -> dict:
    return doc["tables"]["ort/fp32"]["timings"][0]


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: _first(d).update(kept_heads=99), "keeps 99 heads, this model has 3"),
        (lambda d: _first(d).update(kept_heads=-1), "timings[0]: kept_heads -1 is not >= 1"),
        (lambda d: _first(d).update(kept_heads=2.5), "timings[0].kept_heads should be an integer, got 2.5"),
        (lambda d: _first(d).update(tactic="fastest"), "tactic 'fastest' is not one of gather, masked"),
        (lambda d: _first(d).update(stage="[red]qkv"), "stage '[red]qkv' is not one of attn, mlp"),
        (lambda d: _first(d).update(ms={"gather": -1.0, "masked": 1.0}), "is not a time >= 0"),
        (lambda d: _first(d).update(ms={}), "is not a time >= 0"),
        (lambda d: _first(d).update(batch_size=0), "timings[0]: batch_size 0 is not >= 1"),
        (lambda d: _first(d).pop("block"), "timings[0] lacks ['block']"),
        (lambda d: d["tables"]["ort/fp32"].update(machine="my laptop"), "tables.ort/fp32.machine should be an object"),
        (lambda d: d["tables"]["ort/fp32"].update(margin=float("nan")), "tables.ort/fp32: margin nan is not in [0, 1)"),
        (lambda d: d["tables"]["ort/fp32"].update(margin=2), "margin 2.0 is not in [0, 1)"),
        (lambda d: _first(d)["ms"].update(gather=10**400), "timings[0].ms.gather should be a number within float range"),
    ],
    ids=["heads>H", "heads<0", "heads-float", "tactic", "stage", "ms<0", "ms-missing", "batch0", "no-block", "machine-str",
         "margin-nan", "margin>1", "ms-past-float"],  # fmt: skip
)
def test_an_edited_tactics_file_is_a_one_line_error_naming_it(tunable, tmp_path, edit, says):
    """Every field of tactics.json is checked on load: no traceback at inference, no silent misroute
    (a negative kept-head count would have indexed the table from its end)."""
    doc = _tuned_doc(tunable)
    edit(doc)
    (tunable / FILE).write_text(json.dumps(doc))
    with pytest.raises(BundleError) as e:
        load_bundle(tunable)
    one_line(e, str(tunable / FILE), says, "re-run `adavit-deploy tune`")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    cli_error(CliRunner().invoke(app, ["infer", str(tunable), str(tmp_path / "x.npy")]), says)


def test_a_huge_tactics_file_is_refused_unread(tunable, monkeypatch):
    import adavit_deploy.runtime.tactics as tactics

    _tuned_doc(tunable)
    monkeypatch.setattr(tactics, "MAX_BYTES", 100)
    with pytest.raises(BundleError) as e:
        load_bundle(tunable)
    one_line(e, "more than a tactics file holds (100)", "re-run `adavit-deploy tune`")


def test_cli_warns_in_one_line_for_another_machine(tunable, tmp_path):
    """The warning is one escaped line on stderr, as errors are: not Python's file:line and source line."""
    with load_bundle(tunable, tactic="gather") as rt:
        elsewhere = {**_machine(rt), "cpu": "another [bold]CPU"}
    _tuned_doc(tunable, elsewhere)
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    result = CliRunner().invoke(app, ["infer", str(tunable), str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "tuned on another machine" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), result.output
    assert "UserWarning" not in result.output and "AdaptiveRuntime(" not in result.output
    forced = CliRunner().invoke(app, ["bench", str(tunable), "--tactic", "gather", "--batch-sizes", "1", "--engines", "adaptive",
                                      "--iterations", "1", "--warmup", "0", "--no-memory"])  # fmt: skip
    assert forced.exit_code == 0 and "warning" not in forced.output, forced.output  # a forced tactic reads no table


def test_tune_refuses_an_unwritable_tactics_file_before_timing(tunable):
    (tunable / FILE).mkdir()
    calls = []
    with pytest.raises(InputError) as e:
        tune(tunable, "1", threads=1, reps=1, progress=lambda *a: calls.append(a))
    one_line(e, f"the tactics file {tunable / FILE} is a directory")
    assert calls == [] and (tunable / FILE).is_dir()


@pytest.mark.parametrize(
    "args, says",
    [
        (["tune", "{b}", "--reps", "0"], "--reps must be >= 1, got 0"),
        (["tune", "{b}", "--margin", "1"], "--margin must be in [0, 1)"),
        (["tune", "{b}", "--precision", "int8"], "no int8 graphs"),
        (["bench", "{b}", "--tactic", "fastest", "--no-memory"], "unknown tactic 'fastest'"),
    ],
)
def test_cli_errors_of_tune_and_bench_are_the_only_output(tunable, args, says):
    """No progress bar residue (a blank line) before the error when the output is not a terminal."""
    result = CliRunner().invoke(app, [a.format(b=tunable) for a in args])
    cli_error(result, says)
    assert result.output.startswith("error:"), repr(result.output)


def test_a_load_that_fails_closes_the_backend_it_started(tunable, monkeypatch):
    """``load_bundle`` with a backend name owns it: refused (here by a bad tactics file), it closes it."""
    import adavit_deploy.runtime.adaptive as adaptive

    started = []
    real = adaptive.get_backend
    monkeypatch.setattr(adaptive, "get_backend", lambda *a, **kw: started.append(real(*a, **kw)) or started[-1])
    (tunable / FILE).write_text("{not json")
    with pytest.raises(BundleError):
        load_bundle(tunable)
    assert len(started) == 1 and started[0].closed
    with pytest.raises(InputError):
        load_bundle(tunable, tactic="fastest")
    assert len(started) == 1  # refused before any backend started


def test_tune_help_says_what_a_table_covers():
    """Per precision, which batch sizes, every budget, the threads to use: what a user must know to tune once."""
    out = " ".join(CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).output.split())
    for fragment in ("One table per --backend and --precision", "largest tuned batch size not above it", "serve every budget",
                     "--threads inference uses", "0.05: 5%"):  # fmt: skip
        assert fragment in out, fragment


def test_tune_refuses_batch_sizes_above_the_bundles_max_batch(tunable):
    """``--batch-sizes 100000`` made 100000 seeded inputs and was killed for memory; the bundle's max batch bounds it."""
    calls = []
    with pytest.raises(InputError) as e:
        tune(tunable, "1,100000", threads=1, reps=1, progress=lambda *a: calls.append(a))
    one_line(e, "batch_sizes 100000 is above the bundle's max batch 4", "a larger max_batch")
    assert calls == [] and not (tunable / FILE).exists()


def test_write_table_keeps_other_backends_and_precisions_only_from_the_same_cpu(tmp_path):
    here, there = {"backend": "ort", "cpu": "A"}, {"backend": "ort", "cpu": "B"}
    timing = [Timing(1, "attn", 1, 1, {"gather": 1.0, "masked": 2.0}, 1, "gather")]
    write_table(tmp_path, TacticTable(here, "fp32", timing))
    write_table(tmp_path, TacticTable(here, "int8", timing))
    write_table(tmp_path, TacticTable({"backend": "ov", "cpu": "A", "threads": 2}, "bf16", timing))
    write_table(tmp_path, TacticTable({"backend": "ov", "cpu": "A", "threads": 1}, "fp32", timing))
    assert sorted(read_tables(tmp_path)) == ["ort/fp32", "ort/int8", "ov/bf16", "ov/fp32"]  # tuning ov kept ort's
    write_table(tmp_path, TacticTable({**here, "threads": 2}, "fp32", timing))  # the same key, re-tuned: replaced
    assert read_tables(tmp_path)["ort/fp32"].machine["threads"] == 2
    write_table(tmp_path, TacticTable(there, "fp16", timing))
    assert sorted(read_tables(tmp_path)) == ["ort/fp16"]  # the others were timed on another CPU


def test_a_version_1_tactics_file_still_loads(tunable):
    """A bundle tuned before the OpenVINO backend (tables keyed by precision alone) keeps its table."""
    tune(tunable, (1,), threads=1, reps=1)
    doc = json.loads((tunable / FILE).read_text())
    old = {"schema": doc["schema"], "schema_version": 1, "tables": {"fp32": doc["tables"]["ort/fp32"]}}
    (tunable / FILE).write_text(json.dumps(old))
    with load_bundle(tunable, threads=1) as rt:
        assert rt.tactics is not None and rt.tactics.timings == read_tables(tunable)["ort/fp32"].timings
