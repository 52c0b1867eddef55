"""Every figure the project draws, on matplotlib (the ``plot`` extra), imported only when a figure is drawn.

- ``plot_report``: a ``bench`` run (throughput per engine, GMACs per image);
- ``plot_tradeoff``: ``evaluate``'s top-1 against mean GMACs per budget and precision;
- ``plot_policy`` / ``plot_grid``: ``inspect``'s per-block decisions over the image,
  like the paper's qualitative figures.

The numbers come computed (``bench``, ``evaluate``, ``visualize``); this
module only draws them. Figures are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .atomic import atomic_file
from .config import AdaViTConfig
from .cost import dense_gmacs
from .errors import AdaViTDeployError

if TYPE_CHECKING:
    from .bench import BenchReport
    from .evaluate import EvalRow

#: One image's decisions per block, all 0/1: heads (depth, H), sub-layers (depth, 2), patches (depth, P).
Decisions = tuple[np.ndarray, np.ndarray, np.ndarray]


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or the one-line install hint."""
    try:
        import matplotlib
    except ImportError:
        raise AdaViTDeployError("plots need matplotlib: pip install 'adavit-deploy[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require_plotting() -> None:
    """Raise the one-line install hint now, rather than after a long run."""
    pyplot()


def _save(fig, path: str | Path, option: str, dpi: int) -> Path:
    """Write ``fig`` to ``path`` atomically (``option`` names it in errors) and free it."""
    path = Path(path)
    with atomic_file(path, option) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    return path


# -- bench -----------------------------------------------------------------------------------

ENGINE_COLORS = {"adaptive": "#1b9e77", "dense": "#7570b3", "reference": "#d95f02"}


def _short(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """A PNG: throughput per engine and batch size (speedups vs dense on the bars), and the GMACs per image."""
    from .bench.report import times  # not at import: ``bench`` re-exports this module's functions
    from .parity import pytorch_parity_sentence

    plt = pyplot()
    sizes, engines = report.settings["batch_sizes"], report.settings["engines"]
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1.5, 1]})
    width = 0.8 / max(len(engines), 1)
    x = np.arange(len(sizes))
    for k, engine in enumerate(engines):
        rows = [report.result(engine, b) for b in sizes]
        ips = [r["throughput_ips"] for r in rows]
        bars = ax.bar(x + (k - (len(engines) - 1) / 2) * width, ips, width, label=engine, color=ENGINE_COLORS.get(engine))
        for bar, r in zip(bars, rows):
            dense = report.result("dense", r["batch_size"])
            label = _short(r["throughput_ips"])
            if dense and engine != "dense":
                label += "\n" + times(dense["latency_ms"]["p50"] / r["latency_ms"]["p50"])
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=9)  # fmt: skip
    ax.set_xticks(x, [f"batch {b}" for b in sizes])
    ax.set_ylabel("images / s (batch size / median latency)")
    ax.set_ylim(0, max(r["throughput_ips"] for r in report.results) * 1.25)
    ax.set_title("Throughput per engine; under each figure: speed-up vs dense", fontsize=11)
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    g = report.gmacs
    per_image = np.asarray(g["per_image"])
    hx.hist(per_image, bins=min(30, max(5, len(per_image) // 2)), color=ENGINE_COLORS["adaptive"], alpha=0.85)
    hx.axvline(g["dense"], color=ENGINE_COLORS["dense"], ls="--", lw=2, label=f"dense: {g['dense']:.3g} GMACs")
    mean_label = f"adaptive mean: {g['adaptive_mean']:.3g} ({g['ratio']:.0%} of dense)"
    hx.axvline(g["adaptive_mean"], color="black", lw=1.5, label=mean_label)
    hx.set_xlim(0, g["dense"] * 1.08)
    hx.set_ylim(0, hx.get_ylim()[1] * 1.3)  # room for the legend
    hx.set_xlabel("GMACs per image (the adaptive decisions)")
    hx.set_ylabel("images")
    hx.set_title(f"Cost of each of the {len(per_image)} benchmark inputs", fontsize=11)
    hx.legend(loc="upper center", frameon=False, fontsize=9)

    env, s, p, t = report.environment, report.settings, report.parity, report.target
    name = Path(t.get("input") or t.get("source_checkpoint") or "").name
    sub = f"{t['model']}; backend {s['backend']}, {s['threads']} threads, {env['cpu']}; "
    sub += f"{s['iterations']} timed calls per engine"
    if p:
        sub += "\n" + pytorch_parity_sentence(p)
    for engine, reason in report.skipped.items():
        sub += f"\n{engine} skipped: {reason}"
    lines = sub.count("\n") + 1
    fig.suptitle(f"adavit-deploy bench: {name}", fontsize=13, fontweight="bold", y=0.985)
    fig.text(0.5, 0.935, sub, ha="center", va="top", fontsize=9.5, color="#333333")
    fig.tight_layout()
    fig.subplots_adjust(top=0.89 - 0.035 * lines)
    return _save(fig, path, "--plot", dpi=120)


# -- evaluate --------------------------------------------------------------------------------


def plot_tradeoff(rows: Sequence[EvalRow], dense_top1: float, title: str, path: str | Path) -> Path:
    """Top-1 against mean GMACs (share of dense), one marker per precision, budgets labelled."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    # shrinking markers: where precisions agree the points coincide, and all stay visible
    markers = {"fp32": ("o", "#1b9e77", 13), "fp16": ("s", "#7570b3", 9), "int8": ("^", "#d95f02", 6)}
    for precision in dict.fromkeys(r.precision for r in rows):
        sel = sorted((r for r in rows if r.precision == precision), key=lambda r: r.gmacs_fraction)
        marker, color, size = markers.get(precision, ("x", "black", 8))
        ax.plot([r.gmacs_fraction * 100 for r in sel], [r.top1 * 100 for r in sel], marker=marker, color=color,
                label=precision, alpha=0.85, ms=size, lw=1.5)  # fmt: skip
        if precision == "fp32":
            for i, r in enumerate(sel):  # below and above in turn: budgets close in GMACs stay readable
                ax.annotate(r.budget, (r.gmacs_fraction * 100, r.top1 * 100), xytext=(6, -14 if i % 2 == 0 else 8),
                            textcoords="offset points")  # fmt: skip
    ax.scatter([100], [dense_top1 * 100], marker="*", s=160, color="black", label="dense graph", zorder=3)
    ax.set_xlabel("mean GMACs, % of dense")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.15)  # room for the labels above and below the points
    ax.legend(frameon=False, loc="best")  # lower right is where the dense point usually is
    fig.tight_layout()
    return _save(fig, path, "--plot", dpi=120)


# -- inspect ---------------------------------------------------------------------------------

#: Dropped patches are blended this far toward blue: clear over black background and bright ink alike.
DROP_TINT, DROP_ALPHA = np.array([0.15, 0.4, 1.0]), 0.65
RAN, SKIPPED, FIXED = "#2e7d32", "#ffffff", "#a5d6a7"
LEGEND = "green cell: ran · white cell: skipped · pale cell: no decision there, always runs"


def _text(label: str) -> str:
    """A user-supplied name as literal figure text (a pair of ``$`` would start matplotlib's mathtext)."""
    return label.replace("$", r"\$")


def draw_image(ax, cfg: AdaViTConfig, image: np.ndarray, kept: np.ndarray) -> None:
    """The (normalised CHW) ``image`` with each patch tinted blue by how much it was dropped
    (``kept``: (P,) in [0, 1]) and faint patch borders, so patches can be counted."""
    pre = cfg.preprocess
    rgb = image.transpose(1, 2, 0) * np.array(pre.std) + np.array(pre.mean)
    rgb = np.clip(rgb if rgb.shape[-1] == 3 else rgb.mean(-1, keepdims=True).repeat(3, -1), 0, 1)
    grid, p = cfg.img_size // cfg.patch_size, cfg.patch_size
    alpha = (DROP_ALPHA * (1 - kept)).reshape(grid, grid).repeat(p, 0).repeat(p, 1)[:, :, None]
    ax.imshow(np.clip(rgb * (1 - alpha) + DROP_TINT * alpha, 0, 1), interpolation="nearest")
    for k in range(1, grid):
        ax.axhline(k * p - 0.5, color="white", lw=0.4, alpha=0.35)
        ax.axvline(k * p - 0.5, color="white", lw=0.4, alpha=0.35)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_strip(ax, cfg: AdaViTConfig, heads: np.ndarray, layers: np.ndarray, tokens: np.ndarray, fontsize: float) -> None:
    """One column per block, one separate square per sub-layer and per head (countable at any
    depth), and the block's kept patches above its column."""
    from matplotlib.patches import Rectangle

    names = ["MSA", "FFN"] + [f"head {h + 1}" for h in range(cfg.num_heads)]
    cells = np.concatenate([layers, heads], axis=1)  # (depth, 2 + H)
    decided = [[b in cfg.layer_select] * 2 + [b in cfg.head_select] * cfg.num_heads for b in range(cfg.depth)]
    row_y = [r + (0.35 if r >= 2 else 0) for r in range(len(names))]  # a gap between sub-layers and heads
    for b in range(cfg.depth):
        for r, y in enumerate(row_y):
            color = (RAN if cells[b, r] else SKIPPED) if decided[b][r] else FIXED
            ax.add_patch(Rectangle((b + 0.1, y + 0.1), 0.8, 0.8, facecolor=color, edgecolor="#555555", lw=0.8))
    ax.set_xlim(0, cfg.depth)
    ax.set_ylim(row_y[-1] + 1, -0.1)
    ax.set_aspect("equal")
    ax.set_yticks([y + 0.5 for y in row_y], names, fontsize=fontsize)
    ax.set_xticks(np.arange(cfg.depth) + 0.5, [str(b) for b in range(cfg.depth)], fontsize=fontsize)
    ax.set_xlabel("block", fontsize=fontsize)
    top = ax.secondary_xaxis("top")
    top.set_xticks(np.arange(cfg.depth) + 0.5, [str(int(t.sum())) for t in tokens], fontsize=fontsize)
    top.set_xlabel(f"patches kept (of {cfg.num_patches})", fontsize=fontsize)
    top.tick_params(length=0)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_policy(
    cfg: AdaViTConfig, image: np.ndarray, decisions: Decisions, top: int, gmacs: float, label: str, out: str | Path
) -> Path:
    """Write one image's ``decisions`` to ``out``: its (normalised CHW) ``image`` once per block with
    the dropped patches tinted, and below, the strip of sub-layers and heads per block."""
    plt = pyplot()
    heads, layers, tokens = decisions
    cols = min(cfg.depth, 6)
    rows = -(-cfg.depth // cols)
    strip = 0.34 * (2 + cfg.num_heads) + 1.2
    fig = plt.figure(figsize=(2.1 * cols + 0.8, 2.35 * rows + strip + 0.7), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[2.35] * rows + [strip])
    for block in range(cfg.depth):
        ax = fig.add_subplot(grid[block // cols, block % cols])
        draw_image(ax, cfg, image, tokens[block])
        ax.set_title(f"block {block}: {int(tokens[block].sum())}/{cfg.num_patches} patches", fontsize=9)
    draw_strip(fig.add_subplot(grid[rows, :]), cfg, heads, layers, tokens, fontsize=9)
    fig.suptitle(
        f"{_text(label)}: class {top}, {gmacs * 1e3:.2f} MMACs = {gmacs / dense_gmacs(cfg):.0%} of dense\n"
        f"blue patches: dropped by the block · {LEGEND}",
        fontsize=10,
    )
    return _save(fig, out, "--out", dpi=100)


def plot_grid(
    cfg: AdaViTConfig,
    images: np.ndarray,
    decisions: Sequence[Decisions],
    tops: Sequence[int],
    gmacs: np.ndarray,
    labels: list[str],
    out: str | Path,
    cols: int = 5,
) -> Path:
    """Write one figure of every image side by side (``cols`` a row): each tinted by the share of
    blocks that dropped each patch, above its strip of sub-layers and heads."""
    plt = pyplot()
    cols = min(cols, len(labels))
    rows = -(-len(labels) // cols)
    width = 2.6 * max(1.0, cfg.depth / 8)  # inches a column: the strip's squares stay legible at 12 blocks
    strip = 0.9 + (2.35 + cfg.num_heads) * min(0.22, width / cfg.depth)
    fig = plt.figure(figsize=(width * cols, (2.9 + strip) * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[2.6, strip] * rows)
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        heads, layers, tokens = decisions[i]
        ax = fig.add_subplot(grid[2 * r, c])
        draw_image(ax, cfg, images[i], tokens.mean(0))
        share = gmacs[i] / dense_gmacs(cfg)
        ax.set_title(f"{_text(label)}: class {tops[i]}\n{share:.0%} of dense GMACs · {tokens.mean():.0%} patches", fontsize=9)
        draw_strip(fig.add_subplot(grid[2 * r + 1, c]), cfg, heads, layers, tokens, fontsize=7)
    fig.suptitle(f"blue: share of blocks that dropped the patch · {LEGEND}", fontsize=10)
    return _save(fig, out, "--out", dpi=100)


# -- open-loop serving -------------------------------------------------------------------------


def plot_open_loop(report, path: str | Path) -> Path:
    """p99 latency and mean GMACs against the offered load, one line per policy, the SLO as a line."""
    plt = pyplot()
    fig, (lx, gx) = plt.subplots(1, 2, figsize=(12, 4.8))
    policies = report.settings["policies"]
    for policy in policies:
        rows = sorted((r for r in report.open_loop if r["policy"] == policy), key=lambda r: r["offered_rps"])
        x = [r["offered_rps"] for r in rows]
        lx.plot(x, [r["p99_ms"] if r["p99_ms"] is not None else np.nan for r in rows], marker="o", label=policy)
        if any(r["mean_gmacs"] is not None for r in rows):
            gx.plot(x, [r["mean_gmacs"] if r["mean_gmacs"] is not None else np.nan for r in rows], marker="o", label=policy)
    lx.axhline(report.slo_ms, color="black", ls="--", lw=1.2, label=f"SLO {report.slo_ms:g} ms")
    lx.set_yscale("log")
    lx.set_xlabel("offered load (requests / s)")
    lx.set_ylabel("p99 latency (ms)")
    lx.set_title("p99 latency under open-loop load", fontsize=11)
    gx.set_xlabel("offered load (requests / s)")
    gx.set_ylabel("mean GMACs per image")
    gx.set_title("Compute spent per image", fontsize=11)
    for ax in (lx, gx):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=9)
    env = report.environment
    fig.suptitle(f"adavit-deploy bench-server (open loop): {report.settings['model']}; client on {env['cpu']}", fontsize=12)
    fig.tight_layout()
    return _save(fig, path, "--plot", dpi=120)
