"""``bench``: the adaptive runtime against the dense graph and the masked PyTorch model, on the same inputs.

One file per concern: ``run.py`` (``bench`` itself), ``engines.py`` (the
engines and the interleaved timing loop), ``memory.py`` (peak RSS in child
processes), ``report.py`` (``BenchReport`` and its arithmetic),
``environment.py`` (where it ran), ``inputs.py`` (batch sizes, the input
pool), ``server.py`` (``bench-server``: load on a running Triton server).
The figure is ``adavit_deploy.plots.plot_report`` (plots read reports; bench
imports no plot).
"""

from .engines import ENGINES, Engine, parse_engines, split_engine, time_engines
from .environment import environment
from .inputs import DEFAULT_BATCH_SIZES, cycled_batches, load_pool, parse_batch_sizes
from .memory import peak_rss_mib
from .report import BenchReport, times
from .run import bench, resolve_target

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "ENGINES",
    "BenchReport",
    "Engine",
    "bench",
    "cycled_batches",
    "environment",
    "load_pool",
    "parse_batch_sizes",
    "parse_engines",
    "peak_rss_mib",
    "resolve_target",
    "split_engine",
    "time_engines",
    "times",
]
