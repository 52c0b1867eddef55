"""Accuracy against cost: top-1 and mean GMACs of a bundle at each budget and precision.

The trade-off the paper promises ("efficiency/accuracy trade-offs conditioned
on different computational budgets"), measured on labelled held-out images
with the deployed runtime itself, plus the dense graph as the ceiling. Each
row also says how far its predictions and decisions stray from fp32 at the
same budget.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import atomic_file
from .collection import DEMO, Collection, open_collection
from .cost import dense_gmacs
from .errors import AdaViTDeployError, InputError
from .machine import cpu_model
from .parity import agreement
from .runtime import AdaptiveRuntime, InferResult, load_bundle


@dataclass
class EvalRow:
    budget: str
    precision: str
    top1: float
    top5: float
    gmacs_mean: float
    gmacs_fraction: float
    top1_agreement_vs_fp32: float
    decision_agreement_vs_fp32: float
    max_abs_logit_diff_vs_fp32: float


@dataclass
class Evaluation:
    """``evaluate``'s table, the dense graph's accuracy, and what it read, how fast."""

    rows: list[EvalRow]
    dense_top1: float
    dense_top5: float
    source: dict  # Collection.describe(), with the files left out (--skip-bad)
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Images through the whole table (every budget and precision, and dense) per second, decode included."""
        return self.source["images"] / self.seconds if self.seconds else 0.0


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among their ``k`` largest logits (all of them when ``k >= classes``)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


@dataclass
class _Tally:
    """One row's sums over the batches seen so far: only counts are kept, never the logits."""

    images: int = 0
    top1: int = 0
    top5: int = 0
    gmacs: float = 0.0
    agree_top1: int = 0
    decisions_equal: int = 0
    decisions: int = 0
    max_diff: float = 0.0

    def add(self, got: InferResult, labels: np.ndarray, ref: InferResult) -> None:
        pred = got.logits.argmax(1)
        self.images += len(labels)
        self.top1 += int((pred == labels).sum())
        self.top5 += topk_hits(got.logits, labels, 5)
        self.gmacs += float(got.gmacs.sum())
        a = agreement(ref, got)
        self.agree_top1 += a.top1_equal
        self.decisions_equal += a.decisions_equal
        self.decisions += a.decisions
        self.max_diff = max(self.max_diff, a.max_abs_logit_diff)

    def row(self, budget: str, precision: str, dense: float) -> EvalRow:
        n = max(self.images, 1)
        return EvalRow(
            budget=budget,
            precision=precision,
            top1=self.top1 / n,
            top5=self.top5 / n,
            gmacs_mean=self.gmacs / n,
            gmacs_fraction=self.gmacs / n / dense,
            top1_agreement_vs_fp32=self.agree_top1 / n,
            decision_agreement_vs_fp32=self.decisions_equal / self.decisions if self.decisions else 1.0,
            max_abs_logit_diff_vs_fp32=self.max_diff,
        )


def evaluate(
    bundle: str | Path,
    data: Collection | str | Path = DEMO,
    budgets: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    threads: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    backend: str = "ort",
) -> Evaluation:
    """Rows for every (budget, precision) of the bundle (or those given), and the dense graph, on ``backend``
    (``ov``: ``bf16`` too by default, where the CPU has it), over a collection (``open_collection``).

    Streamed: each batch is decoded once (``Collection.batches``, ``workers`` threads) and run through
    every row and the dense graph, and only counts are kept, so memory holds a few batches and one
    runtime per precision (each graph's session made once), whatever the collection's size.
    ``limit``: a seeded, class-balanced subset. ``progress(what, images_done, images_total)``.
    """
    collection = data if isinstance(data, Collection) else open_collection(data)
    collection = collection.subset(limit)
    step = progress or (lambda *_: None)
    with load_bundle(bundle, backend, threads=threads) as rt, ExitStack() as stack:
        collection = collection.require_labels(rt.cfg.num_classes)
        budgets = list(budgets or rt.manifest.budgets)
        for b in budgets:
            rt.manifest.budget(b)  # an unknown budget fails before any image is decoded
        precisions = ["fp32", *(p for p in precisions or runnable_precisions(rt) if p != "fp32")]
        runs = {p: rt if p == rt.precision else stack.enter_context(AdaptiveRuntime(rt.bundle, rt.manifest, rt.backend, precision=p))
                for p in precisions}  # fmt: skip
        tallies = {(b, p): _Tally() for b in budgets for p in precisions}
        dense_hits, skipped, done = [0, 0], [], 0
        step("decoding the first batch", 0, len(collection))
        start = time.perf_counter()  # images/s: decoding and every row, not loading the bundle
        stream = stack.enter_context(closing(collection.batches(rt.cfg, batch_size, workers, skip_bad)))
        for batch in stream:
            skipped += batch.skipped
            if len(batch.names):
                for b in budgets:
                    ref = runs["fp32"].infer(batch.images, batch_size, budget=b)
                    for p in precisions:
                        got = ref if p == "fp32" else runs[p].infer(batch.images, batch_size, budget=b)
                        tallies[b, p].add(got, batch.labels, ref)
                logits = rt.dense(batch.images)
                dense_hits[0] += int((logits.argmax(1) == batch.labels).sum())
                dense_hits[1] += topk_hits(logits, batch.labels, 5)
            done += len(batch.names) + len(batch.skipped)
            step(f"{len(budgets) * len(precisions)} rows and dense", done, len(collection))
        read = len(collection) - len(skipped)
        if read == 0:
            raise InputError(f"{collection.source}: every image was unreadable ({len(skipped)} skipped)")
        dense = dense_gmacs(rt.cfg)
        rows = [tallies[b, p].row(b, p, dense) for b in budgets for p in precisions]
    source = {**collection.describe(), "images": read, "skipped": skipped, "limit": limit, "seed": 0 if limit else None}
    return Evaluation(rows, dense_hits[0] / read, dense_hits[1] / read, source, time.perf_counter() - start)


def runnable_precisions(rt: AdaptiveRuntime) -> list[str]:
    """The bundle's graph precisions, and ``bf16`` where ``rt``'s backend runs it on this CPU."""
    try:
        rt.backend.check_precision("bf16")
    except AdaViTDeployError:
        return rt.manifest.precisions
    return [*rt.manifest.precisions, "bf16"]


def to_json(result: Evaluation, backend: str = "ort") -> dict:
    """The table, what it read and where it was measured (backends differ in the last bits: bf16, fp16 on OpenVINO)."""
    return {
        "data": result.source["path"],
        "source": result.source,
        "backend": backend,
        "cpu": cpu_model(),
        "images_per_s": result.images_per_s,
        "dense_top1": result.dense_top1,
        "dense_top5": result.dense_top5,
        "rows": [asdict(r) for r in result.rows],
    }


def save_json(path: str | Path, result: Evaluation, backend: str = "ort") -> Path:
    """Write ``to_json``'s table to ``path``, atomically."""
    path = Path(path)
    with atomic_file(path, "--json") as tmp:
        tmp.write_text(json.dumps(to_json(result, backend), indent=2) + "\n")
    return path
