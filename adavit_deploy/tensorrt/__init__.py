"""TensorRT's build side: engines built from a bundle's graphs (``build-trt``); ``runtime/backends/trt.py`` runs them.

- ``build.py``: what to build per graph and precision (pure), then Polygraphy's loaders.
- ``profiles.py``: optimization profiles per token bucket, per-call selection, batch chunking (pure).
- ``manifest.py``: ``engines.json`` and the load-time checks (pure).
- ``environment.py``: the lazy imports of TensorRT / Polygraphy / torch and the GPU they run on.

Importing this package imports none of TensorRT, Polygraphy or torch (the ``gpu`` extra).
"""
