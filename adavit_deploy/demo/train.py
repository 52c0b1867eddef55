"""Train the demo AdaViT: ``python -m adavit_deploy.demo.train [--out PATH]``.

Recipe (AdaViT's, scaled down): (1) train the backbone with every decision
forced on; (2) fine-tune with the decision heads live (Gumbel sigmoid,
straight-through), distilling from the dense model of step 1, with AdaViT's
usage losses: one per decision type (heads, sub-layers, patches), each
pulling the batch's mean keep rate toward its target. Every epoch pastes the
training digits anew (random position and scale), the only augmentation.
Results are printed and written beside the checkpoint as JSON (see
docs/demo-model.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..cost import dense_gmacs, sample_gmacs
from ..errors import ConfigError
from ..model import AdaViT, save_checkpoint
from ..model.adavit import SelectHead
from . import CHECKPOINT_NAME, DEMO_CONFIG, digit_patches, load_digits_split, paste_digits, transform_canvases

#: Mean keep rate each usage loss pulls toward: few patches (a digit covers ~36% of them), most heads and sub-layers.
USAGE_TARGETS = {"heads": 0.85, "layers": 0.85, "tokens": 0.45}
USAGE_WEIGHT = 10.0
HEAD_LR_SCALE = 10.0  # the decision heads start at "keep everything" and must move far in few epochs
ANNEAL = 0.25  # the last quarter of step 2 scales the Gumbel noise down to 0: training ends on the inference policy


def _fit(
    model: AdaViT,
    data: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    size: int,
    loss_fn,
    epochs: int,
    lr: float,
    batch: int,
    on_epoch,
) -> None:
    """AdamW with linear warm-up and cosine decay over fresh ``data()`` each epoch; ``on_epoch(epoch)`` after each."""
    decision = [p for n, p in model.named_parameters() if "_select." in n]
    others = [p for n, p in model.named_parameters() if "_select." not in n]
    opt = torch.optim.AdamW(
        [{"params": others, "lr": lr}, {"params": decision, "lr": lr * HEAD_LR_SCALE}], weight_decay=0.05
    )
    steps = epochs * math.ceil(size / batch)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    for epoch in range(epochs):
        model.train()
        x, y = data()
        for idx in torch.randperm(len(x)).split(batch):
            loss = loss_fn(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        on_epoch(epoch)


def usage(out) -> dict[str, torch.Tensor]:
    """Mean keep rate of each decision type over a batch (patches only: the class token is always kept)."""
    return {"heads": out.head_select.mean(), "layers": out.layer_select.mean(), "tokens": out.token_select[:, :, 1:].mean()}


@torch.no_grad()
def evaluate(model: AdaViT, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Held-out top-1 adaptive and forced-dense, mean GMACs ratio, and where the kept patches lie.

    ``kept_on_digit`` / ``kept_on_background``: the share of patches kept (over
    every block) among those overlapping the digit's bounding box / the rest;
    ``kept_in_digit_box``: the share of all kept patches that overlap the box.
    """
    model.eval()
    x = torch.from_numpy(images)
    out = model(x)
    dense = model(x, force_dense=True)
    gmacs = sample_gmacs(model.cfg, out.head_select.numpy(), out.layer_select.numpy(), out.token_select.numpy())
    kept = out.token_select[:, :, 1:].numpy().astype(bool)  # (B, blocks, P)
    digit = np.broadcast_to(digit_patches(images, model.cfg)[:, None], kept.shape)
    return {
        "top1_adaptive": float((out.logits.argmax(1).numpy() == labels).mean()),
        "top1_dense": float((dense.logits.argmax(1).numpy() == labels).mean()),
        "gmacs_ratio": float(gmacs.mean() / dense_gmacs(model.cfg)),
        **{f"kept_{k}": float(v) for k, v in usage(out).items()},
        "kept_on_digit": float(kept[digit].mean()),
        "kept_on_background": float(kept[~digit].mean()),
        "kept_in_digit_box": float(kept[digit].sum() / max(1, kept.sum())),
    }


def train(
    out: Path,
    dense_epochs: int = 100,
    adaptive_epochs: int = 50,
    batch: int = 64,
    seed: int = 0,
    log=print,
    train_images: int | None = None,
) -> dict[str, float]:
    """Train, save the checkpoint to ``out`` and its results beside it; ``train_images`` keeps only the
    first N training digits: a quick check that the recipe runs (the shipped model saw all 1437)."""
    if train_images is not None and train_images < 1:
        raise ConfigError(f"train_images must be >= 1, got {train_images}")
    for name, epochs in (("dense_epochs", dense_epochs), ("adaptive_epochs", adaptive_epochs)):
        if epochs < 0:
            raise ConfigError(f"{name} must be >= 0, got {epochs}")
    if out.is_dir():  # found before training, not by torch.save after it
        raise ConfigError(f"out {out} is a directory: name the checkpoint file, e.g. {out / CHECKPOINT_NAME}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    data = load_digits_split()
    raw, y_train = data.train_raw[:train_images], torch.from_numpy(data.train_labels[:train_images])

    def pasted() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(transform_canvases(paste_digits(raw, rng))), y_train

    model = AdaViT(DEMO_CONFIG)

    def report(phase: str, every: int):
        def on_epoch(epoch: int) -> None:
            if (epoch + 1) % every == 0:
                results = evaluate(model, data.test_images, data.test_labels)
                log(f"{phase} epoch {epoch + 1} ({time.perf_counter() - start:.0f} s): {json.dumps(results)}")

        return on_epoch

    # 1. the backbone, every decision on
    def dense_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb, force_dense=True).logits, yb, label_smoothing=0.1)

    _fit(model, pasted, len(y_train), dense_loss, dense_epochs, 2e-3, batch, report("dense", 10))
    teacher = copy.deepcopy(model).eval()

    # 2. decisions live: start from "keep everything", learn what to drop
    with torch.no_grad():
        for block in model.blocks:
            for head in (block.head_select, block.layer_select, block.attn.token_select):
                if head is not None:
                    head.mlp_head.weight.normal_(0, 0.01)
                    head.mlp_head.bias.fill_(3.0)

    def adaptive_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = teacher(xb, force_dense=True).logits.softmax(-1)
        o = model(xb)
        rates = usage(o)
        return (
            F.cross_entropy(o.logits, yb, label_smoothing=0.1)
            + F.kl_div(o.logits.log_softmax(-1), soft_targets, reduction="batchmean")
            + USAGE_WEIGHT * sum((rates[k] - USAGE_TARGETS[k]) ** 2 for k in USAGE_TARGETS)
        )

    log_adaptive = report("adaptive", 5)

    def on_adaptive_epoch(epoch: int) -> None:
        log_adaptive(epoch)
        noise = min(1.0, max(0.0, (adaptive_epochs - 2 - epoch) / (ANNEAL * adaptive_epochs)))
        for m in model.modules():
            if isinstance(m, SelectHead):
                m.noise = noise

    _fit(model, pasted, len(y_train), adaptive_loss, adaptive_epochs, 5e-4, batch, on_adaptive_epoch)

    results = evaluate(model, data.test_images, data.test_labels)
    results.update(
        train_seconds=round(time.perf_counter() - start, 1),
        threads=torch.get_num_threads(),
        dense_epochs=dense_epochs,
        adaptive_epochs=adaptive_epochs,
        usage_targets=USAGE_TARGETS,
        train_images=len(y_train),
        test_images=len(data.test_labels),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model.eval(), out, epoch=dense_epochs + adaptive_epochs)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    log(json.dumps(results))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / CHECKPOINT_NAME)
    ap.add_argument("--dense-epochs", type=int, default=100)
    ap.add_argument("--adaptive-epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-images", type=int, default=None, help="only the first N training digits (a quick check)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: fastest on a shared machine)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error(f"threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        train(args.out, args.dense_epochs, args.adaptive_epochs, seed=args.seed, train_images=args.train_images)
    except ConfigError as e:  # a bad option: one line, as argparse reports its own
        ap.error(str(e))


if __name__ == "__main__":
    main()
