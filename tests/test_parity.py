"""The comparator (``parity.py``): agreement figures, tolerances, and the one sentence that says them."""

from __future__ import annotations

import numpy as np

from adavit_deploy.parity import EXACT, Tolerances, compare, failures, parity_sentence
from adavit_deploy.runtime import InferResult, RoutingStats


def _result(logits: list[list[float]], heads: list[list[float]]) -> InferResult:
    n = len(logits)
    return InferResult(
        logits=np.asarray(logits, np.float32),
        head_select=np.asarray(heads, np.float32)[:, None, :],
        layer_select=np.ones((n, 1, 2), np.float32),
        token_select=np.ones((n, 0, 5), np.float32),
        gmacs=np.full(n, 0.5),
        routing=RoutingStats(),
    )


def test_compare_counts_agreements_and_diffs():
    ref = _result([[1.0, 0.0], [0.0, 1.0]], [[1, 1], [1, 0]])
    got = _result([[1.0, 0.5], [0.75, 0.5]], [[1, 1], [0, 0]])
    report = compare(ref, got)
    assert report == {
        "samples": 2,
        "max_abs_logit_diff": 0.75,
        "mean_abs_logit_diff": (0.0 + 0.5 + 0.75 + 0.5) / 4,
        "top1_agreement": 0.5,
        "decision_agreement": 7 / 8,  # 4 heads + 4 sub-layers, one head differs
        "mean_gmacs": 0.5,
    }
    assert failures(report, EXACT) == ["decisions 87.50% < 100.00%", "top-1 50.00% < 100.00%", "max |logit diff| 7.50e-01 > 1e-04"]
    assert failures(report, Tolerances(0.8, 0.5, 1.0)) == []


def test_identical_results_match_exactly():
    ref = _result([[1.0, 0.0]], [[1, 0]])
    report = compare(ref, ref)
    assert report["max_abs_logit_diff"] == 0 and report["decision_agreement"] == report["top1_agreement"] == 1.0
    assert failures(report, EXACT) == []


def test_the_parity_sentence():
    report = {"samples": 8, "decision_agreement": 1.0, "top1_agreement": 1.0, "max_abs_logit_diff": 2.5e-6,
              "mean_abs_logit_diff": 4e-7}  # fmt: skip
    assert parity_sentence("parity vs PyTorch", report, EXACT) == (
        "parity vs PyTorch on 8 inputs: decisions 100.00% equal, top-1 100.00%, max |logit diff| 2.50e-06, mean 4.00e-07"
    )
    old = {k: v for k, v in report.items() if k != "mean_abs_logit_diff"}  # a bundle exported before it was recorded
    bad = {**old, "top1_agreement": 0.875}
    assert parity_sentence("int8 vs fp32", bad) == (
        "int8 vs fp32 on 8 inputs: decisions 100.00% equal, top-1 87.50%, max |logit diff| 2.50e-06"
    )
    assert parity_sentence("parity vs PyTorch", bad, EXACT).endswith("(OUTSIDE tolerance: top-1 87.50% < 100.00%)")
