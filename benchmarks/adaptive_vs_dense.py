"""Adaptive runtime vs the dense baseline graph on an Ada-DeiT-S-shaped model.

Makes (once) a random-weight Ada-DeiT-S checkpoint (224 px, 12 blocks, 6
heads, 1000 classes) whose decisions keep ``--target`` of the dense GMACs,
exports it (once) to ``benchmarks/.work/``, then runs ``adavit-deploy bench``
on that bundle: the measurement itself lives in ``adavit_deploy/bench.py``.
Every other option goes to ``bench`` (``adavit-deploy bench --help``); by
default the masked PyTorch reference is left out.

    python benchmarks/adaptive_vs_dense.py [--target 0.5] [--batch-sizes 1,16] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adavit_deploy.bench import export_isolated
from adavit_deploy.cli import app
from adavit_deploy.config import preset
from adavit_deploy.synthetic import random_checkpoint

WORK = Path(__file__).resolve().parent / ".work"


def bundle_path(target: float) -> Path:
    """The Ada-DeiT-S-shaped bundle at ``target`` x dense GMACs, made on first use."""
    ckpt, bundle = WORK / f"ada-deit-s-{target}.pth", WORK / f"ada-deit-s-{target}"
    WORK.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        random_checkpoint(preset("ada-deit-s"), ckpt, target=target)
    if not bundle.exists():
        export_isolated(ckpt, bundle)  # in a child: this process keeps ONNX Runtime's pool free for --threads
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense")
    args, rest = ap.parse_known_args()
    if not any(a.startswith("--engines") for a in rest):
        rest += ["--engines", "adaptive,dense"]
    app(["bench", str(bundle_path(args.target)), *rest], prog_name="adaptive_vs_dense.py")


if __name__ == "__main__":
    main()
