"""Accuracy against cost: top-1 and mean GMACs of a bundle at each budget and precision.

The trade-off the paper promises ("efficiency/accuracy trade-offs conditioned
on different computational budgets"), measured on labelled held-out images
with the deployed runtime itself, plus the dense graph as the ceiling. Each
row also says how far its predictions and decisions stray from fp32 at the
same budget.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .atomic import atomic_file
from .cost import dense_gmacs
from .errors import AdaViTDeployError, InputError, param
from .inputs import read_array, read_images
from .machine import cpu_model
from .parity import compare
from .runtime import AdaptiveRuntime, load_bundle


@dataclass
class EvalRow:
    budget: str
    precision: str
    top1: float
    gmacs_mean: float
    gmacs_fraction: float
    top1_agreement_vs_fp32: float
    decision_agreement_vs_fp32: float
    max_abs_logit_diff_vs_fp32: float


def labelled_data(source: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``"demo"`` (the demo's 360 held-out digits) or an ``.npz`` with ``images`` and ``labels``."""
    if str(source) == "demo":
        from .demo import load_digits_split

        split = load_digits_split()
        return split.test_images, split.test_labels, "demo digits, held-out split (360 images)"
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file ({param('source', 'data')} takes 'demo' or an .npz with 'images' and 'labels' arrays)")
    if path.suffix != ".npz" or not path.is_file():
        raise InputError(f"{path}: need 'demo' or an .npz file with 'images' and 'labels' arrays")
    images = read_images(path)
    try:
        labels = read_array(path, "labels")
    except InputError as e:
        raise InputError(f"{e}: evaluate needs 'images' and 'labels' arrays") from None
    return images, labels, str(path)


def check_labels(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """One integer class index in ``[0, num_classes)`` per image, as int64; anything else is one line."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be one class index per image (1-D); got shape {labels.shape}")
    if len(labels) != count:
        raise InputError(f"{count} images but {len(labels)} labels: give one label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integer class indices; got {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise InputError(
            f"labels must be class indices in [0, {num_classes}); label {labels[bad[0]]} at index {bad[0]} "
            f"({len(bad)} outside in all)"
        )
    return labels.astype(np.int64)


def evaluate(
    bundle: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    budgets: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    threads: int = 0,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
    backend: str = "ort",
) -> tuple[list[EvalRow], float]:
    """Rows for every (budget, precision) of the bundle (or those given), and the dense graph's top-1,
    on ``backend`` (``ov``: ``bf16`` too by default, where the CPU has it).

    One runtime per precision serves every budget, so each graph's session is made once; they are
    open together (peak memory: the weights of every precision asked for).
    """
    step = progress or (lambda _: None)
    with load_bundle(bundle, backend, threads=threads) as rt:
        labels = check_labels(labels, len(images), rt.cfg.num_classes)
        rows = _rows(rt, images, labels, budgets, precisions, batch_size, step)
        dense_logits = np.concatenate([rt.dense(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return rows, float((dense_logits.argmax(1) == labels).mean())


def _rows(
    rt: AdaptiveRuntime,
    images: np.ndarray,
    labels: np.ndarray,
    budgets: Sequence[str] | None,
    precisions: Sequence[str] | None,
    batch_size: int,
    step: Callable[[str], None],
) -> list[EvalRow]:
    budgets = list(budgets or rt.manifest.budgets)
    precisions = ["fp32", *(p for p in precisions or runnable_precisions(rt) if p != "fp32")]
    dense = dense_gmacs(rt.cfg)
    rows = []
    with ExitStack() as stack:  # one runtime per precision, its sessions made once for every budget
        runs = {
            p: rt if p == rt.precision else stack.enter_context(AdaptiveRuntime(rt.bundle, rt.manifest, rt.backend, precision=p))
            for p in precisions
        }
        for budget in budgets:
            ref = None
            for precision in precisions:
                step(f"budget {budget}, {precision}")
                got = runs[precision].infer(images, batch_size, budget=budget)
                ref = ref or got  # fp32 runs first
                vs_fp32 = compare(ref, got)
                rows.append(
                    EvalRow(
                        budget=budget,
                        precision=precision,
                        top1=float((got.logits.argmax(1) == labels).mean()),
                        gmacs_mean=float(got.gmacs.mean()),
                        gmacs_fraction=float(got.gmacs.mean() / dense),
                        top1_agreement_vs_fp32=vs_fp32["top1_agreement"],
                        decision_agreement_vs_fp32=vs_fp32["decision_agreement"],
                        max_abs_logit_diff_vs_fp32=vs_fp32["max_abs_logit_diff"],
                    )
                )
    return rows


def runnable_precisions(rt: AdaptiveRuntime) -> list[str]:
    """The bundle's graph precisions, and ``bf16`` where ``rt``'s backend runs it on this CPU."""
    try:
        rt.backend.check_precision("bf16")
    except AdaViTDeployError:
        return rt.manifest.precisions
    return [*rt.manifest.precisions, "bf16"]


def to_json(rows: list[EvalRow], dense_top1: float, data: str, backend: str = "ort") -> dict:
    """The table and where it was measured (backends differ in the last bits: bf16, fp16 on OpenVINO)."""
    return {"data": data, "backend": backend, "cpu": cpu_model(), "dense_top1": dense_top1, "rows": [asdict(r) for r in rows]}


def save_json(path: str | Path, rows: list[EvalRow], dense_top1: float, data: str, backend: str = "ort") -> Path:
    """Write ``to_json``'s table to ``path``, atomically."""
    path = Path(path)
    with atomic_file(path, "--json") as tmp:
        tmp.write_text(json.dumps(to_json(rows, dense_top1, data, backend), indent=2) + "\n")
    return path
