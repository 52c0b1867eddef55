"""One interface for every backend: a runner per graph, a backend that makes runners.

Polygraphy's split: a *runner* executes one graph on host numpy arrays and
checks its feed against the graph's declared inputs; a *backend* knows how
to turn a bundle artifact into a runner. The runtime loop
(``runtime/adaptive.py``) only ever talks to these two.

Both have Polygraphy's lifecycle: ``close()`` (idempotent) releases what
they hold (sessions; on TensorRT contexts, engines, CUDA streams), they work
as context managers, and a closed one refuses to run in one line. Closing a
backend closes every runner it made that is still alive: a runner's engine
must not outlive the runtime that deserialized it.
"""

from __future__ import annotations

import os
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...bundle import Artifact
from ...errors import BackendError, BundleError, ConfigError, InputError, param
from ...graphs import agrees
from ...machine import cpu_model

#: Intra-op threads above this many per core (or in all) are a typo, not a setting.
MAX_THREADS_PER_CORE = 4
MAX_THREADS = 1024


def resolve_threads(threads: int) -> int:
    """``threads`` as a worker count: ``0`` is one per core; negative or absurd counts are refused."""
    cores = os.cpu_count() or 1
    limit = min(MAX_THREADS, MAX_THREADS_PER_CORE * cores)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise ConfigError(f"{param('threads')} {threads!r}: expected an integer >= 0 (0: one per core)")
    if threads < 0:
        raise ConfigError(f"{param('threads')} {threads}: must be >= 0 (0: one per core)")
    if threads > limit:
        raise ConfigError(f"{param('threads')} {threads}: at most {limit} on this machine ({cores} cores; 0: one per core)")
    return int(threads) or cores


#: Graphs small enough that waking a pool costs more than it saves: every CPU backend runs them on one thread.
CALLER_THREAD_GRAPHS = ("policy_", "head.")


def graph_threads(artifact: Artifact, threads: int) -> int:
    """The threads one graph runs on: 1 for the small graphs (``CALLER_THREAD_GRAPHS``), else ``threads``."""
    return 1 if Path(artifact.file).name.startswith(CALLER_THREAD_GRAPHS) else threads


class Closable:
    """Polygraphy's lifecycle: ``close()`` (idempotent), ``with`` use, a one-line error after close."""

    closed = False

    def close(self) -> None:
        """Release what this object holds; calling it again does nothing."""
        if not self.closed:
            self.closed = True
            self._release()

    def _release(self) -> None:
        """What ``close`` frees (subclasses)."""

    def check_open(self) -> None:
        if self.closed:
            raise BackendError(f"{self.describe()} is closed: load the bundle again to run it")

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner(Closable, ABC):
    """Runs one graph: ``runner(x=..., heads=...)`` -> ``{output name: array}``."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.input_names = [t.name for t in artifact.inputs]
        self.output_names = [t.name for t in artifact.outputs]

    def __call__(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        self.check_open()
        if set(feed) != set(self.input_names):
            raise InputError(f"{self.artifact.file}: expected inputs {self.input_names}, got {sorted(feed)}")
        return dict(zip(self.output_names, self.run(feed)))

    def describe(self) -> str:
        return f"the runner of {self.artifact.file}"

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def check_graph(self, inputs: Iterable[tuple[str, Sequence]], outputs: Iterable[tuple[str, Sequence]]) -> None:
        """Refuse a graph file whose I/O (``(name, dims)`` in order, as the backend reads them
        from it) is not the manifest's: a swapped or edited bundle (``graphs.agrees``)."""
        ins, outs = self.artifact.signature
        if not (agrees(ins, inputs) and agrees(outs, outputs)):
            raise BundleError(
                f"{self.artifact.file}: the graph's inputs/outputs are not the ones the manifest records for it "
                "(a swapped or edited bundle): re-export the bundle"
            )


class Backend(Closable, ABC):
    """Makes runners (``runner``); ``close`` closes the ones still alive, then the backend's own state."""

    name: str

    def __init__(self) -> None:
        self._runners: weakref.WeakSet[Runner] = weakref.WeakSet()

    def runner(self, bundle: Path, artifact: Artifact, precision: str = "fp32") -> Runner:
        """A runner for one graph of the bundle, run at ``precision`` (the graph's own, or ``bf16``
        for an fp32 graph on a backend that can)."""
        self.check_open()
        made = self.make_runner(Path(bundle), artifact, self.check_precision(precision))
        self._runners.add(made)
        return made

    @abstractmethod
    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> Runner:
        """What ``runner`` returns (the backend is known to be open, the precision checked)."""

    def check_precision(self, precision: str) -> str:
        """``precision`` if this backend runs it; by default every graph precision, no ``bf16``."""
        if precision == "bf16":
            raise BackendError(f"precision bf16 runs on the ov backend (OpenVINO), not on {self.name}")
        return precision

    def close(self) -> None:
        if not self.closed:
            for runner in list(self._runners):
                runner.close()
        super().close()

    def describe(self) -> str:
        return f"the {self.name} backend"

    def fingerprint(self) -> dict[str, Any]:
        """What a timing measured on this backend depends on (``tactics.json`` is valid only where it matches)."""
        return {"backend": self.name, "cpu": cpu_model()}
