"""Open-loop load on a running Triton server: requests arrive at a rate, whether or not it keeps up.

Closed-loop clients (``bench/server.py``) wait for each answer, so they slow
down with the server and never show overload. Here arrivals are Poisson at a
fixed rate (requests/s, or ``1.3x``: a multiple of the first policy's capacity,
measured closed-loop in the same run), one image per request, each sent by a
pool of sender threads at its scheduled time; its latency counts from that
time, so a backlog in the client is charged like one in the server (no
coordinated omission). A *policy* is what every request asks for: a budget
name (``native``, ``0.35``), ``auto`` (the server's SLO controller) or
``dense`` (the ``<model>_dense`` twin, ``--with-dense``). Policies are run
in turn at each rate, their order rotating (a noisy machine slows all alike).
Each segment runs ``warmup_s`` at its rate before the ``duration`` that counts.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..bundle import budget_name
from ..documents import Document, Saved
from ..errors import AdaViTDeployError, BackendError, ConfigError, InputError, param
from ..lists import comma_items
from ..serving.batch import AUTO
from ..serving.repository import DENSE_SUFFIX
from .environment import environment
from .server import REQUEST_TIMEOUT_S, Client, closed_loop, Segment, check_address, load_images

SCHEMA = "adavit-deploy/bench-open-loop"
SCHEMA_VERSION = 1
DOCUMENT = Document("open-loop report", "open-loop report", SCHEMA, SCHEMA_VERSION,
                    "run `adavit-deploy bench-server --rates ... --json` again", InputError)  # fmt: skip
DENSE = "dense"
#: Sender threads: each holds one connection and one request in flight.
SENDERS = 64
#: After the last arrival, how long answers are waited for; what is still queued then is unanswered.
DRAIN_S = 10.0

#: ``progress(what, done, total)``: ``done`` of ``total`` segments.
Progress = Callable[[str, int, int], None]


@dataclass
class OpenLoopReport(Saved):
    """One open-loop run: a row per (rate, policy) under ``open_loop``; JSON (``docs/SERVING.md``)."""

    DOCUMENT: ClassVar[Document] = DOCUMENT

    open_loop: list[dict[str, Any]]
    slo_ms: float
    capacity_rps: float | None
    settings: dict[str, Any]
    environment: dict[str, Any]


def parse_rates(value: str | Sequence[str]) -> list[str]:
    """``"20,0.5x,1.3x"``: requests per second, or multiples of the capacity (``x``); each > 0."""
    rates = comma_items(value)
    for r in rates:
        try:
            ok = float(r[:-1] if r.endswith("x") else r) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{param('rates')} {r!r}: give requests per second or a multiple of capacity, e.g. 20,0.5x,1.3x")
    if not rates:
        raise ConfigError(f"{param('rates')}: give at least one rate, e.g. 0.5x,1.3x")
    return rates


def parse_policies(value: str | Sequence[str]) -> list[str]:
    """``"native,auto,0.35,dense"``: budget names (canonical), ``auto`` or ``dense``."""
    out = []
    for p in comma_items(value):
        if p in (AUTO, DENSE):
            out.append(p)
            continue
        try:
            out.append(budget_name(p))
        except AdaViTDeployError:
            raise ConfigError(f"{param('policies')} {p!r}: give budget names (native, 0.35), {AUTO} or {DENSE}") from None
    if not out:
        raise ConfigError(f"{param('policies')}: give at least one, e.g. native,auto")
    return out


def labelled_images(images: str | Path | None, shape: tuple[int, ...],
                    num_classes: int) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """The requests' images, and their labels where the source has them (``demo``, an .npz with ``labels``)."""
    from ..collection import from_array, open_collection
    from ..inputs import read_array

    if images is not None and str(images) == "demo":
        demo = open_collection("demo")
        return demo.array, demo.labels, demo.source
    pool, source = load_images(images, shape)
    if images is None or Path(images).suffix != ".npz":
        return pool, None, source
    try:
        labels = read_array(Path(images), "labels")
    except InputError:
        return pool, None, source  # no labels: no top-1
    labelled = from_array(pool, source, labels)
    labelled.check_classes(num_classes)
    return pool, labelled.labels, source


@dataclass
class Answer:
    latency_s: float  # from the request's scheduled time
    done_s: float  # since the segment's start
    budget: str | None
    gmacs: float | None
    label: int  # argmax of its logits


def send_schedule(url: str, protocol: str, model: str, budget: str | None, schedule: np.ndarray, pool: np.ndarray,
              drain_s: float) -> list[Answer | str | None]:  # fmt: skip
    """Send request ``i`` at ``schedule[i]`` seconds from now; its answer, its error message, or None (unanswered)."""
    results: list[Answer | str | None] = [None] * len(schedule)
    todo: queue.Queue[int | None] = queue.Queue()
    t0 = time.perf_counter() + 0.05
    deadline = t0 + (schedule[-1] if len(schedule) else 0.0) + drain_s

    def sender() -> None:
        client = Client(url, protocol)
        try:
            while (i := todo.get()) is not None:
                if time.perf_counter() > deadline:
                    continue  # too late to send: unanswered
                try:
                    out = client.infer(model, pool[i % len(pool)][None], budget)
                except Exception as e:  # noqa: BLE001 - a failed request is a result to count
                    results[i] = str(e).splitlines()[0] if str(e) else type(e).__name__
                    continue
                now = time.perf_counter()
                results[i] = Answer(
                    now - t0 - schedule[i], now - t0, out["budget"][0, 0].decode() if "budget" in out else None,
                    float(out["gmacs"][0, 0]) if "gmacs" in out else None, int(out["logits"][0].argmax()),
                )  # fmt: skip
        finally:
            client.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for i, at in enumerate(schedule):
        wait = t0 + at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        todo.put(i)
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join(timeout=max(deadline - time.perf_counter(), 0) + REQUEST_TIMEOUT_S)
    return results


def _row(policy: str, rate: str, rps: float, seconds: float, warmup_s: float, schedule: np.ndarray, results: list,
         labels: np.ndarray | None, slo_ms: float) -> dict[str, Any]:  # fmt: skip
    counted = [i for i, at in enumerate(schedule) if at >= warmup_s]
    answers = [results[i] for i in counted if isinstance(results[i], Answer)]
    errors = [results[i] for i in counted if isinstance(results[i], str)]
    ms = np.array([a.latency_s for a in answers]) * 1e3
    p = dict(zip(("p50_ms", "p90_ms", "p99_ms"), map(float, np.percentile(ms, [50, 90, 99])))) if len(ms) else {}
    gmacs = [a.gmacs for a in answers if a.gmacs is not None]
    budgets: dict[str, int] = {}
    for a in answers:
        if a.budget:
            budgets[a.budget] = budgets.get(a.budget, 0) + 1
    row = {
        "policy": policy,
        "rate": rate,
        "target_rps": rps,
        "offered_rps": len(counted) / seconds,
        "achieved_rps": sum(warmup_s <= a.done_s < warmup_s + seconds for a in answers) / seconds,
        "p50_ms": p.get("p50_ms"),
        "p90_ms": p.get("p90_ms"),
        "p99_ms": p.get("p99_ms"),
        "goodput": sum(a.latency_s * 1e3 <= slo_ms for a in answers) / len(counted) if counted else 0.0,
        "mean_gmacs": float(np.mean(gmacs)) if gmacs else None,
        "budgets": budgets,
        "errors": len(errors),
        "unanswered": len(counted) - len(answers) - len(errors),
        "error_samples": sorted(set(errors))[:3],
    }
    if labels is not None:
        hits = [results[i].label == labels[i % len(labels)] for i in counted if isinstance(results[i], Answer)]
        row["top1"] = float(np.mean(hits)) if hits else None
    return row


def _target(model: str, policy: str) -> tuple[str, str | None]:
    """The model a policy's requests go to, and the budget they ask for."""
    return (model + DENSE_SUFFIX, None) if policy == DENSE else (model, policy)


def _probe(client: Client, model: str, policies: list[str], image: np.ndarray) -> None:
    """One request per policy first: a budget the server lacks, or no dense twin, is one line now."""
    for policy in policies:
        name, budget = _target(model, policy)
        if policy == DENSE and not client.model_ready(name):
            raise ConfigError(f"policy {DENSE}: {name!r} is not served (serve with --with-dense)")
        try:
            client.infer(name, image, budget)
        except Exception as e:  # noqa: BLE001 - the server's one-line message says what is wrong
            raise ConfigError(f"policy {policy}: the server refused it: {str(e).splitlines()[0]}") from None


def run_open_loop(url: str, rates: str | Sequence[str], policies: str | Sequence[str], slo_ms: float,
                  duration: float = 20.0, images: str | Path | None = None, model: str = "adavit",
                  protocol: str = "http", warmup_s: float = 3.0, capacity_s: float = 5.0, seed: int = 0,
                  progress: Progress | None = None) -> OpenLoopReport:  # fmt: skip
    """Poisson load at each rate for each policy; a row each (``OpenLoopReport``)."""
    rate_list, policy_list = parse_rates(rates), parse_policies(policies)
    check_address(url)
    for what, value in (("slo_ms", slo_ms), ("duration", duration), ("capacity_s", capacity_s)):
        if not value > 0:
            raise ConfigError(f"{param(what)} must be > 0, got {value}")
    if warmup_s < 0:
        raise ConfigError(f"{param('warmup_s')} must be >= 0, got {warmup_s}")
    probe = Client(url, protocol)
    try:
        if not probe.model_ready(model):
            raise BackendError(f"model {model!r} is not ready on {url} ({protocol}): check the address and {param('model')}")
        config = probe.config(model)
        shape = tuple(int(d) for d in config["input"][0]["dims"])
        classes = int(next(o for o in config["output"] if o["name"] == "logits")["dims"][0])
        pool, labels, source = labelled_images(images, shape, classes)
        _probe(probe, model, policy_list, pool[:1])
    finally:
        probe.close()
    capacity = None
    measure = any(r.endswith("x") for r in rate_list)
    total, done = len(rate_list) * len(policy_list) + measure, 0
    if measure:  # closed loop, as many clients as two full batches: the server never waits for a request
        first = policy_list[0]
        if progress:
            progress(f"capacity of {first} (closed loop)", done, total)
        seg = Segment()
        clients = 2 * max(int(config.get("max_batch_size", 1)), 1)
        name, budget = _target(model, first)
        closed_loop(url, protocol, clients, name, pool, capacity_s, seg, budget)
        capacity = len(seg.latencies) / seg.seconds
        if not capacity > 0:
            raise BackendError(f"measuring the capacity of {first} got no answers: {', '.join(seg.errors[:1]) or 'none'}")
        done += 1
    rng = np.random.default_rng(seed)
    rows = []
    for k, rate in enumerate(rate_list):
        rps = float(rate[:-1]) * capacity if rate.endswith("x") else float(rate)
        for j in range(len(policy_list)):
            policy = policy_list[(j + k) % len(policy_list)]
            if progress:
                progress(f"{policy} at {rate} ({rps:.1f} req/s)", done, total)
            gaps = rng.exponential(1 / rps, size=int(rps * (warmup_s + duration) * 1.5) + 10)
            schedule = np.cumsum(gaps)
            schedule = schedule[schedule < warmup_s + duration]
            name, budget = _target(model, policy)
            results = send_schedule(url, protocol, name, budget, schedule, pool, DRAIN_S)
            rows.append(_row(policy, rate, rps, duration, warmup_s, schedule, results, labels, slo_ms))
            done += 1
    order = {r: i for i, r in enumerate(rate_list)}
    rows.sort(key=lambda r: (order[r["rate"]], policy_list.index(r["policy"])))
    settings = {"url": url, "protocol": protocol, "model": model, "rates": rate_list, "policies": policy_list,
                "duration_s": duration, "warmup_s": warmup_s, "capacity_s": capacity_s, "seed": seed,
                "senders": SENDERS, "capacity_policy": policy_list[0] if capacity else None,
                "images": {"source": source, "count": len(pool), "labelled": labels is not None}}  # fmt: skip
    return OpenLoopReport(rows, slo_ms, capacity, settings, environment("remote", 0))

