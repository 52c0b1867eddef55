"""One Triton batch: many requests, one runtime call, one result or one error per request.

Kept out of ``model.py`` (which needs Triton's ``triton_python_backend_utils``)
so that it is tested without a server. Each request is checked on its own
first, so a bad one (wrong shape or dtype, NaN) fails alone; the good ones
are concatenated and run as one batch, which is what makes serving fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decisions import NAMES
from ..errors import AdaViTDeployError, InputError
from ..runtime import AdaptiveRuntime


@dataclass(frozen=True)
class RequestError:
    """A request's one-line error; ``invalid_argument``: the client's fault (HTTP 400), else the server's."""

    message: str
    invalid_argument: bool


Outcome = dict[str, np.ndarray] | RequestError


def _outputs(runtime: AdaptiveRuntime, images: np.ndarray, mode: str) -> dict[str, np.ndarray]:
    if mode == "dense":
        return {"logits": runtime.dense(images)}
    r = runtime.infer(images)
    return {"logits": r.logits, **{k: getattr(r, k) for k in NAMES}, "gmacs": r.gmacs.astype(np.float32)[:, None]}


def run_batch(runtime: AdaptiveRuntime, requests: list[np.ndarray], mode: str = "adaptive") -> list[Outcome]:
    """The outputs of each request (its rows of one batched call), or its error.

    ``mode``: ``adaptive`` (logits, decisions, GMACs) or ``dense`` (logits of
    the dense baseline graph). An error of the batched call itself fails only
    the requests in it; no message carries a traceback.
    """
    outcomes: list[Outcome | None] = [None] * len(requests)
    good: list[tuple[int, np.ndarray]] = []
    for i, images in enumerate(requests):
        try:
            good.append((i, runtime.check_images(images)))  # shape, dtype, NaN/Inf
        except AdaViTDeployError as e:
            outcomes[i] = RequestError(str(e), invalid_argument=True)
    if good:
        try:
            out = _outputs(runtime, np.concatenate([x for _, x in good]), mode)
        except AdaViTDeployError as e:
            failed = RequestError(str(e), invalid_argument=isinstance(e, InputError))
            out = None
        except Exception as e:  # noqa: BLE001 - a server must answer, not die; the type says what broke
            failed = RequestError(f"internal error in the adaptive runtime: {type(e).__name__}", invalid_argument=False)
            out = None
        start = 0
        for i, x in good:
            rows = slice(start, start + len(x))
            outcomes[i] = failed if out is None else {k: v[rows] for k, v in out.items()}
            start += len(x)
    return outcomes  # type: ignore[return-value]
