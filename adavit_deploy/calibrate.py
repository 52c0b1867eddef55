"""Calibration, its own step over a finished bundle: budgets, FP16 / INT8 graphs, bf16 agreement.

The data flows one way: ``export_bundle`` writes the fp32 bundle and nothing
else; ``calibrate_bundle`` opens a complete bundle through ``load_bundle``,
measures on it, writes the new graph files beside the old and returns a new
manifest, written atomically. ``export --budgets/--fp16/--int8`` calls it on
the staged bundle before the stage is renamed into place (nothing half-made
is ever visible); ``adavit-deploy calibrate BUNDLE`` calls it on an existing
bundle, staged beside it (unchanged files hard-linked) and swapped in, so a
failure leaves the bundle as it was.

- budgets: ``calibration/budgets.py`` (the threshold search);
- ``fp16`` / ``int8``: a variant of every graph (``<graph>.fp16`` /
  ``<graph>.int8``, ``calibration/fp16.py``, ``calibration/int8.py``), each
  checked against the fp32 graphs on the calibration images;
- ``bf16``: no graphs (OpenVINO runs the fp32 ones in bfloat16); its
  agreement with fp32 on the same images is recorded beside fp16's and int8's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .atomic import atomic_file, staged_directory
from .bundle import MANIFEST, NATIVE, Artifact, Manifest, TensorSpec, is_bundle, read_manifest, sha256, variant_key
from .calibration import CalibrationSet, calibrate_budgets, load_calibration, parse_budgets
from .errors import ConfigError, param
from .graphs import graphs
from .inputs import seeded_noise
from .machine import cpu_model
from .parity import compare, parity_report
from .runtime.adaptive import AdaptiveRuntime, load_bundle
from .runtime.backends import get_backend

Progress = Callable[[str], None]


def graph_artifact(path: Path) -> Artifact:
    """The manifest entry of an ONNX graph file: name, sha256, I/O signature read from the file."""
    import onnx

    def specs(values: Any) -> list[TensorSpec]:
        return [
            TensorSpec(
                v.name,
                str(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    proto = onnx.load(str(path), load_external_data=False).graph
    return Artifact(path.name, sha256(path), specs(proto.input), specs(proto.output))


def variants(runtime: AdaptiveRuntime, precision: str, calib: CalibrationSet | None, step: Progress) -> tuple[dict[str, Artifact], list[str]]:
    """Write the ``precision`` variant of every graph of ``runtime``'s bundle beside it; return their
    manifest entries (by ``variant_key``) and the graphs that stay float.

    A graph that stays float at this precision (``graphs.VARIANTS``: the
    policy graphs always, the classifier at int8; a graph the calibration set
    never ran, which has no activation ranges) gets its fp32 file as its
    variant, so every graph has one (what ``build-trt`` needs).
    """
    from .calibration import fp16, int8

    bundle, manifest = runtime.bundle, runtime.manifest
    calibrators = {}
    if precision == "int8":
        step(f"int8: calibrating activation ranges on {len(calib.images)} images")
        calibrators = int8.calibrate(runtime, calib.images)
    made, kept_float = {}, []
    for name, graph in graphs(manifest.model).items():
        src = manifest.artifacts[name]
        dst = bundle / f"{name}.{precision}.onnx"
        unobserved = precision == "int8" and not (name in calibrators and calibrators[name].observed)
        if not graph.converts_to(precision) or unobserved:
            made[variant_key(name, precision)] = src
            kept_float.append(name)
            continue
        step(f"{precision}: {name}")
        dst.unlink(missing_ok=True)  # a hard link to the bundle being replaced: never written through
        if precision == "fp16":
            fp16.convert_fp16(bundle / src.file, dst)
        else:
            calibrators[name].quantize(dst)
        made[variant_key(name, precision)] = graph_artifact(dst)
    return made, kept_float


def check_needs(names: Sequence[str], int8: bool, calibration: object) -> None:
    """Budgets other than ``native`` and INT8 need a calibration set: refused before any work."""
    needs = [f"{param('budgets')} {n}" for n in names if n != NATIVE] + ([param("int8")] if int8 else [])
    if needs and calibration is None:
        verb = "need" if len(needs) > 1 else "needs"
        raise ConfigError(
            f"{' and '.join(needs[:2])} {verb} a calibration set: pass {param('calibration', 'calib')} "
            "(a folder of images, an .npz, or demo)"
        )


def check_bf16(bf16: bool, threads: int) -> None:
    """``bf16`` needs OpenVINO on a CPU with bf16: refused before any work, not after it."""
    if bf16:
        with get_backend("ov", threads) as ov:
            ov.check_precision("bf16")


def calibrate_bundle(
    bundle: str | Path,
    *,
    budgets: str | Sequence[str] | None = None,
    calibration: str | Path | CalibrationSet | None = None,
    calib_count: int = 256,
    fp16: bool = False,
    int8: bool = False,
    bf16: bool = False,
    threads: int = 0,
    progress: Progress | None = None,
    model: Any = None,
    parity_images: np.ndarray | None = None,
    staged: bool = True,
) -> Manifest:
    """Calibrate a finished ``bundle`` and return its new manifest (also written into it).

    ``budgets``: ``native`` and fractions of dense GMACs, calibrated anew: they replace the
    bundle's (``None``: keep them as they are). They and ``int8`` need ``calibration`` (a folder
    of images, an ``.npz``/``.npy``, ``"demo"``: ``calibration/data.py``). ``bf16`` measures OpenVINO's bf16 against fp32 on the calibration
    images (else ``parity_images``, default 8 seeded normal samples). ``model``: the PyTorch
    model the bundle was exported from, to check fp32 parity against (``export_bundle``).
    ``staged=False``: work in ``bundle`` itself (``export_bundle``'s own staging directory).
    """
    bundle = Path(bundle).resolve()  # "." and symlinks: staged beside the real directory
    manifest = read_manifest(bundle)
    names = parse_budgets(budgets) if budgets is not None else None
    check_needs(names or [], int8, calibration)
    check_bf16(bf16, threads)
    step = progress or (lambda _: None)
    calib = calibration
    if calibration is not None and not isinstance(calibration, CalibrationSet):
        step("reading the calibration set")
        calib = load_calibration(calibration, manifest.model, calib_count)
    images = parity_images if parity_images is not None else _parity_images(manifest)
    with ExitStack() as stack:
        work = bundle if not staged else stack.enter_context(
            staged_directory(bundle, overwrite=True, ours=is_bundle, what="a bundle")
        )
        if staged:
            _link_files(bundle, work)
        new = _measure(work, manifest, names, calib, (fp16, int8, bf16), threads, step, model, images)
        with atomic_file(work / MANIFEST, "the manifest") as tmp:
            tmp.write_text(new.to_json())
    return new


def _measure(
    work: Path, manifest: Manifest, names: list[str], calib: CalibrationSet | None, precisions: tuple[bool, bool, bool],
    threads: int, step: Progress, model: Any, images: np.ndarray,
) -> Manifest:  # fmt: skip
    """The new manifest of the bundle in ``work``: fp32 parity, budgets, variants and their parity vs fp32."""
    parity = dict(manifest.parity)
    new = dataclasses.replace(manifest, parity=parity, artifacts=dict(manifest.artifacts))
    # tactic forced: calibration does not depend on it, and a table tuned with other threads is no news here
    with ExitStack() as opened, load_bundle(work, "ort", threads, tactic="gather") as runtime:
        if model is not None:
            step("checking parity")
            parity.clear()
            parity.update(parity_report(model, runtime, images))
        if names is not None and calib is not None:
            step(f"calibrating budgets {', '.join(names)} on {len(calib.images)} images")
            new.budgets, stats = calibrate_budgets(runtime, calib.images, names, progress=step)
            new.calibration = {**calib.record, "budgets": stats}
        elif names is not None:  # native alone, no calibration set: the checkpoint's thresholds only
            new.budgets, new.calibration = {NATIVE: manifest.budgets[NATIVE]}, {}
        check = calib.images if calib is not None else images
        asked = [p for p, wanted in zip(("fp16", "int8", "bf16"), precisions) if wanted]
        fp32 = runtime.infer(check, batch_size=32) if asked else None
        # the fp32 graphs under the new budgets: INT8 ranges are observed at every budget it will run
        calibrated = opened.enter_context(AdaptiveRuntime(work, new, runtime.backend, tactic="gather"))
        for precision in asked:
            backend, extra = runtime.backend, {}
            if precision == "bf16":
                backend = opened.enter_context(get_backend("ov", threads))
                extra = {"backend": "ov", "cpu": cpu_model()}
            else:
                made, kept_float = variants(calibrated, precision, calib, step)
                new.artifacts.update(made)
                extra = {"kept_float": kept_float}
            variant = opened.enter_context(AdaptiveRuntime(work, new, backend, precision=precision, tactic="gather"))
            parity.setdefault("vs_fp32", {})[precision] = {**compare(fp32, variant.infer(check, batch_size=32)), **extra}
    return new


def _parity_images(manifest: Manifest) -> np.ndarray:
    """The export's own parity images: 8 seeded normal samples."""
    cfg = manifest.model
    return seeded_noise((cfg.in_chans, cfg.img_size, cfg.img_size), 8)[0]


def _link_files(src: Path, dst: Path) -> None:
    """Everything in ``src`` (graphs, tactics, ``trt/`` engines) into ``dst``: hard links where the
    filesystem allows, else copies (what is rewritten is unlinked or replaced first, never written
    through a link)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    for path in src.iterdir():
        if path.is_dir():
            shutil.copytree(path, dst / path.name, copy_function=link)
        elif path.is_file():
            link(str(path), str(dst / path.name))
