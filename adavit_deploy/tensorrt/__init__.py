"""TensorRT: engines built from a bundle's graphs (``build-trt``) and the ``trt`` backend that runs them.

- ``build.py``: what to build per graph and precision (pure), then Polygraphy's loaders.
- ``profiles.py``: optimization profiles per token bucket, per-call selection, batch chunking (pure).
- ``manifest.py``: ``engines.json`` and the load-time checks (pure).
- ``environment.py``: the lazy imports of TensorRT / Polygraphy / torch and the GPU they run on.
- ``backend.py``: ``TrtBackend`` / ``TrtRunner``, found by ``runtime.backends.get_backend("trt")``.

Importing this package imports none of TensorRT, Polygraphy or torch (the ``gpu`` extra).
"""
