"""Parity: how closely one engine's outputs match another's (Polygraphy's comparator role).

Every pair the project checks goes through here: the runtime against the
masked PyTorch model (export, ``bench``), a reduced-precision runtime against
its fp32 self (export, ``bench``, ``evaluate``). A comparison is a JSON-able
dict: decision agreement (the share of equal head / layer / token decisions),
top-1 agreement, max and mean |logit diff|, checked against explicit
``Tolerances``; ``parity_sentence`` is the one way it is written out.

numpy only: the PyTorch side is imported by ``parity_report`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .decisions import NAMES
from .runtime.adaptive import AdaptiveRuntime, InferResult


@dataclass(frozen=True)
class Tolerances:
    """What counts as matching: at least these agreements, at most this |logit diff|."""

    decision_agreement: float = 1.0
    top1_agreement: float = 1.0
    max_abs_logit_diff: float = 1e-4  # float32 rounding across frameworks, far below any real difference


#: The runtime against the PyTorch model: the same decisions and logits, to float32 rounding.
EXACT = Tolerances()


@dataclass(frozen=True)
class Agreement:
    """The counts behind the comparator, summable over batches (``evaluate`` streams them)."""

    top1_equal: int
    decisions_equal: int
    decisions: int
    max_abs_logit_diff: float
    sum_abs_logit_diff: float


def agreement(ref: Any, got: InferResult) -> Agreement:
    """How ``got`` agrees with ``ref`` (same fields as ``InferResult``: numpy arrays or CPU torch tensors)."""
    arrays = {k: np.asarray(getattr(ref, k)) for k in ("logits", *NAMES)}
    diff = np.abs(arrays["logits"] - got.logits)
    return Agreement(
        top1_equal=int((arrays["logits"].argmax(1) == got.logits.argmax(1)).sum()),
        decisions_equal=sum(int((arrays[k] == getattr(got, k)).sum()) for k in NAMES),
        decisions=sum(arrays[k].size for k in NAMES),
        max_abs_logit_diff=float(diff.max()),
        sum_abs_logit_diff=float(diff.sum()),
    )


def compare(ref: Any, got: InferResult) -> dict[str, Any]:
    """Decision agreement, top-1 agreement and max / mean |logit diff| of ``got`` against ``ref``."""
    a = agreement(ref, got)
    return {
        "samples": int(len(got.logits)),
        "max_abs_logit_diff": a.max_abs_logit_diff,
        "mean_abs_logit_diff": a.sum_abs_logit_diff / got.logits.size,
        "top1_agreement": a.top1_equal / len(got.logits),
        "decision_agreement": a.decisions_equal / a.decisions if a.decisions else 1.0,
        "mean_gmacs": float(got.gmacs.mean()),
    }


def parity_report(model: Any, runtime: AdaptiveRuntime, images: np.ndarray) -> dict[str, Any]:
    """The PyTorch masked model (``model.AdaViT``) vs the bundle on the same inputs, the dense graph too."""
    import torch

    with torch.no_grad():
        ref = model(torch.from_numpy(images))
        dense_ref = model(torch.from_numpy(images), force_dense=True).logits.numpy()
    report = compare(ref, runtime.infer(images))
    report["dense_max_abs_logit_diff"] = float(np.abs(dense_ref - runtime.dense(images)).max())
    return report


def failures(report: dict[str, Any], tolerances: Tolerances) -> list[str]:
    """What in ``report`` falls outside ``tolerances``, one phrase each (empty: it matches)."""
    out = []
    for key, what in (("decision_agreement", "decisions"), ("top1_agreement", "top-1")):
        if report[key] < getattr(tolerances, key):
            out.append(f"{what} {report[key]:.2%} < {getattr(tolerances, key):.2%}")
    if report["max_abs_logit_diff"] > tolerances.max_abs_logit_diff:
        out.append(f"max |logit diff| {report['max_abs_logit_diff']:.2e} > {tolerances.max_abs_logit_diff:.0e}")
    return out


def parity_sentence(what: str, report: dict[str, Any], tolerances: Tolerances | None = None) -> str:
    """``"<what> on N inputs: decisions ..% equal, top-1 ..%, max |logit diff| .., mean .."``, plus what
    falls outside ``tolerances`` when they are given."""
    line = (
        f"{what} on {report['samples']} inputs: decisions {report['decision_agreement']:.2%} equal, "
        f"top-1 {report['top1_agreement']:.2%}, max |logit diff| {report['max_abs_logit_diff']:.2e}"
    )
    if "mean_abs_logit_diff" in report:  # bundles exported before it was recorded lack it
        line += f", mean {report['mean_abs_logit_diff']:.2e}"
    bad = failures(report, tolerances) if tolerances is not None else []
    return line + (f" (OUTSIDE tolerance: {'; '.join(bad)})" if bad else "")


def pytorch_parity_sentence(report: dict[str, Any]) -> str:
    """The runtime against the PyTorch model at ``EXACT`` tolerances, as ``export`` and ``bench`` write it."""
    return parity_sentence("parity vs PyTorch", report, EXACT)
