"""Pictures of the policy: what each block decided for one image (``adavit-deploy inspect``).

Like the paper's qualitative figures: one panel per block with the input
image, the patches the block dropped greyed out, and which heads and
sub-layers ran; the figure's title gives the image's GMACs against dense.
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


def _block_decisions(cfg: AdaViTConfig, result: InferResult, i: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heads (H,), sub-layers (2,), tokens (N,)) of sample ``i`` at ``block``, all 0/1."""
    heads = result.head_select[i, cfg.head_select.index(block)] if block in cfg.head_select else np.ones(cfg.num_heads)
    layer = result.layer_select[i, cfg.layer_select.index(block)] if block in cfg.layer_select else np.ones(2)
    tokens = result.token_select[i, cfg.token_select.index(block)] if block in cfg.token_select else np.ones(cfg.num_tokens)
    return heads, layer, tokens


def plot_policy(cfg: AdaViTConfig, image: np.ndarray, result: InferResult, i: int, label: str, out: str | Path) -> Path:
    """Write sample ``i``'s per-block decisions over its (normalised CHW) ``image`` to ``out``."""
    plt = pyplot()
    pre = cfg.preprocess
    rgb = image.transpose(1, 2, 0) * np.array(pre.std) + np.array(pre.mean)
    rgb = np.clip(rgb if rgb.shape[-1] == 3 else rgb.mean(-1, keepdims=True).repeat(3, -1), 0, 1)
    grid, p = cfg.img_size // cfg.patch_size, cfg.patch_size
    cols = min(cfg.depth, 6)
    rows = -(-cfg.depth // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for block, ax in zip(range(cfg.depth), axes.flat):
        heads, layer, tokens = _block_decisions(cfg, result, i, block)
        kept = tokens[1:].reshape(grid, grid).repeat(p, 0).repeat(p, 1)[:, :, None]
        shown = rgb * (0.25 + 0.75 * kept) + np.array([0.0, 0.0, 0.35]) * (1 - kept)
        ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
        head_str = "".join("█" if h else "·" for h in heads)
        ax.set_title(
            f"block {block}  {int(tokens[1:].sum())}/{grid * grid} patches\n"
            f"MSA {'on' if layer[0] else 'off'} · FFN {'on' if layer[1] else 'off'} · heads {head_str}",
            fontsize=8,
        )
    top = int(result.logits[i].argmax())
    fig.suptitle(
        f"{label}: class {top}, {result.gmacs[i] * 1e3:.2f} MMACs = {result.gmacs[i] / dense_gmacs(cfg):.0%} of dense"
        "   (blue: patches the block dropped; heads █ ran, · skipped)",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out, "--out") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


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
    bundle: str | Path, inputs: list[Path], out: str | Path, threads: int = 0, budget: str | float = "native"
) -> list[Path]:
    """Run ``bundle`` on ``inputs`` and write one policy figure per image (names: ``figure_paths``).

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
    paths = figure_paths(out, labels)
    return [plot_policy(runtime.cfg, images[i], result, i, label, p) for i, (label, p) in enumerate(zip(labels, paths))]
