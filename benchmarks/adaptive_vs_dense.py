"""Adaptive runtime vs the dense baseline graph, and INT8 vs FP32, on an Ada-DeiT-S or Ada-T2T-ViT-19-shaped model.

Makes (once) a random-weight checkpoint of ``--arch`` (``deit_t``: Ada-DeiT-T; ``deit_s``: Ada-DeiT-S,
224 px, 12 blocks, 6 heads; ``t2t_vit_19``: Ada-T2T-ViT-19, performer stem,
19 blocks, 7 heads; 1000 classes) whose decisions keep ``--target`` of the dense GMACs,
exports it (once) to ``benchmarks/.work/`` with INT8 graphs calibrated on 32
seeded normal images (a different seed from bench's inputs), tunes its
tactics on this machine for batch sizes 1 and 16 for the backend and every
precision the engines ask for (once per machine: ``adavit-deploy tune``),
then runs ``adavit-deploy bench`` on that bundle: the measurement itself
lives in ``adavit_deploy/bench/``. Every other option goes to ``bench``
(``adavit-deploy bench --help``); by default the engines are
``adaptive,dense`` (issue 3's comparison); ``--engines adaptive,adaptive.int8``
gives issue 5's, ``--backend ov --engines adaptive,dense,adaptive.bf16,dense.bf16``
issue 23's (the dense engines also run on ONNX Runtime: the fastest is the baseline).

The script owns its process, as the CLI does: ONNX Runtime runs on its
process pool (``use_process_pool``); ``--session-pools`` measures the
library's default instead (what ``load_bundle`` gives a Python caller).

    python benchmarks/adaptive_vs_dense.py [--arch deit_t|deit_s|t2t_vit_19] [--target 0.5] [--no-tune] [--session-pools] [--batch-sizes 1,16] [--threads 2] [--backend ort|ov] [--engines ...]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from adavit_deploy.bench.engines import split_engine
from adavit_deploy.cli import app
from adavit_deploy.config import preset
from adavit_deploy.export import export_bundle
from adavit_deploy.runtime import load_bundle
from adavit_deploy.runtime.backends.ort import use_process_pool
from adavit_deploy.synthetic import random_checkpoint
from adavit_deploy.tuner import tune

WORK = Path(__file__).resolve().parent / ".work"
CALIBRATION_SEED = 1  # bench's own inputs use seed 0
#: ``--arch`` -> the preset it makes (config.PRESETS)
ARCHS = {"deit_t": "ada-deit-t", "deit_s": "ada-deit-s", "t2t_vit_19": "ada_step_t2t_vit_19_lnorm"}


def bundle_path(target: float, threads: int, arch: str = "deit_s") -> Path:
    """The ``arch``-shaped bundle at ``target`` x dense GMACs (with INT8 graphs), made on first use."""
    name = ARCHS[arch].replace("_", "-")
    ckpt, bundle = WORK / f"{name}-{target}.pth", WORK / f"{name}-{target}-int8"
    WORK.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        print(f"making a random {ARCHS[arch]} at {target:g} x dense GMACs (once) ...", flush=True)
        random_checkpoint(preset(ARCHS[arch]), ckpt, target=target)
    if not bundle.exists():
        calib = WORK / "calibration-normal-32.npz"
        rng = np.random.default_rng(CALIBRATION_SEED)
        np.savez(calib, images=rng.standard_normal((32, 3, 224, 224), dtype=np.float32))
        print(f"exporting {ckpt.name} with INT8 graphs (once) ...", flush=True)
        export_bundle(ckpt, bundle, threads=threads, calibration=calib, int8=True)
    return bundle


def tuned(bundle: Path, threads: int, backend: str, precisions: list[str]) -> Path:
    """``bundle`` with tactics tuned here at batch sizes 1 and 16 on ``backend`` at each of ``precisions``
    (skipped where already tuned here)."""
    for precision in precisions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a table from another machine: re-tuned just below
            with load_bundle(bundle, backend, threads=threads, precision=precision) as rt:
                done = rt.tactics is not None
        if not done:
            print(f"tuning the {backend} {precision} tactics for this machine (once) ...", flush=True)
            tune(bundle, (1, 16), precision=precision, backend=backend, threads=threads)
    return bundle


def _option(rest: list[str], name: str, default: str) -> str:
    """The value of ``--name`` among the arguments passed on to bench (``--name V`` or ``--name=V``)."""
    for i, arg in enumerate(rest):
        if arg == name and i + 1 < len(rest):
            return rest[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="deit_s", help="model shape")
    ap.add_argument("--target", type=float, default=0.5, help="mean GMACs as a fraction of dense")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: one per core), for export and bench")
    ap.add_argument("--no-tune", dest="tune", action="store_false", help="run the default tactics (no tactics.json made)")
    ap.add_argument("--session-pools", action="store_true", help="the library's default ONNX Runtime pools, not the process pool")
    args, rest = ap.parse_known_args()
    if not any(a.startswith("--engines") for a in rest):
        rest += ["--engines", "adaptive,dense"]
    if not args.session_pools:
        use_process_pool(args.threads)  # this script owns its process, as the CLI does (docs/bench.md)
    bundle = bundle_path(args.target, args.threads, args.arch)
    if args.tune:
        engines = _option(rest, "--engines", "adaptive").split(",")
        precisions = sorted({split_engine(e)[1] for e in engines if split_engine(e)[0] == "adaptive"})
        tuned(bundle, args.threads, _option(rest, "--backend", "ort"), precisions)
    app(["bench", str(bundle), "--threads", str(args.threads), *rest], prog_name="adaptive_vs_dense.py")


if __name__ == "__main__":
    main()
