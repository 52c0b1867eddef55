"""Elastic serving on a real tritonserver: per-request budgets, and the SLO controller under load.

The bundle has budgets native, 0.35 and 0.25 (``.ci/serve`` exports the demo
model so; the main suite's ``budgets_bundle`` elsewhere). The controller is
driven by what cannot depend on the machine's speed: more clients than the
batcher's maximum batch keep every batch full (a backlog: step down), and
requests paced far apart leave it idle (room: step back up).
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="needs the client extra: pip install 'adavit-deploy[client]'")

from tritonclient.utils import InferenceServerException  # noqa: E402

from adavit_deploy import load_bundle  # noqa: E402
from adavit_deploy.bench.server import Client  # noqa: E402
from adavit_deploy.errors import BackendError  # noqa: E402
from adavit_deploy.serving import RepositoryOptions, write_repository  # noqa: E402
from adavit_deploy.serving.server import TritonServer, find_triton  # noqa: E402

try:
    find_triton()
except BackendError as e:
    pytest.skip(f"needs the serve extra: {e}", allow_module_level=True)

DECISIONS = ("head_select", "layer_select", "token_select")
MAX_BATCH = 4


@pytest.fixture(scope="module")
def images(bundle) -> np.ndarray:
    cfg = load_bundle(bundle).cfg
    return np.random.default_rng(11).standard_normal((8, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32)


def _serve(bundle, tmp_path, ports, **options) -> TritonServer:
    repo = write_repository(bundle, tmp_path / "models", RepositoryOptions(max_batch=MAX_BATCH, threads=1, **options))
    return TritonServer(repo, log=open(tmp_path / "triton.log", "w"), **ports).start()


def _metrics(server: TritonServer) -> dict[tuple[str, str], float]:
    """``{(metric, budget): value}`` of our metrics (the adaptive model's)."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out = {}
    for name, labels, value in re.findall(r'^(adavit_\w+)\{([^}]*)\}\s+(\S+)$', text, re.M):
        out[(name, re.search(r'budget="([^"]+)"', labels).group(1))] = float(value)
    return out


def _concurrently(server: TritonServer, images: np.ndarray, budgets: list[str | None]) -> list[dict[str, np.ndarray]]:
    """One request per image, all at once (one thread and connection each), at each image's budget."""
    out: list = [None] * len(images)

    def send(i: int) -> None:
        client = Client(server.http_url)
        try:
            out[i] = client.infer("adavit", images[i : i + 1], budgets[i])
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_mixed_budgets_in_one_batch_equal_in_process(bundle, images, tmp_path, ports):
    budgets = ["native", "0.35", "0.25", None, "auto", "0.25", "0.35", "native"]
    server = _serve(bundle, tmp_path, ports, queue_delay_us=200_000)  # the requests meet in batches
    try:
        got = _concurrently(server, images, budgets)
        metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    finally:
        assert server.stop() == 0
    execs = float(re.search(r'^nv_inference_exec_count\{model="adavit",version="1"\} (\S+)$', metrics, re.M).group(1))
    assert execs < len(images)  # some requests shared a batch: their budgets were mixed in one call
    with load_bundle(bundle) as rt:
        for i, budget in enumerate(budgets):
            applied = budget if budget not in (None, "auto") else "native"
            want = rt.infer(images[i : i + 1], budget=applied)
            assert got[i]["budget"].tolist() == [[applied.encode()]]
            for key in DECISIONS:
                np.testing.assert_array_equal(got[i][key], getattr(want, key))
            np.testing.assert_allclose(got[i]["logits"], want.logits, rtol=0, atol=1e-5)
            np.testing.assert_allclose(got[i]["gmacs"][:, 0], want.gmacs, rtol=1e-6)


def test_a_budget_the_model_lacks_is_a_400_and_serving_goes_on(bundle, images, tmp_path, ports):
    server = _serve(bundle, tmp_path, ports)
    client = Client(server.http_url)
    try:
        with pytest.raises(InferenceServerException) as e:
            client.infer("adavit", images[:1], "0.4")
        assert e.value.status() == "400"
        assert "budget '0.4': this model serves budgets native, 0.35, 0.25 (or auto" in str(e.value)
        assert client.infer("adavit", images[:1], "0.25")["budget"].tolist() == [[b"0.25"]]
        assert ("adavit_slo_budget", "native") not in _metrics(server)  # no SLO: no controller
    finally:
        client.close()
        assert server.stop() == 0


def test_the_controller_steps_down_under_load_and_back_up_after(bundle, images, tmp_path, ports):
    server = _serve(bundle, tmp_path, ports, slo_ms=2000)
    try:
        assert _metrics(server)[("adavit_slo_budget", "native")] == 1
        stop = time.monotonic() + 2.0
        assert len(images) == 2 * MAX_BATCH
        while time.monotonic() < stop:  # twice as many requests at once as a batch holds: a backlog
            _concurrently(server, images, [None] * len(images))
        m = _metrics(server)
        assert m[("adavit_slo_budget", "native")] == 0
        assert m[("adavit_images_total", "0.25")] > 0  # it reached the cheapest rung
        client = Client(server.http_url)
        try:
            applied = []
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and applied[-1:] != [b"native"]:
                applied.append(client.infer("adavit", images[:1], "auto")["budget"][0, 0])
                time.sleep(0.05)  # paced: the instance is idle most of the time
        finally:
            client.close()
        assert applied[0] != b"native" and applied[-1] == b"native", applied
        assert _metrics(server)[("adavit_slo_budget", "native")] == 1
    finally:
        assert server.stop() == 0


def test_open_loop_load_rows_and_refusals(bundle, images, tmp_path, ports):
    from adavit_deploy.bench.open_loop import OpenLoopReport, run_open_loop
    from adavit_deploy.errors import ConfigError

    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(len(images)) % 3)
    server = _serve(bundle, tmp_path, ports, slo_ms=500)
    try:
        seen = []
        report = run_open_loop(server.http_url, "20,0.5x", "native,auto,0.25", slo_ms=500, duration=1.5,
                               images=tmp_path / "labelled.npz", warmup_s=0.5, capacity_s=1.0,
                               progress=lambda what, done, total: seen.append((done, total)))  # fmt: skip
        with pytest.raises(ConfigError, match=r"policy 0.4: the server refused it: .*this model serves budgets native"):
            run_open_loop(server.http_url, "5", "native,0.4", slo_ms=500, duration=1.0)
        with pytest.raises(ConfigError, match=r"policy dense: 'adavit_dense' is not served \(serve with --with-dense\)"):
            run_open_loop(server.http_url, "5", "dense", slo_ms=500, duration=1.0)
    finally:
        assert server.stop() == 0
    assert seen[-1] == (6, 7)  # the capacity, then 2 rates x 3 policies
    assert report.capacity_rps > 0 and report.slo_ms == 500
    assert [(r["rate"], r["policy"]) for r in report.open_loop] == [
        (rate, p) for rate in ("20", "0.5x") for p in ("native", "auto", "0.25")
    ]
    for r in report.open_loop:
        assert r["errors"] == r["unanswered"] == 0, r
        assert r["offered_rps"] > 0 and 0 <= r["goodput"] <= 1 and r["p50_ms"] <= r["p99_ms"]
        assert 0 <= r["top1"] <= 1 and r["mean_gmacs"] > 0
        if r["policy"] != "auto":
            assert set(r["budgets"]) == {r["policy"]}  # a fixed budget is what every answer says it got
    report.save(tmp_path / "ol.json")
    assert OpenLoopReport.load(tmp_path / "ol.json").open_loop == report.open_loop
