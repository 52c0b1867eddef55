"""The open-loop load client without a server: rates, policies, what a row counts, the report and its plot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adavit_deploy.bench.open_loop import OpenLoopReport, Answer, _row, parse_policies, parse_rates
from adavit_deploy.errors import ConfigError


def test_rates_and_policies():
    assert parse_rates("20, 0.5x,1.3x") == ["20", "0.5x", "1.3x"]
    for bad in ("", "0", "-3", "fast", "1.3y", "0x"):
        with pytest.raises(ConfigError, match="rates"):
            parse_rates(bad)
    assert parse_policies("native,0.350,auto,dense") == ["native", "0.35", "auto", "dense"]
    for bad in ("", "quick", "1.5"):
        with pytest.raises(ConfigError, match="policies"):
            parse_policies(bad)


def test_a_row_charges_errors_and_unanswered_requests_to_goodput():
    """Ten requests after a 1 s warm-up: 6 answered (one after the SLO, one after the window), 2 errors, 2 never."""
    schedule = np.array([0.5, *np.linspace(1.0, 2.9, 10)])
    answered = [Answer(0.05, 1.1, "native", 1.0, 3), Answer(0.05, 1.3, "0.35", 0.5, 3), Answer(0.3, 1.8, "native", 1.0, 1),
                Answer(0.05, 2.0, "native", 1.0, 3), Answer(0.05, 2.5, "0.35", 0.5, 0), Answer(0.05, 3.5, "native", 1.0, 3)]  # fmt: skip
    results = [Answer(0.01, 0.51, "native", 1.0, 3), *answered, "[400] no", "[400] no", None, None]
    labels = np.array([3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    row = _row("auto", "1.3x", 5.0, 2.0, 1.0, schedule, results, labels, slo_ms=100)
    assert row["offered_rps"] == 5.0  # 10 counted requests in 2 s
    assert row["achieved_rps"] == 2.5  # 5 answers completed inside the window
    assert row["goodput"] == 0.5  # 5 of 10 within 100 ms
    assert (row["errors"], row["unanswered"], row["error_samples"]) == (2, 2, ["[400] no"])
    assert row["budgets"] == {"native": 4, "0.35": 2}
    assert row["mean_gmacs"] == pytest.approx(np.mean([1.0, 0.5, 1.0, 1.0, 0.5, 1.0]))
    assert row["top1"] == pytest.approx(4 / 6)
    assert row["p99_ms"] == pytest.approx(np.percentile([50, 50, 300, 50, 50, 50], 99))


def _report() -> OpenLoopReport:
    def row(policy: str, rate: str, rps: float, p99: float, gmacs: float | None) -> dict:
        return {"policy": policy, "rate": rate, "offered_rps": rps, "achieved_rps": rps, "p50_ms": p99 / 2,
                "p90_ms": p99, "p99_ms": p99, "goodput": 1.0, "mean_gmacs": gmacs, "budgets": {"native": 10},
                "errors": 0, "unanswered": 0, "error_samples": []}  # fmt: skip

    rows = [row("native", "0.5x", 10, 50, 2.1), row("auto", "0.5x", 10, 52, 2.1), row("native", "1.3x", 26, 4000, 2.1),
            row("auto", "1.3x", 26, 180, 1.3), row("dense", "1.3x", 26, 9000, None)]  # fmt: skip
    settings = {"model": "adavit", "policies": ["native", "auto", "dense"]}
    return OpenLoopReport(rows, 200.0, 20.0, settings, {"cpu": "test CPU"})


def test_report_round_trip_and_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    from adavit_deploy.plots import plot_open_loop

    report = _report()
    report.save(tmp_path / "r.json")
    assert OpenLoopReport.load(tmp_path / "r.json") == report
    plot_open_loop(report, tmp_path / "r.png")
    with Image.open(tmp_path / "r.png") as im:
        assert im.size[0] > 1000 and im.size[1] > 500
