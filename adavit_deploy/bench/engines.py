"""The engines ``bench`` times and the interleaved timing loop that runs them.

An engine is one way of running the model on a batch: the adaptive runtime
or the dense graph of the bundle (at a precision: ``adaptive.int8``), or the
masked PyTorch model (``reference``). A dense engine on a CPU backend other
than the run's names it: ``dense.bf16@ov`` (the baselines). ``time_engines``
warms each engine on every batch it will time, then alternates them in
rounds, so a noisy machine slows them all alike.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..bundle import PRECISIONS, sha256, split_precision
from ..errors import ConfigError, param
from ..extras import EXPORT_HINT, missing_export_module
from ..lists import comma_items
from ..runtime import AdaptiveRuntime, RoutingStats

ENGINES = ("adaptive", "dense", "reference")
#: Timed calls are split into this many rounds; each round runs every engine in turn.
ROUNDS = 5


def split_engine(name: str) -> tuple[str, str]:
    """``"adaptive.int8"`` -> ``("adaptive", "int8")``, ``"dense@ov"`` -> ``("dense", "fp32")``; no suffix is fp32."""
    return split_precision(name.partition("@")[0])


def engine_backend(name: str, backend: str) -> str:
    """The backend an engine runs on: the one after ``@``, else the run's ``backend``."""
    return name.partition("@")[2] or backend


def parse_engines(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"dense,adaptive.int8,adaptive"`` -> ``("adaptive", "adaptive.int8", "dense")``, in the canonical order.

    ``adaptive`` and ``dense`` take a precision suffix (``.fp16``, ``.int8``).
    """
    names = comma_items(value)
    known = [*ENGINES, *(f"{e}.{p}" for e in ENGINES[:2] for p in PRECISIONS[1:])]  # no "@": baselines are added
    unknown = sorted(set(names) - set(known))
    if any("@" in n for n in unknown):
        raise ConfigError(
            f"{param('engines')} {','.join(names)!r}: the dense@BACKEND rows are the baselines, added by themselves "
            f"on every other CPU backend installed; give the adaptive engines' backend with {param('backend')}"
        )
    if unknown or not names:
        raise ConfigError(
            f"{param('engines')} {','.join(names)!r}: choose among {','.join(ENGINES)} "
            f"(adaptive and dense may end in .{' or .'.join(PRECISIONS[1:])})"
        )
    return tuple(e for e in known if e in names)


@dataclass
class Engine:
    """One way of running the model: ``prepare`` a batch once, then ``run`` it (the timed call)."""

    name: str
    run: Callable[[Any], Any]
    prepare: Callable[[np.ndarray], Any] = lambda x: x
    #: after the timer stops: per-image GMACs (or None: a fixed cost) and routing stats
    account: Callable[[Any], tuple[np.ndarray | None, RoutingStats | None]] = lambda out: (None, None)


def bundle_engine(name: str, rt: AdaptiveRuntime) -> Engine:
    """``adaptive[.p]`` or ``dense[.p]`` of a runtime loaded at precision ``p``."""
    if split_engine(name)[0] == "adaptive":
        return Engine(name, rt.infer, account=lambda r: (r.gmacs, r.routing))
    return Engine(name, rt.dense)


def reference_engine(model) -> Engine:
    import torch

    from ..cost import sample_gmacs

    def run(x):
        with torch.inference_mode():
            return model(x)

    def account(out):
        return sample_gmacs(model.cfg, out.head_select.numpy(), out.layer_select.numpy(), out.token_select.numpy()), None

    return Engine("reference", run, prepare=torch.from_numpy, account=account)


def reference_model(bundle: Path, manifest):
    """The masked PyTorch model of the bundle's own checkpoint and config, or the reason it cannot be built."""
    missing = missing_export_module()
    if missing is not None:
        return None, f"the PyTorch reference needs the export extra ({missing} is not installed): {EXPORT_HINT}"
    from ..model import build_model, read_checkpoint

    source = manifest.source.get("checkpoint")
    if not source:
        return None, "the bundle's manifest names no source checkpoint"
    path = Path(source)
    if not path.is_file():
        return None, f"its source checkpoint {source} (from the manifest) is not there: pass the checkpoint to bench it"
    if manifest.source.get("sha256") and sha256(path) != manifest.source["sha256"]:
        return None, f"its source checkpoint {source} has changed since the bundle was exported"
    return build_model(manifest.model, read_checkpoint(path).state_dict), None


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` for the reference engine, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def warmup_calls(warmup: int, iterations: int, distinct: int) -> int:
    """Untimed calls per engine: ``warmup``, and at least one on each of the ``distinct`` batches the
    timed calls run, so an engine is timed in its steady state: OpenVINO compiles kernels for each
    new input shape, and a server has seen its shapes (a first pass over new shapes is ~1.5x slower)."""
    return max(warmup, min(iterations, distinct))


def time_engines(
    engines: Sequence[Engine],
    batches: Sequence[np.ndarray],
    iterations: int,
    warmup: int,
    tick: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, Any]]:
    """Per engine: seconds of every timed call, and what ``account`` says of its outputs.

    Call ``i`` of every engine runs ``batches[i % len(batches)]``, the warm-up calls
    (``warmup_calls``) first. The ``iterations`` timed calls are split into rounds; in each round every
    engine makes its share, the engine order rotating from round to round.
    """
    inputs = {e.name: [e.prepare(b) for b in batches] for e in engines}
    for i in range(warmup_calls(warmup, iterations, len(batches))):
        for e in engines:
            e.run(inputs[e.name][i % len(batches)])
            tick(f"{e.name}: warm-up")
    out: dict[str, dict[str, Any]] = {e.name: {"seconds": [], "gmacs": [], "routing": RoutingStats()} for e in engines}
    order = list(engines)
    for chunk in np.array_split(np.arange(iterations), min(iterations, ROUNDS)):
        for e in order:
            rec = out[e.name]
            for i in chunk:
                x = inputs[e.name][i % len(batches)]
                start = time.perf_counter()
                result = e.run(x)
                rec["seconds"].append(time.perf_counter() - start)
                gmacs, routing = e.account(result)
                if gmacs is not None:
                    rec["gmacs"].append(gmacs)
                if routing is not None:
                    rec["routing"].merge(routing)
                tick(f"{e.name}: timing")
        order = order[1:] + order[:1]
    return out
