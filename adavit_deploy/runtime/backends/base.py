"""One interface for every backend: a runner per graph, a backend that makes runners.

Polygraphy's split: a *runner* executes one graph on host numpy arrays and
checks its feed against the graph's declared inputs; a *backend* knows how
to turn a bundle artifact into a runner. The runtime loop
(``runtime/adaptive.py``) only ever talks to these two.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ...bundle import Artifact
from ...errors import BundleError, InputError
from ...graphs import agrees


class Runner(ABC):
    """Runs one graph: ``runner(x=..., heads=...)`` -> ``{output name: array}``."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.input_names = [t.name for t in artifact.inputs]
        self.output_names = [t.name for t in artifact.outputs]

    def __call__(self, **feed: np.ndarray) -> dict[str, np.ndarray]:
        if set(feed) != set(self.input_names):
            raise InputError(f"{self.artifact.file}: expected inputs {self.input_names}, got {sorted(feed)}")
        return dict(zip(self.output_names, self.run(feed)))

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


class Backend(ABC):
    name: str

    @abstractmethod
    def runner(self, bundle: Path, artifact: Artifact) -> Runner:
        """A runner for one graph of the bundle."""
