"""INT8 variants of the pruned graphs: explicit, symmetric Q/DQ, calibrated on real feeds.

Each *weight* MatMul of an ``attn_L`` / ``mlp_L`` / ``dense`` graph (its B
input reaches an initializer through ``Gather(heads)`` / ``Reshape`` /
``Transpose``) is rewritten as::

    A -> QuantizeLinear(s_a) -> DequantizeLinear(s_a) ----------------\\
                                                                      MatMul -> fp32
    W_int8 [-> Gather(heads)] -> Reshape -> DequantizeLinear(s_w, axis=1) --/

Zero points are 0 (TensorRT's convention); ``s_a`` is one calibrated scale
per activation (max |A| over the calibration feeds), ``s_w`` one scale per
output channel. The kept heads' weights are gathered *in int8*. MatMuls
between activations (q @ k^T, softmax @ v), LayerNorm, Softmax and GELU stay
float, and nothing is quantized after a MatMul: ONNX Runtime then fuses each
weight MatMul into ``MatMulIntegerToFloat`` (an int8 GEMM with fp32 output),
measured 1.35-1.5x (attention) and 1.7-1.8x (FFN) faster per call than fp32
on this project's 2-core AVX2 machine; ``QLinearMatMul`` (int8 output) was
15% slower, and ``onnxruntime.quantization.quantize_static`` on these graphs
(it quantizes the gathered fp32 weights per tensor, per call) 0.97-1.00x
end to end on Ada-DeiT-T, against 1.25-1.46x for ours
(``benchmarks/quantize_static.py``, ``calibration/README.md``).

Weights use the 7-bit range [-63, 63] (still int8, symmetric): ONNX Runtime's
int8 GEMM on x86 CPUs without VNNI sums u8 x s8 pairs in int16 and saturates
on full-range weights (measured: up to 16% error; exact within [-63, 63]).

The weight layout is found by probing rather than by matching the trace: the
graph runs with each weight replaced by ``arange``, so B's entries name the
weight elements they come from; the rewrite is then checked to reproduce B
(dequantized, within half a step) for several head subsets before it is kept.

A patch-embedding Conv (kernel == stride, no padding: the stem's, and the
dense graph's copy of it) is rewritten as the MatMul it is, on non-overlapping
patches, and quantized like the weight MatMuls::

    images -> Reshape -> Transpose -> Reshape (B, patches, C*kh*kw) -> Q -> DQ --\
                                                                                 MatMul -> + bias -> (B, O, H', W')
                                         W_int8 (C*kh*kw, O) -> DequantizeLinear --/

ONNX Runtime has no int8 Conv with a float output (``QLinearConv`` would
quantize the tokens too); as a MatMul it runs as ``MatMulIntegerToFloat``
(measured 1.6-1.9x faster than the fp32 Conv at batch 16). The Q moves ahead of
the patch Transpose, which then shuffles bytes.

Classifier and policy graphs keep their fp32 file as their int8 variant:
under 1% of DeiT-S's MACs, and the policy ends in the thresholded decision
logits. The attention core (q @ k^T, Softmax, softmax @ v) stays float: with
Q/DQ on q and k, ONNX Runtime's CPU kernel for the batched activation x
activation product measured no faster than fp32, and the probabilities
quantize badly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.transformers.onnx_model import OnnxModel

from ..bundle import Artifact, Manifest
from ..errors import CalibrationError
from ..graphs import graphs
from ..runtime.adaptive import AdaptiveRuntime
from ..runtime.tactics import TACTICS
from ..runtime.backends.base import Backend, Runner

#: What to do when a graph is outside what the INT8 rewrite supports (a one-line CalibrationError).
NO_INT8 = "export the bundle without int8 (the INT8 rewrite cannot take this graph)"

ACT_QMAX = 127
WEIGHT_QMAX = 63  # see the module doc: exact on AVX2-only CPUs
#: ops a weight passes through between its initializer and the MatMul
_WEIGHT_PATH_OPS = {"Gather", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


@dataclass
class _WeightMatMul:
    node: onnx.NodeProto
    a: str  # activation input
    b: str  # weight-path output (the MatMul's B)
    init: str  # initializer at the root of the weight path
    heads: str | None  # the Gather indices on the path (the ``heads`` input), if any


def _session(model: onnx.ModelProto):
    """An unoptimised CPU session (an exact fp32 reference), with the runtime's session settings."""
    import onnxruntime as ort

    from ..runtime.backends.ort import session_options

    opts = session_options(optimize=False)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _find_weight_matmuls(model: onnx.ModelProto) -> list[_WeightMatMul]:
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        name, heads = node.input[1], None
        while name not in inits:
            p = producer.get(name)
            if p is None or p.op_type not in _WEIGHT_PATH_OPS:
                break
            if p.op_type == "Gather":
                heads = p.input[1]
            name = p.input[0]
        if name in inits:
            found.append(_WeightMatMul(node, node.input[0], node.input[1], name, heads))
    return found


def _find_patch_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """2-D Convs on non-overlapping patches (kernel == stride, no padding, one group) with a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        k = list(a.get("kernel_shape", []))
        if (
            len(k) == 2
            and list(a.get("strides", [1, 1])) == k
            and not any(a.get("pads", []))
            and a.get("group", 1) == 1
            and set(a.get("dilations", [1, 1])) == {1}
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID")
        ):
            found.append(node)
    return found


def _quantize_columns(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A weight matrix as symmetric int8 with one float32 scale per column (per output channel)."""
    scale = (np.maximum(np.abs(m).max(0), 1e-12) / WEIGHT_QMAX).astype(np.float32)
    return np.clip(np.rint(m / scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8), scale


def _patch_matmul(model: onnx.ModelProto, conv: onnx.NodeProto, amax: float, p: str) -> tuple[list, list]:
    """(nodes, initializers) computing ``conv``'s output as an int8 Q/DQ MatMul on the patches."""
    inits = {t.name: t for t in model.graph.initializer}
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)  # (O, C, kh, kw)
    o, c, kh, kw = w.shape
    shapes = {v.name: v.type.tensor_type.shape for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    shapes.update({v.name: v.type.tensor_type.shape for v in model.graph.input})
    dims = [d.dim_value for d in shapes[conv.input[0]].dim][2:] if conv.input[0] in shapes else []
    if len(dims) != 2 or not all(dims) or dims[0] % kh or dims[1] % kw:
        raise CalibrationError(f"{conv.name}: needs a static input size divisible by the kernel, got {dims}: {NO_INT8}")
    ho, wo = dims[0] // kh, dims[1] // kw
    wm = w.reshape(o, -1).T  # (C*kh*kw, O): row c*kh*kw + i*kw + j, the patch's order below
    wq, sw = _quantize_columns(wm)
    s_a = np.float32(max(amax, 1e-12) / ACT_QMAX)
    i64 = lambda v, n: numpy_helper.from_array(np.array(v, np.int64), p + n)
    new_inits = [
        i64([0, c, ho, kh, wo, kw], "s6"),
        i64([0, ho * wo, c * kh * kw], "s3"),
        i64([0, o, ho, wo], "s4"),
        numpy_helper.from_array(np.array(s_a), p + "sa"),
        numpy_helper.from_array(wq, p + "wq"),
        numpy_helper.from_array(sw, p + "sw"),
    ]
    zero = "qdq_zero_i8"
    nodes = [
        helper.make_node("Reshape", [conv.input[0], p + "s6"], [p + "r6"], name=p + "r6"),
        helper.make_node("Transpose", [p + "r6"], [p + "t6"], perm=[0, 2, 4, 1, 3, 5], name=p + "t6"),
        helper.make_node("Reshape", [p + "t6", p + "s3"], [p + "patches"], name=p + "r3"),
        helper.make_node("QuantizeLinear", [p + "patches", p + "sa", zero], [p + "aq"], name=p + "qa"),
        helper.make_node("DequantizeLinear", [p + "aq", p + "sa", zero], [p + "ad"], name=p + "dqa"),
        helper.make_node("DequantizeLinear", [p + "wq", p + "sw"], [p + "bd"], axis=1, name=p + "dqw"),
        helper.make_node("MatMul", [p + "ad", p + "bd"], [p + "mm"], name=p + "mm"),
    ]
    out = p + "mm"
    if len(conv.input) > 2 and conv.input[2]:
        nodes.append(helper.make_node("Add", [out, conv.input[2]], [p + "biased"], name=p + "bias"))
        out = p + "biased"
    nodes += [  # back to the Conv's (B, O, H', W'); ORT folds this into the trace's flatten + transpose
        helper.make_node("Transpose", [out], [p + "tr"], perm=[0, 2, 1], name=p + "tr"),
        helper.make_node("Reshape", [p + "tr", p + "s4"], [conv.output[0]], name=p + "r4"),
    ]
    return nodes, new_inits


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m


def _probe(model: onnx.ModelProto, matmuls: list[_WeightMatMul], feed: dict[str, np.ndarray], heads: np.ndarray) -> list[np.ndarray]:
    """B of each of ``matmuls`` with its weight replaced by arange, in one run: ``B[i, j]`` = flat
    index of the weight element there (each B depends on its own weight and ``heads`` only)."""
    if not matmuls:  # the stem's patch Conv alone; ONNX Runtime would run every output for no name
        return []
    m = _with_outputs(model, [mm.b for mm in matmuls])
    roots = {mm.init for mm in matmuls}
    for t in m.graph.initializer:
        if t.name in roots:
            w = numpy_helper.to_array(t)
            if w.size >= 2**24:
                raise CalibrationError(f"{t.name}: {w.size} elements is too many for an exact float32 arange probe: {NO_INT8}")
            t.CopyFrom(numpy_helper.from_array(np.arange(w.size, dtype=np.float32).reshape(w.shape), t.name))
    f = {**feed, **{mm.heads: heads for mm in matmuls if mm.heads}}
    outs = _session(m).run([mm.b for mm in matmuls], f)
    for mm, out in zip(matmuls, outs):
        if out.ndim != 2:
            raise CalibrationError(f"{mm.node.name}: expected a 2-D weight, got {out.shape}: {NO_INT8}")
    return [np.rint(out).astype(np.int64) for out in outs]


def _layouts(model: onnx.ModelProto, matmuls: list[_WeightMatMul], feed: dict[str, np.ndarray], n_heads: int):
    """(kind, int8 weight, scale) of each weight MatMul: ``const``, ``rows`` (heads pick input
    channels: proj, fc1) or ``cols`` (heads pick output channels: qkv). Two probe runs in all:
    every head kept, then the last one alone."""
    every = _probe(model, matmuls, feed, np.arange(n_heads, dtype=np.int64))
    headed = [mm for mm in matmuls if mm.heads]
    last = dict(zip((mm.b for mm in headed), _probe(model, headed, feed, np.array([n_heads - 1], np.int64))))
    return [_layout(model, mm, idx, last.get(mm.b), n_heads) for mm, idx in zip(matmuls, every)]


def _layout(model: onnx.ModelProto, mm: _WeightMatMul, idx: np.ndarray, one: np.ndarray | None, n_heads: int):
    """One weight MatMul's layout from its probes: ``idx`` with every head kept, ``one`` with the last alone."""
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == mm.init)).astype(np.float32)
    if not np.array_equal(np.sort(idx.ravel()), np.arange(w.size)):
        raise CalibrationError(f"{mm.node.name}: B is not a permutation of its weight: {NO_INT8}")
    b = w.ravel()[idx]
    bq, scale = _quantize_columns(b)
    kin, n = b.shape
    if one is None:
        return "const", bq, scale
    if one.shape == (kin // n_heads, n) and np.array_equal(one, idx[-kin // n_heads :]):
        return "rows", bq.reshape(n_heads, kin // n_heads, n), scale
    if one.shape == (kin, n // n_heads) and np.array_equal(one, idx[:, -n // n_heads :]):
        return "cols", np.ascontiguousarray(bq.reshape(kin, n_heads, n // n_heads)), scale.reshape(n_heads, n // n_heads)
    raise CalibrationError(f"{mm.node.name}: cannot map the kept heads {one.shape} onto B {b.shape}: {NO_INT8}")


@dataclass
class GraphCalibrator:
    """Streams a graph's calibration feeds: max |A| of every weight MatMul's activation input."""

    path: Path
    n_heads: int
    model: onnx.ModelProto = field(init=False)
    amax: dict[str, float] = field(default_factory=dict)
    probe_feed: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.model = onnx.load(str(self.path))
        self.matmuls = _find_weight_matmuls(self.model)
        self.convs = _find_patch_convs(self.model)
        self.names = sorted({mm.a for mm in self.matmuls} | {c.input[0] for c in self.convs})
        self._session = _session(_with_outputs(self.model, self.names)) if self.names else None

    @property
    def observed(self) -> bool:
        """Whether there is anything to quantize and ranges to do it with."""
        return bool(self.names) and self.probe_feed is not None

    def observe(self, feed: dict[str, np.ndarray]) -> None:
        if self._session is None:
            return
        if self.probe_feed is None:
            self.probe_feed = dict(feed)
        for name, value in zip(self.names, self._session.run(self.names, feed)):
            self.amax[name] = max(self.amax.get(name, 0.0), float(np.abs(value).max()))

    def quantize(self, out: Path) -> None:
        """Write the Q/DQ graph to ``out``."""
        if not self.observed:
            raise CalibrationError(f"{self.path.name}: no weight MatMul or patch Conv, or never run on the calibration set: {NO_INT8}")
        model, g = self.model, self.model.graph
        layouts = _layouts(model, self.matmuls, self.probe_feed, self.n_heads)  # before rewriting
        zero = "qdq_zero_i8"
        inits = [numpy_helper.from_array(np.array(0, np.int8), zero)]
        before: dict[str, list[onnx.NodeProto]] = {}
        checks = []
        for i, (mm, (kind, wq, sw)) in enumerate(zip(self.matmuls, layouts)):
            p = f"qdq{i}_"
            s_a = np.float32(max(self.amax[mm.a], 1e-12) / ACT_QMAX)
            inits += [numpy_helper.from_array(np.array(s_a), p + "sa"), numpy_helper.from_array(wq, p + "wq")]
            # Q and DQ adjacent: ORT rewrites the pair to u8 for its MatMulIntegerToFloat fusion
            nodes = [
                helper.make_node("QuantizeLinear", [mm.a, p + "sa", zero], [p + "aq"], name=p + "qa"),
                helper.make_node("DequantizeLinear", [p + "aq", p + "sa", zero], [p + "ad"], name=p + "dqa"),
            ]
            inits.append(numpy_helper.from_array(sw, p + "sw"))
            b, scale = p + "wq", p + "sw"
            if kind != "const":
                axis, shape = (0, [-1, wq.shape[2]]) if kind == "rows" else (1, [wq.shape[0], -1])
                inits.append(numpy_helper.from_array(np.array(shape, np.int64), p + "shape"))
                nodes += [
                    helper.make_node("Gather", [p + "wq", mm.heads], [p + "wg"], axis=axis, name=p + "gw"),
                    helper.make_node("Reshape", [p + "wg", p + "shape"], [p + "b"], name=p + "rw"),
                ]
                b = p + "b"
            if kind == "cols":  # the per-column scale follows the kept heads
                inits.append(numpy_helper.from_array(np.array([-1], np.int64), p + "flat"))
                nodes += [
                    helper.make_node("Gather", [p + "sw", mm.heads], [p + "sg"], axis=0, name=p + "gs"),
                    helper.make_node("Reshape", [p + "sg", p + "flat"], [p + "s"], name=p + "rs"),
                ]
                scale = p + "s"
            nodes.append(helper.make_node("DequantizeLinear", [b, scale], [p + "bd"], axis=1, name=p + "dqw"))
            mm.node.input[0], mm.node.input[1] = p + "ad", p + "bd"
            before.setdefault(mm.node.output[0], []).extend(nodes)
            checks.append((mm.b, p + "bd", float(np.max(sw))))
        replaced: dict[str, list[onnx.NodeProto]] = {}
        for i, conv in enumerate(self.convs):
            nodes, conv_inits = _patch_matmul(model, conv, self.amax[conv.input[0]], f"qdqc{i}_")
            replaced[conv.output[0]] = nodes
            inits += conv_inits
        spliced = []
        for n in g.node:
            spliced += before.get(n.output[0], [])
            spliced += replaced.get(n.output[0], [n])
        del g.node[:]
        g.node.extend(spliced)
        g.initializer.extend(inits)
        # drop the old fp32 weight paths nothing reads any more; keep every graph input (the runtime feeds them all)
        OnnxModel(model).prune_graph(allow_remove_graph_inputs=False)
        onnx.checker.check_model(model)
        self._check(model, checks)
        self._check_convs(model)
        onnx.save(model, str(out))

    def _check(self, model: onnx.ModelProto, checks: list[tuple[str, str, float]]) -> None:
        """The dequantized B equals the fp32 B within half a step, for several kept-head subsets."""
        ref = _session(_with_outputs(onnx.load(str(self.path)), [c[0] for c in checks]))
        got = _session(_with_outputs(model, [c[1] for c in checks]))
        heads = next((mm.heads for mm in self.matmuls if mm.heads), None)
        subsets: list[np.ndarray | None] = [None]
        if heads:
            rng = np.random.default_rng(0)
            h = self.n_heads
            subsets = [np.arange(h, dtype=np.int64)] + [
                np.sort(rng.choice(h, k, replace=False)).astype(np.int64) for k in {1, max(1, h // 2), max(1, h - 1)}
            ]
        for sub in subsets:
            feed = dict(self.probe_feed)
            if sub is not None:
                feed[heads] = sub
            for (name, _, step), rb, qb in zip(checks, ref.run([c[0] for c in checks], feed), got.run([c[1] for c in checks], feed)):
                if rb.shape != qb.shape or np.abs(rb - qb).max() > step * 0.5001:
                    raise CalibrationError(f"{self.path.name}: the int8 rewrite of {name} does not reproduce its weights: {NO_INT8}")


    def _check_convs(self, model: onnx.ModelProto) -> None:
        """Each rewritten Conv reproduces the fp32 Conv on the probe feed (a wrong patch layout is off by ~100%)."""
        if not self.convs:
            return
        names = [c.output[0] for c in self.convs]
        ref = _session(_with_outputs(onnx.load(str(self.path)), names)).run(names, self.probe_feed)
        got = _session(_with_outputs(model, names)).run(names, self.probe_feed)
        for name, rb, qb in zip(names, ref, got):
            if rb.shape != qb.shape or np.sqrt(np.mean((rb - qb) ** 2)) > 0.05 * np.sqrt(np.mean(rb**2)):
                raise CalibrationError(f"{self.path.name}: the int8 rewrite of the Conv giving {name} does not reproduce it: {NO_INT8}")


class _Observed(Runner):
    """Runs the fp32 graph and shows every feed to the graph's calibrator (no feed is stored)."""

    def __init__(self, inner: Runner, calibrator: GraphCalibrator) -> None:
        super().__init__(inner.artifact)
        self.inner, self.calibrator = inner, calibrator

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calibrator.observe(feed)
        return self.inner.run(feed)

    def _release(self) -> None:
        self.inner.close()


class _CalibratingBackend(Backend):
    """Wraps the runners of the graphs that get INT8 variants (``graphs.VARIANTS``) in calibrators."""

    def __init__(self, inner: Backend, manifest: Manifest) -> None:
        super().__init__()
        self.inner, self.n_heads, self.name = inner, manifest.model.num_heads, inner.name
        self.quantized = {manifest.artifacts[g.name].file: g.name for g in graphs(manifest.model).values() if g.converts_to("int8")}
        self.calibrators: dict[str, GraphCalibrator] = {}

    def make_runner(self, bundle: Path, artifact: Artifact, precision: str) -> Runner:
        inner = self.inner.runner(bundle, artifact, precision)
        graph = self.quantized.get(artifact.file)
        if graph is None:
            return inner
        if graph not in self.calibrators:  # one per graph: every runtime of ``calibrate`` adds to its ranges
            self.calibrators[graph] = GraphCalibrator(bundle / artifact.file, self.n_heads)
        return _Observed(inner, self.calibrators[graph])


def calibrate(runtime: AdaptiveRuntime, images: np.ndarray, batch_size: int = 16) -> dict[str, GraphCalibrator]:
    """Run ``images`` through ``runtime``'s fp32 graphs at each budget, with each tactic (so every
    graph sees its real inputs), and the dense graph; one calibrator per graph."""
    backend = _CalibratingBackend(runtime.backend, runtime.manifest)
    for tactic in TACTICS:
        with AdaptiveRuntime(runtime.bundle, runtime.manifest, backend, tactic=tactic) as observed:
            for budget in observed.manifest.budgets:
                observed.infer(images, batch_size, budget=budget)
    with AdaptiveRuntime(runtime.bundle, runtime.manifest, backend) as observed:
        for i in range(0, len(images), batch_size):
            observed.dense(images[i : i + batch_size])
    return backend.calibrators
