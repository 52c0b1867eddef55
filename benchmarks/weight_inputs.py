"""Per-call time of three ways to run one pruned stage: why ``gather`` and ``masked`` are the tactics.

Issue 14 proposed a third tactic beside the in-graph gather (``gather``) and
the all-heads constant graph (``masked``): the kept heads' weights gathered
once on the host, cached per head set, and fed to a graph that takes them as
inputs (``inputs``: no Gather kernel per call, but still no pre-packing and
no bias+GELU fusion, and a weight cache to bound). This script times the
three on Ada-DeiT-S's block shapes (C 384, 6 heads of 64, MLP 1536) with
random weights, built the way ``model/pruned.py`` builds its graphs, at
several kept-head counts and batch sizes, one ONNX Runtime session each,
interleaved, and prints ms per call.

    python benchmarks/weight_inputs.py [--threads 2] [--tokens 154] [--reps 40]
"""

from __future__ import annotations

import argparse
import io
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from adavit_deploy.runtime.backends.ort import session_options, use_process_pool

C, H, D = 384, 6, 64


class Weights(nn.Module):
    """One block's random weights in the layouts of ``model/pruned.py`` (heads first)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.wqkv = nn.Parameter(torch.randn(H, 3, D, C, generator=g) * 0.05)
        self.bqkv = nn.Parameter(torch.randn(H, 3, D, generator=g) * 0.01)
        self.wp = nn.Parameter(torch.randn(H, D, C, generator=g) * 0.05)
        self.bp = nn.Parameter(torch.randn(C, generator=g) * 0.01)
        self.w1 = nn.Parameter(torch.randn(H, D, 4 * C, generator=g) * 0.05)
        self.b1 = nn.Parameter(torch.randn(4 * C, generator=g) * 0.01)
        self.fc2 = nn.Linear(4 * C, C)
        self.requires_grad_(False)

    def attend(self, x, wqkv, bqkv, wp, mask=None):
        G, K, _ = x.shape
        q, k, v = (self.norm(x) @ wqkv.t() + bqkv).reshape(G, K, -1, 3, D).permute(3, 0, 2, 1, 4)
        out = ((q @ k.transpose(-2, -1)) * D**-0.5).softmax(-1) @ v
        if mask is not None:
            out = torch.where(mask[:, :, None, None] > 0, out, 0.0)
        return x + out.transpose(1, 2).reshape(G, K, -1) @ wp + self.bp

    def ffn(self, x, z, w1):
        return x + self.fc2(nn.functional.gelu(z @ w1 + self.b1))

    def kept_channels(self, x, heads):
        return self.norm(x).unflatten(-1, (H, D)).index_select(-2, heads).flatten(-2)


class AttnGather(Weights):
    def forward(self, x, heads):
        w = self.wqkv.index_select(0, heads)
        return self.attend(x, w.reshape(-1, C), self.bqkv.index_select(0, heads).reshape(-1), self.wp.index_select(0, heads).reshape(-1, C))


class AttnInputs(Weights):
    def forward(self, x, wqkv, bqkv, wp):
        return self.attend(x, wqkv, bqkv, wp)


class AttnMasked(Weights):
    def forward(self, x, mask):
        return self.attend(x, self.wqkv.reshape(-1, C), self.bqkv.reshape(-1), self.wp.reshape(-1, C), mask)


class MlpGather(Weights):
    def forward(self, x, heads):
        return self.ffn(x, self.kept_channels(x, heads), self.w1.index_select(0, heads).reshape(-1, 4 * C))


class MlpInputs(Weights):
    def forward(self, x, heads, w1):
        return self.ffn(x, self.kept_channels(x, heads), w1)


class MlpMasked(Weights):
    def forward(self, x, mask):
        z = (self.norm(x).unflatten(-1, (H, D)) * mask[:, None, :, None]).flatten(-2)
        return self.ffn(x, z, self.w1.reshape(-1, 4 * C))


def session(module: nn.Module, example: dict[str, torch.Tensor], threads: int) -> ort.InferenceSession:
    dynamic = {"x": {0: "g", 1: "k"}, "heads": {0: "h"}, "mask": {0: "g"}, "wqkv": {0: "r"}, "bqkv": {0: "r"}, "wp": {0: "r"}, "w1": {0: "r"}}
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(example.values()), f, input_names=list(example), output_names=["y"],
                          dynamic_axes={k: v for k, v in dynamic.items() if k in example}, opset_version=17, dynamo=False)  # fmt: skip
    return ort.InferenceSession(f.getvalue(), session_options(threads), providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=154, help="kept tokens per sample (DeiT-S at 50%%: ~78%% of 197)")
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    use_process_pool(args.threads)
    ref = Weights()
    x2, all_heads = torch.randn(2, 197, C), torch.arange(H)
    kept = {"wqkv": torch.randn(3 * C, C), "bqkv": torch.randn(3 * C), "wp": torch.randn(C, C), "w1": torch.randn(C, 4 * C)}
    sessions = {
        ("attn", "gather"): session(AttnGather(), {"x": x2, "heads": all_heads}, args.threads),
        ("attn", "inputs"): session(AttnInputs(), {"x": x2, **{k: kept[k] for k in ("wqkv", "bqkv", "wp")}}, args.threads),
        ("attn", "masked"): session(AttnMasked(), {"x": x2, "mask": torch.ones(2, H)}, args.threads),
        ("mlp", "gather"): session(MlpGather(), {"x": x2, "heads": all_heads}, args.threads),
        ("mlp", "inputs"): session(MlpInputs(), {"x": x2, "heads": all_heads, "w1": kept["w1"]}, args.threads),
        ("mlp", "masked"): session(MlpMasked(), {"x": x2, "mask": torch.ones(2, H)}, args.threads),
    }
    table = Table(title=f"ms per call, {args.tokens} tokens per sample, {args.threads} threads (lower is better)")
    for col in ("batch", "kept heads", "attn gather", "attn inputs", "attn masked", "mlp gather", "mlp inputs", "mlp masked"):
        table.add_column(col, justify="right")
    rng = np.random.default_rng(0)
    for batch in (1, 16):
        for k in (2, 4, 5, 6):
            heads = np.arange(k, dtype=np.int64)
            x = rng.standard_normal((batch, args.tokens, C), dtype=np.float32)
            mask = (np.arange(H) < k).astype(np.float32)[None].repeat(batch, 0)
            host = {  # what a host-side cache would hold for this head set
                "wqkv": np.ascontiguousarray(ref.wqkv.numpy()[heads].reshape(-1, C)),
                "bqkv": ref.bqkv.numpy()[heads].reshape(-1),
                "wp": np.ascontiguousarray(ref.wp.numpy()[heads].reshape(-1, C)),
                "w1": np.ascontiguousarray(ref.w1.numpy()[heads].reshape(-1, 4 * C)),
            }
            feeds = {
                "gather": {"x": x, "heads": heads},
                "masked": {"x": x, "mask": mask},
                ("attn", "inputs"): {"x": x, **{n: host[n] for n in ("wqkv", "bqkv", "wp")}},
                ("mlp", "inputs"): {"x": x, "heads": heads, "w1": host["w1"]},
            }
            best = {key: float("inf") for key in sessions}
            for rep in range(args.reps + 2):
                for key, sess in sessions.items():
                    feed = feeds.get(key, feeds.get(key[1]))
                    t = time.perf_counter()
                    sess.run(None, feed)
                    if rep >= 2:
                        best[key] = min(best[key], time.perf_counter() - t)
            table.add_row(str(batch), str(k), *(f"{best[key] * 1e3:.3f}" for key in sessions))
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
