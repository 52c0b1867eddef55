"""Pictures of the policy: what each block decided for one image (``adavit-deploy inspect``).

Like the paper's qualitative figures: one panel per block with the input
image and the patches the block dropped tinted blue; below, a strip with one
square per sub-layer and per head of each block (ran or skipped); the title
gives the image's GMACs against dense. ``--grid`` puts several images side by
side, each tinted by how many blocks dropped each patch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_file, check_writable
from .config import AdaViTConfig
from .cost import dense_gmacs
from .errors import AdaViTDeployError
from .runtime import InferResult


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or the one-line install hint."""
    try:
        import matplotlib
    except ImportError:
        raise AdaViTDeployError("plots need matplotlib: pip install 'adavit-deploy[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Dropped patches are blended this far toward blue: clear over black background and bright ink alike.
DROP_TINT, DROP_ALPHA = np.array([0.15, 0.4, 1.0]), 0.65
RAN, SKIPPED, FIXED = "#2e7d32", "#ffffff", "#a5d6a7"
LEGEND = "green cell: ran · white cell: skipped · pale cell: no decision there, always runs"


def _decisions(cfg: AdaViTConfig, result: InferResult, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``i``'s heads (depth, H), sub-layers (depth, 2) and patches (depth, P), all 0/1;
    blocks without a selector get ones (they always run everything)."""

    def per_block(blocks: tuple[int, ...], decided: np.ndarray, width: int) -> np.ndarray:
        return np.stack([decided[i, blocks.index(b)] if b in blocks else np.ones(width) for b in range(cfg.depth)])

    heads = per_block(cfg.head_select, result.head_select, cfg.num_heads)
    layers = per_block(cfg.layer_select, result.layer_select, 2)
    tokens = per_block(cfg.token_select, result.token_select, cfg.num_tokens)
    return heads, layers, tokens[:, 1:]


def _text(label: str) -> str:
    """A user-supplied name as literal figure text (a pair of ``$`` would start matplotlib's mathtext)."""
    return label.replace("$", r"\$")


def _draw_image(ax, cfg: AdaViTConfig, image: np.ndarray, kept: np.ndarray) -> None:
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


def _draw_strip(ax, cfg: AdaViTConfig, heads: np.ndarray, layers: np.ndarray, tokens: np.ndarray, fontsize: float) -> None:
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


def _save(fig, out: str | Path) -> Path:
    plt = pyplot()
    out = Path(out)
    with atomic_file(out, "--out") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def plot_policy(cfg: AdaViTConfig, image: np.ndarray, result: InferResult, i: int, label: str, out: str | Path) -> Path:
    """Write sample ``i``'s decisions to ``out``: its (normalised CHW) ``image`` once per block with
    the dropped patches tinted, and below, the strip of sub-layers and heads per block."""
    plt = pyplot()
    heads, layers, tokens = _decisions(cfg, result, i)
    cols = min(cfg.depth, 6)
    rows = -(-cfg.depth // cols)
    strip = 0.34 * (2 + cfg.num_heads) + 1.2
    fig = plt.figure(figsize=(2.1 * cols + 0.8, 2.35 * rows + strip + 0.7), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[2.35] * rows + [strip])
    for block in range(cfg.depth):
        ax = fig.add_subplot(grid[block // cols, block % cols])
        _draw_image(ax, cfg, image, tokens[block])
        ax.set_title(f"block {block}: {int(tokens[block].sum())}/{cfg.num_patches} patches", fontsize=9)
    _draw_strip(fig.add_subplot(grid[rows, :]), cfg, heads, layers, tokens, fontsize=9)
    top = int(result.logits[i].argmax())
    fig.suptitle(
        f"{_text(label)}: class {top}, {result.gmacs[i] * 1e3:.2f} MMACs = {result.gmacs[i] / dense_gmacs(cfg):.0%} of dense\n"
        f"blue patches: dropped by the block · {LEGEND}",
        fontsize=10,
    )
    return _save(fig, out)


def plot_grid(
    cfg: AdaViTConfig, images: np.ndarray, result: InferResult, labels: list[str], out: str | Path, cols: int = 5
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
        heads, layers, tokens = _decisions(cfg, result, i)
        ax = fig.add_subplot(grid[2 * r, c])
        _draw_image(ax, cfg, images[i], tokens.mean(0))
        share = result.gmacs[i] / dense_gmacs(cfg)
        top = int(result.logits[i].argmax())
        ax.set_title(f"{_text(label)}: class {top}\n{share:.0%} of dense GMACs · {tokens.mean():.0%} patches", fontsize=9)
        _draw_strip(fig.add_subplot(grid[2 * r + 1, c]), cfg, heads, layers, tokens, fontsize=7)
    fig.suptitle(f"blue: share of blocks that dropped the patch · {LEGEND}", fontsize=10)
    return _save(fig, out)


def figure_paths(out: str | Path, labels: list[str]) -> list[Path]:
    """One figure per input: exactly ``out`` for one; else ``out``'s stem plus each input's name,
    numbered where names repeat (``a/x.png`` and ``b/x.png`` -> ``policy-x-1.png``, ``policy-x-2.png``)."""
    out = Path(out)
    if len(labels) == 1:
        return [out]
    names = []
    for label in labels:
        base, _, index = label.partition("[")  # "a.png" -> a, "x.npy[3]" -> x_3
        names.append(Path(base).stem + (f"_{index.rstrip(']')}" if index else ""))
    taken, unique = set(), []
    for name in names:
        candidate, k = name, 1
        if names.count(name) > 1:
            candidate = f"{name}-{k}"
        while candidate in taken:
            k += 1
            candidate = f"{name}-{k}"
        taken.add(candidate)
        unique.append(candidate)
    return [out.with_name(f"{out.stem}-{name}.png") for name in unique]


def inspect_bundle(
    bundle: str | Path,
    inputs: list[Path],
    out: str | Path,
    threads: int = 0,
    budget: str | float = "native",
    grid: bool = False,
) -> list[Path]:
    """Run ``bundle`` on ``inputs`` and write one policy figure per image (names: ``figure_paths``),
    or with ``grid`` exactly ``out``: every image side by side.

    The output path is checked before anything runs.
    """
    from .inputs import load_inputs
    from .runtime import load_bundle

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise AdaViTDeployError(f"--out {out}: write a .png file")
    check_writable(out, "--out")
    with load_bundle(bundle, threads=threads, budget=budget) as runtime:
        images, labels = load_inputs(inputs, runtime.cfg)
        result = runtime.infer(images)
    if grid:
        return [plot_grid(runtime.cfg, images, result, labels, out)]
    paths = figure_paths(out, labels)
    return [plot_policy(runtime.cfg, images[i], result, i, label, p) for i, (label, p) in enumerate(zip(labels, paths))]
