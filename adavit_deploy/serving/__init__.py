"""Serving bundles on Triton Inference Server: a model repository, the server process.

The load client that measures a running server is ``bench/server.py`` (``bench-server``).

The adaptive runtime runs inside Triton's Python backend (``model.py``, one
runtime per model instance); Triton's dynamic batcher turns concurrent
single-image requests into the batches the runtime is fastest on.
``docs/SERVING.md`` has the deployment guide.
"""

from .repository import DENSE_SUFFIX, RepositoryOptions, write_repository

__all__ = ["DENSE_SUFFIX", "RepositoryOptions", "write_repository"]
