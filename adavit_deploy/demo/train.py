"""Train the demo AdaViT: ``python -m adavit_deploy.demo.train [--out PATH]``.

Recipe (AdaViT's, scaled down): (1) train the backbone with every decision
forced on; (2) fine-tune with the decision heads live (Gumbel sigmoid,
straight-through), distilling from the dense model of step 1, with a usage
loss that pulls the batch's mean GMACs toward ``target`` of dense. The cost
is the exact ADAVIT.md count (``cost.sample_gmacs``) computed on the
straight-through masks, so the knob is GMACs themselves. Results are printed
and written beside the checkpoint as JSON (see docs/demo-model.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cost import dense_gmacs, sample_gmacs
from ..model import AdaViT, save_checkpoint
from . import CHECKPOINT_NAME, DEMO_CONFIG, load_digits_split


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random shifts of up to one patch (4 px), the only augmentation."""
    pad = F.pad(x, (4, 4, 4, 4), mode="replicate")
    i, j = np.random.randint(0, 9, size=2)
    return pad[:, :, i : i + x.shape[2], j : j + x.shape[3]]


def _fit(model: AdaViT, x: torch.Tensor, y: torch.Tensor, loss_fn, epochs: int, lr: float, batch: int, on_epoch) -> None:
    """AdamW with linear warm-up and cosine decay; random shifts; ``on_epoch(epoch)`` after each epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(x) / batch)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            loss = loss_fn(_augment(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        on_epoch(epoch)


@torch.no_grad()
def evaluate(model: AdaViT, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Held-out top-1 adaptive and forced-dense, and the mean GMACs ratio."""
    model.eval()
    x = torch.from_numpy(images)
    out = model(x)
    dense = model(x, force_dense=True)
    gmacs = sample_gmacs(model.cfg, out.head_select, out.layer_select, out.token_select)
    return {
        "top1_adaptive": float((out.logits.argmax(1).numpy() == labels).mean()),
        "top1_dense": float((dense.logits.argmax(1).numpy() == labels).mean()),
        "gmacs_ratio": float(gmacs.mean() / dense_gmacs(model.cfg)),
    }


def train(
    out: Path,
    dense_epochs: int = 80,
    adaptive_epochs: int = 60,
    target: float = 0.45,
    batch: int = 64,
    seed: int = 0,
    log=print,
) -> dict[str, float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    start = time.perf_counter()
    data = load_digits_split()
    x_train, y_train = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    model = AdaViT(DEMO_CONFIG)
    dense_total = dense_gmacs(model.cfg)

    def report(phase: str, every: int):
        def on_epoch(epoch: int) -> None:
            if (epoch + 1) % every == 0:
                log(f"{phase} epoch {epoch + 1}: {evaluate(model, data.test_images, data.test_labels)}")

        return on_epoch

    # 1. the backbone, every decision on
    def dense_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb, force_dense=True).logits, yb, label_smoothing=0.1)

    _fit(model, x_train, y_train, dense_loss, dense_epochs, 2e-3, batch, report("dense", 20))
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
        ratio = sample_gmacs(model.cfg, o.head_select, o.layer_select, o.token_select).mean() / dense_total
        return (
            F.cross_entropy(o.logits, yb, label_smoothing=0.1)
            + F.kl_div(o.logits.log_softmax(-1), soft_targets, reduction="batchmean")
            + 10.0 * (ratio - target) ** 2
        )

    _fit(model, x_train, y_train, adaptive_loss, adaptive_epochs, 5e-4, batch, report("adaptive", 10))

    results = evaluate(model, data.test_images, data.test_labels)
    results.update(
        train_seconds=round(time.perf_counter() - start, 1),
        threads=torch.get_num_threads(),
        dense_epochs=dense_epochs,
        adaptive_epochs=adaptive_epochs,
        target=target,
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
    ap.add_argument("--dense-epochs", type=int, default=80)
    ap.add_argument("--adaptive-epochs", type=int, default=60)
    ap.add_argument("--target", type=float, default=0.45, help="mean GMACs / dense GMACs to train toward")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train(args.out, args.dense_epochs, args.adaptive_epochs, args.target, seed=args.seed)


if __name__ == "__main__":
    main()
