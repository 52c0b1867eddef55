"""Routing (``runtime/routing.py``), alone: groups, padding, gather and scatter, the split's statistics."""

from __future__ import annotations

import numpy as np

from adavit_deploy.runtime.routing import RoutingStats, gather, route, scatter


def _tokens(counts: list[int], n: int = 10) -> np.ndarray:
    tokens = np.zeros((len(counts), n), bool)
    for s, c in enumerate(counts):
        tokens[s, :c] = True
    return tokens


def test_samples_group_by_head_set_and_padding_is_capped():
    heads = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 1, 0]], bool)
    tokens = _tokens([10, 9, 10, 3])
    groups = route(np.ones(4, bool), heads, tokens)
    by_samples = {tuple(g.samples): g for g in groups}
    # samples 0, 1 and 3 share heads {0, 1}; 3 keeps 3 tokens of 10: padding it would waste > 12.5%
    assert set(by_samples) == {(0, 1), (3,), (2,)}
    assert by_samples[(0, 1)].heads.tolist() == [0, 1] and by_samples[(2,)].heads.tolist() == [1, 2]
    assert by_samples[(0, 1)].padding == 1 and by_samples[(3,)].padding == 0
    assert route(np.zeros(4, bool), heads, tokens) == []


def test_one_sample_is_one_call_of_exactly_its_tokens():
    tokens = _tokens([4, 7])
    (group,) = route(np.array([False, True]), np.ones((2, 3), bool), tokens)
    assert group.samples.tolist() == [1] and group.index.tolist() == [list(range(10, 17))] and group.valid.all()


def test_gather_then_scatter_touches_only_kept_tokens():
    x = np.arange(2 * 10 * 4, dtype=np.float32).reshape(2, 10, 4)
    tokens = _tokens([10, 9])
    (group,) = route(np.ones(2, bool), np.ones((2, 3), bool), tokens)
    y, key_bias = gather(x, group)
    assert y.shape == (2, 10, 4) and np.isneginf(key_bias[1, 9]) and (key_bias[0] == 0).all()
    before = x.copy()
    scatter(x, group, y + 1)
    assert np.array_equal(x[tokens], before[tokens] + 1) and np.array_equal(x[~tokens], before[~tokens])


def test_routing_stats_merge():
    a = RoutingStats(calls=2, token_slots=10, padded_slots=1, paths={"0:attn:0": 2}, tactics={"gather": 2})
    b = RoutingStats(calls=1, constant_adds=3, token_slots=10, paths={"0:attn:0": 1, "1:mlp:1": 1}, tactics={"masked": 1})
    a.merge(b)
    assert (a.calls, a.constant_adds, a.padding_waste) == (3, 3, 0.05)
    assert a.paths == {"0:attn:0": 3, "1:mlp:1": 1} and a.tactics == {"gather": 2, "masked": 1}
