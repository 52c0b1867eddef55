"""FP16 variants of a bundle's graphs, at the ONNX level.

TensorRT 11 builds strongly typed networks: a graph runs in the precision its
tensors have, so FP16 must be written into the ONNX itself. We convert with
ONNX Runtime's float16 tool, keeping the inputs and outputs float32 (the
runtime loop and the fp32 graphs stay interchangeable) and these in float32:

- ``LayerNormalization`` and ``Softmax``: their reductions lose the most in fp16;
- the policy graphs entirely: they end in the thresholded decision logits,
  and a flipped decision changes which work runs (measured in
  ``calibration/README.md``), while the policy is a few hundred MACs per token;
- the T2T stem (nodes under ``tokens_to_token/``, in the stem and dense
  graphs): the performer's features ``exp(z.w - |z|^2/2)`` reach e^16 with
  the reference's ``|w_i|^2 = 32``, past fp16's largest finite value (e^11),
  and the stem is ~4% of Ada-T2T-ViT-19's MACs.

On ONNX Runtime CPU there are few fp16 kernels; it inserts casts and computes
in fp32 from fp16-rounded tensors, so the CPU run checks the rounding, not
the speed (that is TensorRT's job on a GPU).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

KEEP_FP32 = ("LayerNormalization", "Softmax")
KEEP_FP32_SCOPES = ("tokens_to_token/",)


def convert_fp16(src: Path, dst: Path, keep_fp32: tuple[str, ...] = KEEP_FP32) -> None:
    """Write ``src`` with its float tensors in fp16 (I/O, ``keep_fp32`` ops and ``KEEP_FP32_SCOPES`` in fp32) to ``dst``."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    scoped = [n for n in model.graph.node if any(scope in n.name for scope in KEEP_FP32_SCOPES)]
    # the exporter shares equal weights through Identity nodes named outside the scope: keep those float too
    feeds = {i for n in scoped for i in n.input}
    scoped += [n for n in model.graph.node if n.op_type == "Identity" and set(n.output) & feeds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values clamped to fp16 range" for -inf masks: intended
        model = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(keep_fp32), node_block_list=[n.name for n in scoped])
    # the converter appends the I/O casts last; ONNX wants producers first. ORT's sort orders some nodes
    # differently from a level-by-level sort: same nodes and edges, bit-identical outputs (checked on the demo)
    OnnxModel(model).topological_sort()
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
