"""Tactics: more than one exact implementation of a pruned stage, and which one runs.

As TensorRT times several kernels per layer and keeps the fastest, each
stage (``attn``, ``mlp``) of a block with a head decision has two graphs,
equally exact (ADAVIT.md: a dropped head contributes exactly 0 either way):

- ``gather`` (``attn_i`` / ``mlp_i``): the kept heads' weights gathered in
  the graph; computes only the kept heads, but its weights are not constants
  (no pre-packing, no bias+GELU fusion) and one call serves one head set.
- ``masked`` (``attn_masked_i`` / ``mlp_masked_i``): every head from
  constant weights, the dropped ones zeroed per sample; pays the dropped
  heads' FLOPs, but ORT pre-packs and fuses it and one call serves samples of
  every head set (fewer, larger GEMMs at batch 16).

Which is faster depends on the kept-head count, the batch size and the
machine, so ``tuner.py`` times both per (block, stage, kept heads, batch
size) on the target machine and writes ``tactics.json`` into the bundle: a
timing cache, valid only where it was measured (CPU, backend and its
version, threads); elsewhere the runtime warns and runs ``gather``.
It changes speed only, never results, so it is not a sha-checked artifact.

A ``masked`` graph holds a second copy of its block's weights in memory
(pre-packed), so it must buy its place: the tuner picks it only when it is
faster by ``margin`` (default 5%), and untuned the runtime never loads it.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import Document
from ..errors import BundleError, ConfigError, InputError

TACTICS = ("gather", "masked")
STAGES = ("attn", "mlp")
FILE = "tactics.json"
SCHEMA, SCHEMA_VERSION = "adavit-deploy/tactics", 2
#: The file is the user's to copy or edit: every field is checked on load (types here, values in ``Timing`` and ``_Stored``).
DOCUMENT = Document("tactics file", "tactics file", SCHEMA, SCHEMA_VERSION, "re-run `adavit-deploy tune`", BundleError)
#: Version 1 (tables keyed by precision alone, before the OpenVINO backend): still read, never written.
DOCUMENT_V1 = Document("tactics file", "tactics file", SCHEMA, 1, "re-run `adavit-deploy tune`", BundleError)
#: a tactics file larger than this is not one (a real table is a few hundred KiB at most)
MAX_BYTES = 16 << 20


def graph_name(tactic: str, stage: str, block: int) -> str:
    """The graph that runs ``stage`` of ``block`` with ``tactic``."""
    return f"{stage}_{block}" if tactic == "gather" else f"{stage}_masked_{block}"


#: how much faster ``masked`` must be to be picked (its weights are a second copy in memory)
MARGIN = 0.05


def default_masked(num_heads: int) -> np.ndarray:
    """The untuned choice by kept-head count: ``gather`` for all (no second copy of any weights)."""
    return np.zeros(num_heads + 1, bool)


def check_tactic(tactic: str | None) -> str | None:
    """A tactic the caller forces (``--tactic``): one of ``TACTICS``, or ``None`` for the tuned choice."""
    if tactic is not None and tactic not in TACTICS:
        raise InputError(f"unknown tactic {tactic!r}: choose {', '.join(TACTICS)} (or none: the tuned choice)")
    return tactic


@dataclass
class Timing:
    """One tuned key and its choice: ``ms``, per tactic, the block's stage time per batch
    (mean over the tuning batches with this key; ``tuner.py``), ``samples`` it covered."""

    block: int
    stage: str
    kept_heads: int
    batch_size: int
    ms: dict[str, float]
    samples: int
    tactic: str

    def __post_init__(self) -> None:
        for what, value, least in (("block", self.block, 0), ("kept_heads", self.kept_heads, 1),
                                   ("batch_size", self.batch_size, 1), ("samples", self.samples, 0)):  # fmt: skip
            if value < least:
                raise ConfigError(f"{what} {value} is not >= {least}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.tactic not in TACTICS:
            raise ConfigError(f"tactic {self.tactic!r} is not one of {', '.join(TACTICS)}")
        if set(self.ms) != set(TACTICS) or not all(0 <= v < math.inf for v in self.ms.values()):
            raise ConfigError(f"ms {self.ms} is not a time >= 0 for each of {', '.join(TACTICS)}")

    @staticmethod
    def pick(ms: dict[str, float], margin: float = MARGIN) -> str:
        """``masked`` where it is faster than ``gather`` by more than ``margin``."""
        return "masked" if ms["masked"] < (1 - margin) * ms["gather"] else "gather"


@dataclass
class TacticTable:
    """The tuned choices of one bundle at one precision, and the machine they hold on."""

    machine: dict[str, Any]
    precision: str
    timings: list[Timing] = field(default_factory=list)
    margin: float = MARGIN

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({t.batch_size for t in self.timings})

    def lookup(self, block: int, stage: str, batch: int, num_heads: int) -> np.ndarray:
        """``(H+1,)`` bool by kept-head count: True where ``masked`` runs, for a batch of ``batch``.

        Uses the largest tuned batch size not above ``batch`` (the smallest if
        all are); a count never seen while tuning keeps the default.
        """
        sizes = self.batch_sizes
        if not sizes:
            return default_masked(num_heads)
        bucket = max([b for b in sizes if b <= batch], default=sizes[0])
        lut = default_masked(num_heads)
        for t in self.timings:
            if t.block == block and t.stage == stage and t.batch_size == bucket:
                lut[t.kept_heads] = t.tactic == "masked"
        return lut

    def summary(self) -> list[dict[str, Any]]:
        """Per (batch size, stage, kept heads), over blocks: mean stage ms of each tactic and the picks."""
        rows: dict[tuple[int, str, int], list[Timing]] = {}
        for t in self.timings:
            rows.setdefault((t.batch_size, t.stage, t.kept_heads), []).append(t)
        return [
            {
                "batch_size": b, "stage": stage, "kept_heads": k, "blocks": len(ts),
                "ms": {tac: float(np.mean([t.ms[tac] for t in ts])) for tac in TACTICS},
                "picked": {tac: sum(t.tactic == tac for t in ts) for tac in TACTICS},
            }
            for (b, stage, k), ts in sorted(rows.items())
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "margin": self.margin,
            "timings": [
                {"block": t.block, "stage": t.stage, "kept_heads": t.kept_heads, "batch_size": t.batch_size,
                 "tactic": t.tactic, "ms": t.ms, "samples": t.samples}
                for t in self.timings
            ],
        }


@dataclass
class _Stored:
    """A table as the file holds it, under its key (``table_key``)."""

    machine: dict[str, Any]
    margin: float
    timings: list[Timing]

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:  # NaN too
            raise ConfigError(f"margin {self.margin} is not in [0, 1)")


@dataclass
class _File:
    tables: dict[str, _Stored]


def table_key(backend: str, precision: str) -> str:
    """A table's key in the file: one table per backend and precision (``ort/fp32``, ``ov/bf16``)."""
    return f"{backend}/{precision}"


def _version(text: bytes) -> Any:
    """The ``schema_version`` a file claims (``None`` if it is not a JSON object): which reader reads it."""
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return d.get("schema_version") if isinstance(d, dict) else None


def read_tables(bundle: str | Path) -> dict[str, TacticTable]:
    """Every table in ``bundle``'s ``tactics.json`` by ``table_key`` (none if there is no file).

    A version-1 file (one table per precision, before the OpenVINO backend) is read too: its
    tables are keyed by the backend their machine names.
    """
    path = Path(bundle) / FILE
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_BYTES:
        raise BundleError(f"{path}: {path.stat().st_size} bytes, more than a tactics file holds ({MAX_BYTES}): {DOCUMENT.fix}")
    text = path.read_bytes()
    if _version(text) == 1:
        old = DOCUMENT_V1.read(text, str(path), _File).tables
        stored = {table_key(str(t.machine.get("backend")), p): t for p, t in old.items()}
    else:
        stored = DOCUMENT.read(text, str(path), _File).tables
    return {k: TacticTable(t.machine, k.rpartition("/")[2], t.timings, t.margin) for k, t in stored.items()}


def write_table(bundle: str | Path, table: TacticTable) -> Path:
    """Add (or replace) ``table`` under its backend and precision in ``bundle``'s ``tactics.json``, atomically.

    The other backends' and precisions' tables are kept when they were measured on the same CPU:
    tuning OpenVINO does not throw away ONNX Runtime's table.
    """
    try:
        tables = {k: t for k, t in read_tables(bundle).items() if t.machine.get("cpu") == table.machine.get("cpu")}
    except BundleError:
        tables = {}  # an unreadable old file is what tune replaces
    tables[table_key(table.machine["backend"], table.precision)] = table
    return DOCUMENT.write(Path(bundle) / FILE, {"tables": {k: t.to_dict() for k, t in sorted(tables.items())}}, "the tactics file")


def table_for(bundle: str | Path, precision: str, machine: dict[str, Any], num_heads: int) -> TacticTable | None:
    """The tuned table for ``machine``'s backend at ``precision`` if it was measured on ``machine``;
    else ``None``, with a warning when a table exists for another machine (the defaults run).

    ``num_heads``: the bundle's head count; a table naming more kept heads is
    another model's.
    """
    table = read_tables(bundle).get(table_key(machine["backend"], precision))
    if table is None:
        return None
    too_many = max((t.kept_heads for t in table.timings), default=0)
    if too_many > num_heads:
        raise BundleError(
            f"{Path(bundle) / FILE}: a timing keeps {too_many} heads, this model has {num_heads}: re-run `adavit-deploy tune`"
        )
    if table.machine != machine:
        differs = sorted(k for k in {*machine, *table.machine} if machine.get(k) != table.machine.get(k))
        warnings.warn(
            f"{bundle}: {FILE} was tuned on another machine ({', '.join(differs)} differ): "
            "using the default tactic (gather); re-run `adavit-deploy tune` here",
            stacklevel=3,
        )
        return None
    return table
