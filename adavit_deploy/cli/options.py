"""Options shared by several commands, declared once (``Annotated`` aliases), and the checkpoint overrides."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer


def option_group(name: str, options: dict[str, tuple[Any, Any]], build: Callable[..., Any]) -> Callable:
    """Declare a set of options once for several commands: they take the place of parameter ``name``.

    ``options`` maps each option's parameter name to ``(annotation, default)``;
    Typer reads the command's signature, so the group's options are spliced
    into it where ``name`` stood, and the command receives ``build(**values)``
    as ``name``.
    """

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)  # the group's own annotation may name a type imported late
        params: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            if p.name == name:
                params += [inspect.Parameter(k, p.kind, default=d, annotation=a) for k, (a, d) in options.items()]
            else:
                hint = eval(p.annotation, command.__globals__) if isinstance(p.annotation, str) else p.annotation
                params.append(p.replace(annotation=hint))

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{k: kwargs.pop(k) for k in options})
            return command(*args, **kwargs)

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate

# -- options shared by the commands that read a checkpoint ---------------------
NumHeads = Annotated[Optional[int], typer.Option(help="Heads per block, for checkpoints that do not say (dense DeiT).")]
TokenWithMlp = Annotated[
    Optional[bool],
    typer.Option(
        "--token-with-mlp/--no-token-with-mlp",
        help="Whether token decisions also mask the FFN (ada_token_with_mlp); read from the checkpoint's args when absent.",
        show_default=False,
    ),
]
HeadThreshold = Annotated[Optional[float], typer.Option(help="Head decision threshold (default 0.5).")]
LayerThreshold = Annotated[Optional[float], typer.Option(help="Sub-layer decision threshold (default 0.5).")]
TokenThreshold = Annotated[Optional[float], typer.Option(help="Token decision threshold (default 0.6).")]
QkScale = Annotated[
    Optional[float],
    typer.Option(
        help="Attention scale of the blocks [default: head_dim^-0.5; embed_dim^-0.5 for a T2T-ViT checkpoint "
        "whose args say pretrained]."
    ),
]
# -- options shared by the commands that run a bundle ---------------------------
Budget = Annotated[
    str, typer.Option(help="Which of the bundle's budgets to run: native (the checkpoint's thresholds) or e.g. 0.5.")
]
Precision = Annotated[
    str,
    typer.Option(
        help="fp32; bf16 (the fp32 graphs in bfloat16: --backend ov, on a CPU with bf16); fp16 / int8 if the bundle "
        "was exported with them."
    ),
]
BackendName = Annotated[
    str,
    typer.Option(
        help="ort (ONNX Runtime CPU), ov (OpenVINO CPU: the ov extra), ort-cuda, or trt (engines from `build-trt`)."
    ),
]
Threads = Annotated[int, typer.Option(help="Intra-op threads (0: one per core).")]
# -- options shared by the commands that stream an image collection (evaluate, infer) ----
Workers = Annotated[
    Optional[int],
    typer.Option(help="Threads decoding images ahead of the model [default: half the cores, at least 1].", min=1),
]
SkipBad = Annotated[
    bool,
    typer.Option("--skip-bad", help="Leave out (with a warning naming it) an image file that cannot be read, instead of stopping."),
]
#: How a command that takes a checkpoint says what it runs without one.
DEMO_MODEL = "Default: the embedded demo model (AdaViT trained on handwritten digits)."
DemoBundle = Annotated[
    Optional[Path], typer.Argument(help="Bundle directory [default: export/bundles/ada_digits, the demo model's].")
]


#: The options that override what a checkpoint says (``info``, ``export``): the command's ``overrides``, a dict
#: as ``infer_config`` takes it (``None``: not given).
checkpoint_overrides = option_group(
    "overrides",
    dict(
        num_heads=(NumHeads, None), token_with_mlp=(TokenWithMlp, None), head_threshold=(HeadThreshold, None),
        layer_threshold=(LayerThreshold, None), token_threshold=(TokenThreshold, None), qk_scale=(QkScale, None),
    ),  # fmt: skip
    dict,
)


# -- options shared by the commands that calibrate (export, calibrate) -----------
Budgets = Annotated[
    str,
    typer.Option(
        help="Comma-separated budgets: native (the checkpoint's thresholds) and fractions of dense GMACs, "
        "e.g. native,0.7,0.5. Fractions are calibrated on --calib."
    ),
]
Calib = Annotated[
    Optional[str],
    typer.Option(
        help="Calibration set for budgets and --int8: a folder of images (flat, or ImageFolder class subfolders: "
        "a class-balanced subset), an .npz/.npy of normalised NCHW images, or 'demo' (the demo model's training "
        "digits) [default: demo for the demo model]."
    ),
]
CalibCount = Annotated[int, typer.Option(help="Calibration images to use (a seeded subset of --calib).")]
Fp16 = Annotated[bool, typer.Option("--fp16", help="Add FP16 graphs (I/O, LayerNorm, Softmax, policy in fp32).")]
Int8 = Annotated[bool, typer.Option("--int8", help="Add INT8 Q/DQ graphs calibrated on --calib.")]
Bf16 = Annotated[
    bool,
    typer.Option("--bf16", help="Record bf16's agreement with fp32 (OpenVINO runs the fp32 graphs in bf16: no new graphs)."),
]
