"""The SLO controller against a simulated server: one instance, a dynamic batcher, Poisson arrivals.

Service time per batch is a fixed per-call cost plus a per-image cost that
scales with the budget's GMACs, the shape the runtime's timings have. The
simulation is seeded and runs on simulated time: no wall clock is involved.
"""

from __future__ import annotations

import numpy as np
import pytest

from adavit_deploy.bundle import read_manifest
from adavit_deploy.errors import ConfigError
from adavit_deploy.serving.slo import Rung, SloController, ladder

RUNGS = [Rung("native", 0.45), Rung("0.35", 0.35), Rung("0.25", 0.25)]
MAX_BATCH = 16
CALL_S = 0.004  # per batch
IMAGE_S = 0.020  # per image at native (0.45 of dense)
SLO_MS = 200.0  # about 8x the batch-1 latency (24 ms)


def native_capacity() -> float:
    """Images per second at native with full batches."""
    return MAX_BATCH / (CALL_S + IMAGE_S * MAX_BATCH)


def simulate(controller: SloController, rates: list[tuple[float, float]], seed: int = 0):
    """Serve Poisson arrivals at ``rates`` ((seconds, images/s) phases); per request: (arrival, latency, budget)."""
    rng = np.random.default_rng(seed)
    arrivals, t0 = [], 0.0
    for seconds, rate in rates:
        t = t0
        while (t := t + rng.exponential(1 / rate)) < t0 + seconds:
            arrivals.append(t)
        t0 += seconds
    served, now, i = [], 0.0, 0
    while i < len(arrivals):
        now = max(now, arrivals[i])
        batch = [a for a in arrivals[i : i + MAX_BATCH] if a <= now]
        i += len(batch)
        budget = controller.budget
        cost = next(r.cost for r in RUNGS if r.budget == budget) / RUNGS[0].cost
        end = now + CALL_S + IMAGE_S * cost * len(batch)
        controller.observe(now, end, len(batch))
        served += [(a, end - a, budget) for a in batch]
        now = end
    return served


def _controller() -> SloController:
    return SloController(RUNGS, SLO_MS, MAX_BATCH)


def _window(served, start: float, stop: float):
    return [(lat, b) for a, lat, b in served if start <= a < stop]


def _mean_cost(served) -> float:
    costs = {r.budget: r.cost for r in RUNGS}
    return float(np.mean([costs[b] for _, _, b in served]))


def test_at_half_capacity_it_spends_what_native_does():
    served = simulate(_controller(), [(30.0, 0.5 * native_capacity())])
    assert _mean_cost(served) >= 0.95 * RUNGS[0].cost
    assert np.percentile([lat for _, lat, _ in served], 99) * 1e3 <= SLO_MS


def test_overload_steps_down_within_seconds_holds_the_slo_and_settles():
    served = simulate(_controller(), [(40.0, 1.3 * native_capacity())])
    steady = _window(served, 5.0, 40.0)
    p99 = np.percentile([lat for lat, _ in steady], 99) * 1e3
    assert p99 <= SLO_MS, p99
    assert sum(lat * 1e3 <= SLO_MS for lat, _ in steady) / len(steady) >= 0.99
    changes = sum(a[1] != b[1] for a, b in zip(steady, steady[1:]))
    assert "native" not in {b for _, b in steady} and changes <= 2, changes  # no oscillation at constant load


def test_native_alone_breaks_that_slo():
    """The same load on a controller that cannot step down: the queue grows (what the SLO mode is for)."""
    stuck = SloController([RUNGS[0], RUNGS[0]], SLO_MS, MAX_BATCH)
    served = simulate(stuck, [(20.0, 1.3 * native_capacity())])
    assert np.percentile([lat for _, lat, _ in served], 99) * 1e3 > 10 * SLO_MS


def test_steps_back_up_when_load_falls():
    served = simulate(_controller(), [(15.0, 1.3 * native_capacity()), (20.0, 0.3 * native_capacity())])
    assert {b for lat, b in _window(served, 10.0, 15.0)} != {"native"}
    assert {b for lat, b in _window(served, 30.0, 35.0)} == {"native"}


def test_ladder_of_a_bundle(bundle):
    manifest = read_manifest(bundle)
    rungs = ladder(manifest)
    assert [r.budget for r in rungs] == ["native", "0.35", "0.25"]
    assert rungs[0].cost > rungs[1].cost > rungs[2].cost
    assert [r.budget for r in ladder(manifest, "0.35")] == ["native", "0.35"]
    with pytest.raises(ConfigError, match=r"(--min-budget|min_budget) 0.5: the SLO ladder of this bundle is native, 0.35, 0.25"):
        ladder(manifest, "0.5")
    with pytest.raises(ConfigError, match="an SLO needs budgets cheaper than native"):
        ladder(manifest, "native")


def test_slo_must_be_positive():
    with pytest.raises(ConfigError, match=r"(--slo-ms|slo_ms) must be > 0 milliseconds, got 0"):
        SloController(RUNGS, 0, MAX_BATCH)
