"""The two-stage runtime: one loop, any backend.

Per block: stage 1 runs the block's policy graph on the full token buffer
and thresholds its probabilities with the budget's thresholds (``p > t``,
float32, as the reference); the host routes the batch into groups of samples
sharing an execution path; stage 2 runs the pruned attention / MLP graph once
per group on only the kept tokens and heads, and scatters the results back
into the full ``(B, N, C)`` buffer (a dropped token is carried unchanged and
may be selected again later). Sub-layers that are off cost nothing; a block
whose heads are all dropped adds its precomputed constants without a call.
Which graph runs a stage (its *tactic*: kept heads gathered, or every head
masked) is chosen per sample from the bundle's tuned table (``tactics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np

from ..atomic import atomic_file
from ..bundle import Manifest, budget_name, bundle_file, read_manifest, variant_key
from ..config import Thresholds
from ..cost import sample_gmacs
from ..decisions import NAMES, ffn_tokens, select
from ..errors import ConfigError, InputError
from ..inputs import check_finite
from .backends import Backend, Runner, get_backend
from .backends.base import Closable
from .routing import RoutingStats, gather, route, scatter
from .tactics import STAGES, TacticTable, check_tactic, default_masked, graph_name, table_for


#: ``AdaptiveRuntime.walk``'s callback: (block, token buffer, layer, heads, tokens) before the block runs.
Visit = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


@dataclass
class InferResult:
    """Logits, decisions in the reference's shapes (0/1 float32) and cost per sample."""

    logits: np.ndarray
    head_select: np.ndarray
    layer_select: np.ndarray
    token_select: np.ndarray
    gmacs: np.ndarray
    routing: RoutingStats

    @classmethod
    def concat(cls, parts: list["InferResult"]) -> "InferResult":
        stats = RoutingStats()
        for p in parts:
            stats.merge(p.routing)
        arrays = {k: np.concatenate([getattr(p, k) for p in parts]) for k in ("logits", *NAMES, "gmacs")}
        return cls(**arrays, routing=stats)

    def save(self, path: str | Path, names: Sequence[str] | None = None) -> None:
        """Write ``logits``, the decisions and ``gmacs`` to ``.npz``, atomically; ``names``: one per sample
        (the input files), saved as ``names`` beside them."""
        extra = {} if names is None else {"names": np.asarray(list(names), dtype=str)}
        with atomic_file(path, "--output") as tmp, open(tmp, "wb") as f:
            np.savez(f, logits=self.logits, gmacs=self.gmacs, **{k: getattr(self, k) for k in NAMES}, **extra)


@dataclass(frozen=True)
class SampleThresholds:
    """Thresholds per sample, ``(B, 1)`` float32 each: one batch that mixes budgets (a server's requests).

    Each sample is compared with its own thresholds, so it gets the decisions it
    would get alone at its budget; routing then groups samples by path as ever.
    """

    head: np.ndarray
    layer: np.ndarray
    token: np.ndarray

    @classmethod
    def of(cls, per_sample: Sequence[Thresholds]) -> "SampleThresholds":
        return cls(*(np.array([[getattr(t, k)] for t in per_sample], np.float32) for k in ("head", "layer", "token")))

    def rows(self, rows: slice) -> "SampleThresholds":
        return SampleThresholds(self.head[rows], self.layer[rows], self.token[rows])


#: What ``infer`` takes as a budget: a name, raw thresholds, or one name per sample.
BudgetChoice = str | float | Thresholds | Sequence[str | float] | None


class AdaptiveRuntime(Closable):
    """A loaded bundle: ``infer`` routes each input to its pruned path; ``dense`` runs the baseline.

    ``budget`` (a name of ``manifest.budgets``) and ``precision`` (``fp32``,
    ``fp16``, ``int8``: which graph variants run) are the defaults of every call.
    ``tactic``: force ``gather`` or ``masked`` on every stage (what the parity
    tests do); by default each stage runs the tactic the bundle's
    ``tactics.json`` picked for this machine, or ``gather`` (``default_masked``:
    untuned, no masked graph is loaded).

    ``close()`` (or ``with load_bundle(...) as rt:``) releases the runners'
    sessions, and the backend too when the runtime made it (``owns_backend``:
    ``load_bundle`` with a backend name); a backend passed in stays the caller's.
    """

    def __init__(
        self,
        bundle: str | Path,
        manifest: Manifest,
        backend: Backend,
        budget: str = "native",
        precision: str = "fp32",
        *,
        owns_backend: bool = False,
        tactic: str | None = None,
    ) -> None:
        self.bundle, self.manifest, self.cfg, self.backend = Path(bundle), manifest, manifest.model, backend
        self.owns_backend = owns_backend
        self.precision = backend.check_precision(manifest.check_precision(precision, bundle))
        self.budget = manifest.budget(budget)
        self.budget_name = budget_name(budget)  # canonical: "native", "0.5"
        self._runners: dict[str, Runner] = {}
        self.tactic = check_tactic(tactic)
        self.tactics: TacticTable | None = None if tactic else table_for(
            bundle, self.precision, backend.fingerprint(), self.cfg.num_heads
        )
        self._luts: dict[tuple[int, str, int], np.ndarray] = {}
        with np.load(bundle_file(self.bundle, manifest.artifacts["constants"].file), allow_pickle=False) as c:
            self.constants = {k: c[k] for k in c.files}

    @property
    def runners(self) -> Mapping[str, Runner]:
        """The runners made so far, by graph name (read-only: ``runner`` makes them)."""
        return MappingProxyType(self._runners)

    def runner(self, name: str) -> Runner:
        """The runner of graph ``name`` at the runtime's precision, created on first use
        (the dense graph costs nothing unless run)."""
        if name not in self._runners:  # close() empties it: a closed runtime refuses here
            self.check_open()
            key = variant_key(name, self.precision)
            self._runners[name] = self.backend.runner(self.bundle, self.manifest.artifacts[key], self.precision)
        return self._runners[name]

    def describe(self) -> str:
        return f"the runtime of {self.bundle}"

    def _release(self) -> None:
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        if self.owns_backend:
            self.backend.close()

    def check_images(self, images: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        want = (cfg.in_chans, cfg.img_size, cfg.img_size)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != want or not np.issubdtype(images.dtype, np.floating):
            raise InputError(
                f"images must be float NCHW of shape (B, {', '.join(map(str, want))}); got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            raise InputError("no images to run")
        with np.errstate(over="ignore"):  # a float64 of 1e39 becomes Inf: check_finite names it
            images = np.ascontiguousarray(images, dtype=np.float32)
        check_finite(images)  # a NaN sample would come out confident (every decision off), not NaN
        return images

    def dense(self, images: np.ndarray) -> np.ndarray:
        """Logits of the dense baseline graph (every decision on)."""
        return self.runner("dense")(images=self.check_images(images))["logits"]

    def infer(self, images: np.ndarray, batch_size: int | None = None, budget: BudgetChoice = None) -> InferResult:
        """Logits, decisions and GMACs per sample; ``batch_size`` splits large inputs.

        ``budget``: a budget of the bundle by name (``"native"``, ``0.5``), raw
        ``Thresholds`` (what calibration searches over), or a list or tuple of
        names, one per sample (a server's batch of requests); default: the runtime's.
        """
        self.check_open()
        images = self.check_images(images)
        thr = self._thresholds(budget, len(images))
        if batch_size is None or batch_size >= len(images):
            return self._infer_batch(images, thr)
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        parts = []
        for i in range(0, len(images), batch_size):
            rows = slice(i, i + batch_size)
            parts.append(self._infer_batch(images[rows], thr.rows(rows) if isinstance(thr, SampleThresholds) else thr))
        return InferResult.concat(parts)

    def walk(self, images: np.ndarray, visit: Visit, budget: str | float | None = None) -> InferResult:
        """``infer`` on one batch, calling ``visit(block, x, layer, heads, tokens)`` before each
        block runs on ``x`` (the token buffer entering it): what the tuner times the stages on."""
        return self._infer_batch(self.check_images(images), self._thresholds(budget, len(images)), visit)

    def _thresholds(self, budget: BudgetChoice, samples: int) -> Thresholds | SampleThresholds:
        """The runtime's budget (``None``), one of the bundle's by name, raw ``Thresholds``, or one per sample."""
        if budget is None:
            return self.budget.thresholds
        if isinstance(budget, Thresholds):
            return budget
        if isinstance(budget, (list, tuple)):
            if len(budget) != samples:
                raise InputError(f"{len(budget)} budgets for {samples} images: give one per image, or one name")
            return SampleThresholds.of([self.manifest.budget(b).thresholds for b in budget])
        return self.manifest.budget(budget).thresholds

    def _infer_batch(self, images: np.ndarray, thr: Thresholds | SampleThresholds, visit: Visit | None = None) -> InferResult:
        cfg = self.cfg
        # contiguous: routing gathers and scatters through a flat (B*N, C) view of it
        x = np.ascontiguousarray(self.runner("stem")(images=images)["tokens"])
        stats = RoutingStats()
        every_block: dict[str, list[np.ndarray]] = {name: [] for name in NAMES}
        for block in range(cfg.depth):
            layer, heads, tokens = self._decide(block, x, thr)
            if visit is not None:
                visit(block, x, layer, heads, tokens)
            for name, decided in zip(NAMES, (heads, layer, tokens)):
                every_block[name].append(decided)
            self._block(block, x, layer, heads, tokens, stats)
        logits = self.runner("head")(cls=np.ascontiguousarray(x[:, 0]))["logits"]
        decisions = [select(cfg, name, every_block[name], len(x)) for name in NAMES]
        return InferResult(logits, *decisions, sample_gmacs(cfg, *decisions), stats)

    def _decide(
        self, block: int, x: np.ndarray, thr: Thresholds | SampleThresholds
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 1: (B,2) sub-layers, (B,H) heads, (B,N) tokens, all bool."""
        B, N, _ = x.shape
        policy = f"policy_{block}"
        out = self.runner(policy)(x=x) if policy in self.manifest.artifacts else {}
        # float32 thresholds (a scalar, or (B, 1) per sample): the reference compares float32
        # probabilities with a Python float
        t = {k: np.asarray(getattr(thr, k), np.float32) for k in ("layer", "head", "token")}
        layer = out["layer"] > t["layer"] if "layer" in out else np.ones((B, 2), bool)
        heads = out["heads"] > t["head"] if "heads" in out else np.ones((B, self.cfg.num_heads), bool)
        tokens = np.ones((B, N), bool)
        if "patches" in out:
            tokens[:, 1:] = out["patches"] > t["token"]
        return layer, heads, tokens

    def _block(
        self, block: int, x: np.ndarray, layer: np.ndarray, heads: np.ndarray, tokens: np.ndarray, stats: RoutingStats
    ) -> None:
        """Stage 2 of one block, in place on ``x``.

        Samples with no head kept add the block's constants. The others are
        routed; when the FFN sees the same tokens as MSA (``token_with_mlp``),
        a group with both sub-layers on runs attn then mlp on one gathered
        tensor, saving a scatter and a gather (the FFN is token-wise: exact).
        """
        attn_on, mlp_on = layer[:, 0], layer[:, 1]
        mlp_tokens = ffn_tokens(self.cfg, tokens)
        none_kept = ~heads.any(axis=1)
        for stage, on, kept in (("attn", attn_on, tokens), ("mlp", mlp_on, mlp_tokens)):
            for s in np.flatnonzero(on & none_kept):
                x[s, kept[s]] += self.constants[f"{stage}_{block}"]
                stats.constant_adds += 1
        run = ~none_kept
        masked = self.choose(block, heads)
        if self.cfg.token_with_mlp:
            self.run_stages(block, ("attn", "mlp"), x, attn_on & mlp_on & run, heads, tokens, masked, stats)
            self.run_stages(block, ("attn",), x, attn_on & ~mlp_on & run, heads, tokens, masked, stats)
            self.run_stages(block, ("mlp",), x, mlp_on & ~attn_on & run, heads, tokens, masked, stats)
        else:
            self.run_stages(block, ("attn",), x, attn_on & run, heads, tokens, masked, stats)
            self.run_stages(block, ("mlp",), x, mlp_on & run, heads, mlp_tokens, masked, stats)

    def choose(self, block: int, heads: np.ndarray) -> dict[str, np.ndarray]:
        """Per stage, ``(B,)`` bool: the samples whose stage runs the ``masked`` tactic."""
        B, H = heads.shape
        if block not in self.cfg.head_select:  # one graph, every head, constant weights
            return {s: np.zeros(B, bool) for s in STAGES}
        if self.tactic is not None:
            return {s: np.full(B, self.tactic == "masked") for s in STAGES}
        kept = heads.sum(axis=1)
        return {s: self._lut(block, s, B, H)[kept] for s in STAGES}

    def _lut(self, block: int, stage: str, batch: int, num_heads: int) -> np.ndarray:
        key = (block, stage, batch)
        if key not in self._luts:
            self._luts[key] = (
                default_masked(num_heads) if self.tactics is None else self.tactics.lookup(block, stage, batch, num_heads)
            )
        return self._luts[key]

    def run_stages(
        self,
        block: int,
        stages: tuple[str, ...],
        x: np.ndarray,
        active: np.ndarray,
        heads: np.ndarray,
        tokens: np.ndarray,
        masked: dict[str, np.ndarray],
        stats: RoutingStats,
    ) -> None:
        """Every group of ``route``: gather, run ``stages`` in order (one call each), scatter back.

        Samples share a path when their stages run the same tactics and, if
        any stage gathers, the same head set (a masked stage takes any).
        """
        if not active.any():
            return
        flags = np.stack([masked[s] for s in stages], axis=1)
        paths = np.concatenate([flags, heads & ~flags.all(axis=1, keepdims=True)], axis=1)
        for group in route(active, heads, tokens, paths):
            y, key_bias = gather(x, group)
            for stage in stages:
                tactic = "masked" if masked[stage][group.samples[0]] else "gather"
                runner = self.runner(graph_name(tactic, stage, block))
                feed = {"x": y}
                if "heads" in runner.input_names:
                    feed["heads"] = group.heads
                if "head_mask" in runner.input_names:
                    feed["head_mask"] = heads[group.samples].astype(np.float32)
                if "key_bias" in runner.input_names:
                    feed["key_bias"] = key_bias
                y = runner(**feed)["y"]
                stats.calls += 1
                stats.token_slots += y.shape[0] * y.shape[1]
                stats.padded_slots += group.padding
                stats.tactics[tactic] = stats.tactics.get(tactic, 0) + 1
                path = f"{block}:{stage}:{'masked' if tactic == 'masked' else ','.join(map(str, group.heads))}"
                stats.paths[path] = stats.paths.get(path, 0) + len(group.samples)
            scatter(x, group, y)


def load_bundle(
    path: str | Path,
    backend: str | Backend = "ort",
    threads: int = 0,
    budget: str | float = "native",
    precision: str = "fp32",
    tactic: str | None = None,
    cache_dir: str | Path | None = None,
) -> AdaptiveRuntime:
    """Verify a bundle (sha256 of every file) and load it on ``backend`` at ``budget`` and ``precision``.

    Close the runtime when done (``rt.close()``, or ``with load_bundle(...) as rt:``); a backend
    given by name is the runtime's and closes with it, a ``Backend`` instance stays the caller's.
    ``tactic``: force one tactic on every stage (``AdaptiveRuntime``). ``cache_dir``: where the
    ``ov`` backend caches its compiled models (by graph sha256, OpenVINO version, CPU and settings).
    """
    manifest = read_manifest(path)
    if not isinstance(backend, str):
        if cache_dir is not None:
            raise ConfigError("cache_dir is for a backend made by name: give it to the backend (OvBackend(cache_dir=...))")
        return AdaptiveRuntime(path, manifest, backend, budget, precision, tactic=tactic)
    check_tactic(tactic)  # a typo costs no backend start (TensorRT's is seconds)
    owned = get_backend(backend, threads, cache_dir=cache_dir)
    try:
        return AdaptiveRuntime(path, manifest, owned, budget, precision, owns_backend=True, tactic=tactic)
    except BaseException:  # a bad budget, precision or tactics file: the runtime never took the backend
        owned.close()
        raise
