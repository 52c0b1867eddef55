"""One Triton batch: good requests run as one call and get their own rows; bad ones fail alone, in one line."""

from __future__ import annotations

import numpy as np
import pytest

from adavit_deploy import load_bundle
from adavit_deploy.serving.batch import RequestError, run_batch


@pytest.fixture(scope="module")
def runtime(bundle):
    return load_bundle(bundle)


def _images(runtime, n: int, seed: int = 0) -> np.ndarray:
    cfg = runtime.cfg
    return np.random.default_rng(seed).standard_normal((n, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)


def test_requests_get_their_rows_of_one_call(runtime, monkeypatch):
    x = _images(runtime, 6)
    expected = runtime.infer(x)
    calls = []
    infer = runtime.infer
    monkeypatch.setattr(runtime, "infer", lambda images, **kw: calls.append(len(images)) or infer(images, **kw))
    outcomes = run_batch(runtime, [x[:1], x[1:4], x[4:5], x[5:]])
    assert calls == [6]
    rows = np.concatenate([o["logits"] for o in outcomes])
    np.testing.assert_array_equal(rows, expected.logits)
    for key in ("head_select", "layer_select", "token_select"):
        np.testing.assert_array_equal(np.concatenate([o[key] for o in outcomes]), getattr(expected, key))
    assert outcomes[1]["gmacs"].shape == (3, 1)
    np.testing.assert_array_equal(np.concatenate([o["gmacs"] for o in outcomes])[:, 0], expected.gmacs.astype(np.float32))


def test_bad_requests_fail_alone(runtime):
    x = _images(runtime, 3)
    nan = x[1:2].copy()
    nan[0, 0, 0, 0] = np.nan
    outcomes = run_batch(runtime, [x[:1], nan, x[:1, :, :8], x[2:].astype(np.int32), x[2:]])
    assert outcomes[1] == RequestError("NaN or Inf values in 1 of 1 inputs (#0): fix or drop them", invalid_argument=True)
    for bad in (outcomes[2], outcomes[3]):
        assert isinstance(bad, RequestError) and bad.invalid_argument and "images must be float NCHW" in bad.message
    expected = runtime.infer(np.concatenate([x[:1], x[2:]])).logits
    np.testing.assert_array_equal(np.concatenate([outcomes[0]["logits"], outcomes[4]["logits"]]), expected)


def test_dense_mode(runtime):
    x = _images(runtime, 2)
    (out,) = run_batch(runtime, [x], mode="dense")
    assert list(out) == ["logits"]
    np.testing.assert_array_equal(out["logits"], runtime.dense(x))


def test_runtime_failure_is_one_line_for_every_request_in_the_call(runtime, monkeypatch):
    def broken(images, **kw):
        raise RuntimeError("boom\n  File /secret/path.py, line 1")

    monkeypatch.setattr(runtime, "infer", broken)
    x = _images(runtime, 2)
    outcomes = run_batch(runtime, [x[:1], x[1:], x[:1, :, :4]])
    error = RequestError("internal error in the adaptive runtime: RuntimeError", invalid_argument=False)
    assert outcomes[:2] == [error, error]
    assert outcomes[2].invalid_argument


def test_mixed_budgets_in_one_call_equal_each_sample_alone(runtime):
    """Each request at its own budget (and the default for none or ``auto``), in one call: what each
    sample gets alone at that budget, and the budget applied is in the outputs."""
    assert list(runtime.manifest.budgets) == ["native", "0.35", "0.25"]
    x = _images(runtime, 5, seed=2)
    outcomes = run_batch(runtime, [x[:1], x[1:3], x[3:4], x[4:5]], budgets=["0.250", "auto", "native", None],
                         default_budget="0.35")  # fmt: skip
    applied = ["0.25", "0.35", "0.35", "native", "0.35"]
    got = {k: np.concatenate([o[k] for o in outcomes]) for k in outcomes[0]}
    assert [b.decode() for b in got["budget"][:, 0]] == applied
    for i, budget in enumerate(applied):
        alone = runtime.infer(x[i : i + 1], budget=budget)
        for key in ("head_select", "layer_select", "token_select"):
            np.testing.assert_array_equal(got[key][i : i + 1], getattr(alone, key))
        np.testing.assert_allclose(got["logits"][i : i + 1], alone.logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["gmacs"][i, 0], alone.gmacs[0], rtol=1e-6)
    assert len(set(got["gmacs"][:, 0])) > 1  # the budgets did differ


def test_a_budget_the_bundle_lacks_fails_that_request_alone(runtime):
    x = _images(runtime, 2)
    bad, good = run_batch(runtime, [x[:1], x[1:]], budgets=["0.4", None])
    have = ", ".join(runtime.manifest.budgets)
    assert bad == RequestError(f"budget '0.4': this model serves budgets {have} (or auto: the server's choice)", True)
    np.testing.assert_array_equal(good["logits"], runtime.infer(x[1:]).logits)
    (nonsense,) = run_batch(runtime, [x[:1]], budgets=["fast"])
    assert nonsense.invalid_argument and nonsense.message.startswith("budget 'fast': this model serves budgets native")
