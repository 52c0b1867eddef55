"""Token bucket edges: equal-width defaults and quantiles of calibrated kept-token counts (pure)."""

from __future__ import annotations

import pytest

from adavit_deploy.errors import ConfigError
from adavit_deploy.token_buckets import buckets_from_counts, default_token_edges

N = 197


def test_default_token_edges():
    assert default_token_edges(197) == (50, 99, 148, 197)
    assert default_token_edges(17) == (5, 9, 13, 17)
    assert default_token_edges(2) == (1, 2)
    assert default_token_edges(1) == (1,)
    assert default_token_edges(197, buckets=1) == (197,)
    with pytest.raises(ConfigError):
        default_token_edges(0)


def test_buckets_from_calibration_counts():
    counts = [10] * 50 + [60] * 30 + [120] * 15 + [197] * 5
    # quartiles of the 100 counts ("higher"): the 26th is 10, the 51st and 76th are 60; N closes the last bucket
    assert buckets_from_counts(counts, N) == (10, 60, 197)
    assert buckets_from_counts([], N) == default_token_edges(N)
    with pytest.raises(ConfigError, match="1..197"):
        buckets_from_counts([0, 5], N)
