"""One Triton batch: many requests, one runtime call, one result or one error per request.

Kept out of ``model.py`` (which needs Triton's ``triton_python_backend_utils``)
so that it is tested without a server. Each request is checked on its own
first, so a bad one (wrong shape or dtype, NaN, a budget the bundle lacks)
fails alone; the good ones are concatenated and run as one batch, which is
what makes serving fast. Requests may name different budgets: each sample is
thresholded at its own (``SampleThresholds``), so it gets what it would get alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..bundle import budget_name
from ..decisions import NAMES
from ..errors import AdaViTDeployError, InputError
from ..runtime import AdaptiveRuntime

#: A request's ``budget`` parameter that leaves the choice to the server (its SLO controller, or its budget).
AUTO = "auto"


@dataclass(frozen=True)
class RequestError:
    """A request's one-line error; ``invalid_argument``: the client's fault (HTTP 400), else the server's."""

    message: str
    invalid_argument: bool


Outcome = dict[str, np.ndarray] | RequestError


def request_budget(runtime: AdaptiveRuntime, value: object, default: str) -> str:
    """The budget a request asked for, by its canonical name; ``default`` for none or ``auto``."""
    if value is None or value == AUTO:
        return default
    have = ", ".join(runtime.manifest.budgets)
    try:
        name = budget_name(str(value))
    except AdaViTDeployError:
        name = None
    if name not in runtime.manifest.budgets:
        raise InputError(f"budget {str(value)!r}: this model serves budgets {have} (or {AUTO}: the server's choice)")
    return name


def _outputs(runtime: AdaptiveRuntime, images: np.ndarray, mode: str, budgets: list[str]) -> dict[str, np.ndarray]:
    if mode == "dense":
        return {"logits": runtime.dense(images)}
    r = runtime.infer(images, budget=budgets if len(set(budgets)) > 1 else budgets[0])
    return {
        "logits": r.logits,
        **{k: getattr(r, k) for k in NAMES},
        "gmacs": r.gmacs.astype(np.float32)[:, None],
        "budget": np.array([[b.encode()] for b in budgets], dtype=object),
    }


def run_batch(runtime: AdaptiveRuntime, requests: list[np.ndarray], mode: str = "adaptive",
              budgets: Sequence[object] | None = None, default_budget: str | None = None) -> list[Outcome]:  # fmt: skip
    """The outputs of each request (its rows of one batched call), or its error.

    ``mode``: ``adaptive`` (logits, decisions, GMACs and the ``budget`` applied)
    or ``dense`` (logits of the dense baseline graph). ``budgets``: each
    request's ``budget`` parameter (``None`` or ``auto``: ``default_budget``,
    else the runtime's). An error of the batched call itself fails only the
    requests in it; no message carries a traceback.
    """
    default = default_budget or runtime.budget_name
    asked = list(budgets) if budgets is not None else [None] * len(requests)
    outcomes: list[Outcome | None] = [None] * len(requests)
    good: list[tuple[int, np.ndarray, str]] = []
    for i, images in enumerate(requests):
        try:
            x = runtime.check_images(images)  # shape, dtype, NaN/Inf
            good.append((i, x, request_budget(runtime, asked[i], default) if mode == "adaptive" else default))
        except AdaViTDeployError as e:
            outcomes[i] = RequestError(str(e), invalid_argument=True)
    if good:
        try:
            per_sample = [b for _, x, b in good for _ in range(len(x))]
            out = _outputs(runtime, np.concatenate([x for _, x, _ in good]), mode, per_sample)
        except AdaViTDeployError as e:
            failed = RequestError(str(e), invalid_argument=isinstance(e, InputError))
            out = None
        except Exception as e:  # noqa: BLE001 - a server must answer, not die; the type says what broke
            failed = RequestError(f"internal error in the adaptive runtime: {type(e).__name__}", invalid_argument=False)
            out = None
        start = 0
        for i, x, _ in good:
            rows = slice(start, start + len(x))
            outcomes[i] = failed if out is None else {k: v[rows] for k, v in out.items()}
            start += len(x)
    return outcomes  # type: ignore[return-value]
