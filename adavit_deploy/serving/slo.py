"""A latency SLO kept by spending less compute: the budget of requests that name none, chosen from load.

A fixed model under a load spike queues, and its latency explodes. An AdaViT
bundle has cheaper budgets at hand, so the server steps down the *ladder*
(native, then each calibrated budget below it, to ``--min-budget``) before the
SLO breaks, and back up when there is room. What it measures is what the
Python backend sees: each batch's start, end and size. With the dynamic
batcher, a request of batch *k* arrived after batch *k-1* started (else it
would have been in it, unless that batch was full), so batch *k*'s worst
latency is ``end_k - start_{k-1}`` while the instance is busy and
``end_k - start_k + queue delay`` after it was idle; a full batch means a
backlog. The controller looks at the worst of the last ``window_s``:

- **down** one rung when it passes ``down_at`` x SLO, or a batch was full;
  again no sooner than ``hold_s`` later (the queue drains first);
- **up** one rung when the window, scaled by the next rung's cost ratio
  (GMACs, which overstates the time ratio: per-call costs do not scale), is
  under ``up_at`` x SLO and the busy fraction so scaled under ``up_busy``,
  for ``up_after_s`` since the last step.

The gap between ``up_at`` and ``down_at`` is the hysteresis: a step up lands
where it would not step down again, so a steady load settles on one rung.
One controller per model instance (each sees its own batches).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..bundle import NATIVE, Manifest, budget_name
from ..errors import ConfigError, param


@dataclass(frozen=True)
class SloSettings:
    """The controller's thresholds, as fractions of the SLO and seconds (defaults: see the module)."""

    down_at: float = 0.8
    down_busy: float = 0.9
    up_at: float = 0.5
    up_busy: float = 0.7
    window_s: float = 1.0
    hold_s: float = 0.3
    up_after_s: float = 2.0
    backoff_s: float = 10.0
    max_up_after_s: float = 32.0


#: A gap between batches longer than this (plus the queue delay): the instance waited for a request.
IDLE_S = 0.002


@dataclass(frozen=True)
class _Batch:
    start: float
    end: float
    worst: float  # estimated latency of its oldest request
    size: int


@dataclass(frozen=True)
class Rung:
    """One budget of the ladder: its name and its mean cost (fraction of dense GMACs)."""

    budget: str
    cost: float


def ladder(manifest: Manifest, min_budget: str | None = None) -> list[Rung]:
    """Native, then every calibrated budget cheaper than it, cheapest last, stopping at ``min_budget``."""

    def cost(name: str) -> float:
        b = manifest.budgets[name]
        return b.gmacs_fraction if b.gmacs_fraction is not None else (b.target if b.target is not None else 1.0)

    top = cost(NATIVE)
    rungs = [Rung(NATIVE, top)] + sorted(
        (Rung(n, cost(n)) for n in manifest.budgets if n != NATIVE and cost(n) < top), key=lambda r: -r.cost
    )
    if min_budget is not None:
        floor = budget_name(min_budget)
        names = [r.budget for r in rungs]
        if floor not in names:
            raise ConfigError(
                f"{param('min_budget')} {min_budget}: the SLO ladder of this bundle is {', '.join(names)} "
                "(native and the calibrated budgets cheaper than it)"
            )
        rungs = rungs[: names.index(floor) + 1]
    if len(rungs) < 2:
        raise ConfigError(
            "an SLO needs budgets cheaper than native to step down to: "
            "`adavit-deploy calibrate BUNDLE --budgets native,0.35,0.25 --calib ...`"
        )
    return rungs


def check_slo(slo_ms: float) -> None:
    if not slo_ms > 0:
        raise ConfigError(f"{param('slo_ms')} must be > 0 milliseconds, got {slo_ms}")


class SloController:
    """The budget for requests without one; ``observe`` each batch (times in seconds, monotonic), read ``budget``."""

    def __init__(self, rungs: list[Rung], slo_ms: float, max_batch: int, queue_delay_s: float = 0.0,
                 settings: SloSettings = SloSettings()) -> None:  # fmt: skip
        check_slo(slo_ms)
        self.rungs, self.slo_s, self.max_batch = rungs, slo_ms / 1e3, max_batch
        self.queue_delay_s, self.settings = queue_delay_s, settings
        self.level = 0
        self.changed_at = -math.inf  # when the rung last changed
        self._batches: deque[_Batch] = deque()
        self._last: tuple[float, float, int] | None = None  # the previous batch's (start, end, size)
        self.up_after_s = settings.up_after_s  # doubled when a step up is undone soon after
        self._went_up = False

    @property
    def budget(self) -> str:
        return self.rungs[self.level].budget

    def observe(self, start: float, end: float, size: int) -> None:
        """One batch ran from ``start`` to ``end`` (this clock) with ``size`` samples; maybe change rung."""
        s = self.settings
        last, self._last = self._last, (start, end, size)
        busy = last is not None and start - last[1] <= self.queue_delay_s + IDLE_S  # no wait for a request
        # its oldest request arrived after the last batch started, on average 1/(size+1) of the way in
        worst = end - last[0] - (start - last[0]) / (size + 1) if busy else end - start + self.queue_delay_s
        backlog = size >= self.max_batch or (busy and last[2] >= self.max_batch)
        self._batches.append(_Batch(start, end, worst, size))
        while self._batches[0].end < end - max(s.window_s, self.up_after_s):
            self._batches.popleft()
        if end - self.changed_at < s.hold_s:  # the last step's effect is not measured yet
            return
        if backlog:
            return self._step(+1, end)
        if end - self._batches[0].start < s.hold_s:  # too little seen yet (the window restarts at a step)
            return
        latency, busy = self._load(s.window_s)
        if busy > s.down_busy or latency > s.down_at * self.slo_s:
            self._step(+1, end)
        elif self.level > 0 and end - self.changed_at >= self.up_after_s:
            ratio = self.rungs[self.level - 1].cost / max(self.rungs[self.level].cost, 1e-9)
            busy = self._load(self.up_after_s)[1]  # over the longer wait: steadier
            if latency * ratio < s.up_at * self.slo_s and busy * ratio < s.up_busy:
                self._step(-1, end)

    def _load(self, seconds: float) -> tuple[float, float]:
        """Over the last ``seconds``: the p90 worst latency (weighted by images), the fraction spent computing."""
        batches = [b for b in self._batches if b.end >= self._batches[-1].end - seconds]
        ranked = sorted(batches, key=lambda b: b.worst)
        weights = np.cumsum([b.size for b in ranked])
        p90 = ranked[int(np.searchsorted(weights, 0.9 * weights[-1]))].worst
        span = batches[-1].end - batches[0].start
        return p90, sum(b.end - b.start for b in batches) / max(span, 1e-9)

    def _step(self, direction: int, now: float) -> None:
        level = min(max(self.level + direction, 0), len(self.rungs) - 1)
        if level == self.level:
            return
        s = self.settings
        if direction > 0 and self._went_up and now - self.changed_at < s.backoff_s:
            self.up_after_s = min(2 * self.up_after_s, s.max_up_after_s)  # undone: wait longer next time
        elif now - self.changed_at >= s.backoff_s:
            self.up_after_s = s.up_after_s
        self._went_up = direction < 0
        self.level, self.changed_at = level, now
        self._batches.clear()  # the window measured the old rung
