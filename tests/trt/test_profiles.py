"""Optimization profiles from a bundle's I/O signatures: shapes, buckets, selection (pure, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from adavit_deploy.bundle import TensorSpec
from adavit_deploy.errors import ConfigError, InputError
from adavit_deploy.token_buckets import default_token_edges
from adavit_deploy.tensorrt.profiles import (
    ProfileSpec,
    ShapeRange,
    graph_profiles,
    max_batch_of,
    select_profile,
    split_batch,
)

C, N, H = 192, 197, 3
ATTN = [
    TensorSpec("x", "float32", ["batch", "tokens", C]),
    TensorSpec("heads", "int64", ["kept_heads"]),
    TensorSpec("key_bias", "float32", ["batch", "tokens"]),
]
POLICY = [TensorSpec("x", "float32", ["batch", N, C])]
STEM = [TensorSpec("images", "float32", ["batch", 3, 224, 224])]


@pytest.fixture
def spec() -> ProfileSpec:
    return ProfileSpec(max_batch=32, num_tokens=N, num_heads=H, token_edges=default_token_edges(N))


def test_attention_profiles_one_per_bucket(spec):
    profiles = graph_profiles(ATTN, spec, "attn_0")
    assert len(profiles) == 4
    first, last = profiles[0], profiles[-1]
    assert first["x"] == ShapeRange((1, 1, C), (32, 50, C), (32, 50, C))
    assert first["key_bias"] == ShapeRange((1, 1), (32, 50), (32, 50))
    assert first["heads"] == ShapeRange((1,), (H,), (H,))
    assert last["x"] == ShapeRange((1, 149, C), (32, 197, C), (32, 197, C))
    # buckets partition 1..N: every token count is in exactly one profile
    for k in range(1, N + 1):
        holders = [i for i, p in enumerate(profiles) if p["x"].contains((1, k, C))]
        assert len(holders) == 1, k


def test_whole_batch_graphs_have_one_profile(spec):
    (policy,) = graph_profiles(POLICY, spec, "policy_0")
    assert policy["x"] == ShapeRange((1, N, C), (32, N, C), (32, N, C))
    (stem,) = graph_profiles(STEM, spec, "stem")
    assert stem["images"].min == (1, 3, 224, 224) and stem["images"].max == (32, 3, 224, 224)


def test_spec_overrides_and_validation():
    spec = ProfileSpec(max_batch=8, num_tokens=17, num_heads=3, token_edges=(9, 17), opt_batch=2, opt_heads=1)
    profiles = graph_profiles(ATTN, spec)
    assert [p["x"].opt for p in profiles] == [(2, 9, C), (2, 17, C)]
    assert profiles[0]["heads"].opt == (1,)
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        ProfileSpec(max_batch=0, num_tokens=17, num_heads=3, token_edges=(17,))
    with pytest.raises(ConfigError, match="rise strictly"):
        ProfileSpec(max_batch=8, num_tokens=17, num_heads=3, token_edges=(9, 9, 17))
    with pytest.raises(ConfigError, match="rise strictly"):
        ProfileSpec(max_batch=8, num_tokens=17, num_heads=3, token_edges=(9, 16))
    with pytest.raises(ConfigError, match="opt_batch"):
        ProfileSpec(max_batch=8, num_tokens=17, num_heads=3, token_edges=(17,), opt_batch=9)


def test_unknown_dynamic_axis_is_refused(spec):
    with pytest.raises(ConfigError, match="mystery"):
        graph_profiles([TensorSpec("x", "float32", ["batch", "mystery"])], spec, "odd")


def test_select_profile_picks_the_token_bucket(spec):
    profiles = graph_profiles(ATTN, spec)
    shapes = lambda k, g=4, h=2: {"x": (g, k, C), "heads": (h,), "key_bias": (g, k)}  # noqa: E731
    assert [select_profile(profiles, shapes(k)) for k in (1, 50, 51, 99, 100, 197)] == [0, 0, 1, 1, 2, 3]
    with pytest.raises(InputError, match="build-trt"):
        select_profile(profiles, shapes(10, g=33))  # batch above max
    with pytest.raises(InputError):
        select_profile(profiles, shapes(198))
    with pytest.raises(InputError):
        select_profile(profiles, shapes(10, h=4))  # more heads than the model has
    with pytest.raises(InputError):
        select_profile(profiles, {"x": (4, 10)})  # wrong rank


def test_split_batch_and_max_batch(spec):
    profiles = graph_profiles(ATTN, spec)
    assert max_batch_of(profiles, ["x", "key_bias"]) == 32
    assert max_batch_of(profiles, []) == 0
    feed = {"x": np.zeros((5, 7, C)), "heads": np.arange(2), "key_bias": np.zeros((5, 7))}
    chunks = split_batch(feed, ["x", "key_bias"], 2)
    assert [len(c["x"]) for c in chunks] == [2, 2, 1]
    assert all(c["heads"] is feed["heads"] for c in chunks)
    assert [len(c["key_bias"]) for c in chunks] == [2, 2, 1]
    with pytest.raises(InputError, match="disagree"):
        split_batch({"x": np.zeros((5, 7, C)), "key_bias": np.zeros((4, 7))}, ["x", "key_bias"], 2)
