"""Pictures of the policy: what each block decided for one image (``adavit-deploy inspect``).

Like the paper's qualitative figures: one panel per block with the input
image and the patches the block dropped tinted blue; below, a strip with one
square per sub-layer and per head of each block (ran or skipped); the title
gives the image's GMACs against dense. ``--grid`` puts several images side by
side, each tinted by how many blocks dropped each patch. This module runs the
bundle and reads the decisions per block; ``plots.py`` draws them.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import check_writable
from .config import AdaViTConfig
from .decisions import NAMES, per_block
from .errors import AdaViTDeployError, param
from .plots import Decisions, plot_grid, plot_policy, require_plotting
from .runtime import InferResult


def block_decisions(cfg: AdaViTConfig, result: InferResult, i: int) -> Decisions:
    """Sample ``i``'s heads (depth, H), sub-layers (depth, 2) and patches (depth, P), all 0/1;
    blocks without a selector get ones (they always run everything)."""
    heads, layers, tokens = (per_block(cfg, name, getattr(result, name)[[i]])[0] for name in NAMES)
    return heads, layers, tokens[:, 1:]


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
    backend: str = "ort",
    precision: str = "fp32",
) -> list[Path]:
    """Run ``bundle`` on ``inputs`` (on ``backend`` at ``precision``) and write one policy figure per
    image (names: ``figure_paths``), or with ``grid`` exactly ``out``: every image side by side.

    The output path and matplotlib are checked before anything runs.
    """
    from .inputs import load_inputs
    from .runtime import load_bundle

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise AdaViTDeployError(f"{param('out')} {out}: write a .png file")
    check_writable(out, "--out")
    require_plotting()
    with load_bundle(bundle, backend, threads=threads, budget=budget, precision=precision) as runtime:
        images, labels = load_inputs(inputs, runtime.cfg)
        result = runtime.infer(images)
    cfg = runtime.cfg
    decisions = [block_decisions(cfg, result, i) for i in range(len(labels))]
    tops = [int(k) for k in result.logits.argmax(1)]
    if grid:
        return [plot_grid(cfg, images, decisions, tops, result.gmacs, labels, out)]
    paths = figure_paths(out, labels)
    return [
        plot_policy(cfg, images[i], decisions[i], tops[i], float(result.gmacs[i]), label, path)
        for i, (label, path) in enumerate(zip(labels, paths))
    ]
