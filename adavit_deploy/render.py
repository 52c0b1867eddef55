"""How the CLI shows results: rich tables and lines, one function per command's output.

The numbers come computed by the library; this module only lays them out.
Every user-supplied string (paths, labels, names) is escaped for rich.
Parity is written by ``parity.parity_sentence`` alone; ``print_vs_fp32``
prints the reduced-precision sentences of ``export`` and ``bench`` alike.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .classes import class_names, top_k
from .parity import parity_sentence, pytorch_parity_sentence


def _print_table(console: Console, table: Table) -> None:
    """A table fitted to the width, its title centred (the CLI's consoles soft-wrap lines; tables must not)."""
    console.print(table, soft_wrap=False)


def print_written(console: Console, *paths: Path | None) -> None:
    """``wrote PATH`` for each file a command wrote (``None``: not asked)."""
    for path in paths:
        if path:
            console.print(f"wrote {escape(str(path))}")


def print_vs_fp32(console: Console, reports: dict[str, dict[str, Any]]) -> None:
    """One parity sentence per reduced-precision engine or graph set, against its fp32 self."""
    for name, report in reports.items():
        console.print(parity_sentence(f"{name} vs fp32", report), highlight=False)


def print_info(console: Console, checkpoint: Path, report: dict[str, Any]) -> None:
    """``info``: the checkpoint's summary (``summary.describe_checkpoint``) as a two-column table."""
    table = Table(title=escape(str(checkpoint)), show_header=False)
    for section in ("architecture", "flags", "thresholds"):
        for key, value in report[section].items():
            table.add_row(f"{section}.{key}", escape(str(value)))
    for key in ("kind", "parameters", "dense_gmacs"):
        table.add_row(key, escape(str(report[key])))
    _print_table(console, table)


def print_export(console: Console, path: Path, manifest) -> None:
    """``export``: where the bundle went, its parity vs PyTorch and cost, its budgets, its precisions vs fp32."""
    from .cost import dense_gmacs

    parity, dense = manifest.parity, dense_gmacs(manifest.model)
    console.print(f"[green]bundle written:[/] {escape(str(path))}")
    console.print(
        f"{pytorch_parity_sentence(parity)}; "
        f"mean {parity['mean_gmacs']:.4g} GMACs ({parity['mean_gmacs'] / dense:.0%} of dense {dense:.4g})",
        highlight=False,
    )
    if manifest.calibration:
        table = Table("budget", "head / layer / token thresholds", "GMACs (calibration set)", "search", box=None)
        for name, b in manifest.budgets.items():
            t = b.thresholds
            how = b.search.get("mix", b.search.get("method", ""))
            table.add_row(escape(name), f"{t.head:.3f} / {t.layer:.3f} / {t.token:.3f}", f"{b.gmacs_fraction:.1%} of dense", how)
        _print_table(console, table)
    print_vs_fp32(console, parity.get("vs_fp32", {}))


def print_inference(console: Console, labels: Sequence[str], result, num_classes: int, saved: Path | None) -> None:
    """``infer``: where the outputs were saved, or per input its top-5 classes (``classes.top_k``) and its GMACs."""
    if saved:
        console.print(f"wrote {escape(str(saved))}: {len(labels)} input{'s' * (len(labels) != 1)}, mean {result.gmacs.mean():.4g} GMACs")
        return
    top, probs = top_k(result.logits, 5)
    name = class_names(num_classes)
    table = Table("input", "top-5 (probability)", "GMACs")
    table.columns[0].overflow = "fold"  # a long path folds rather than losing its end (what tells files apart)
    for label, classes, p, g in zip(labels, top, probs, result.gmacs):
        table.add_row(escape(label), escape(", ".join(f"{name(c)} ({q:.2f})" for c, q in zip(classes, p))), f"{g:.4g}")
    _print_table(console, table)


def print_repository(console: Console, path: Path, models: list[str]) -> None:
    """``triton-repo``: where the repository went and the models it serves."""
    console.print(f"[green]repository written:[/] {escape(str(path))} (models: {escape(', '.join(models))})")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _floor_pct(x: float) -> str:
    """A share as ``99.9%``, rounded down: ``100.0%`` only when every one agrees."""
    return f"{math.floor(x * 1000) / 10:.1f}%"


def print_evaluation(console: Console, result) -> None:
    """``evaluate``: top-1, top-5, GMACs and agreement vs fp32 per budget and precision, then the dense graph;
    what was read and how fast."""
    src = result.source
    classes = f", {_count(src['classes'], 'class', 'classes')}" if src.get("classes") else ""
    table = Table(
        "budget", "precision", "top-1", "top-5", "GMACs", "of dense", "vs fp32",
        title=f"{escape(src['path'])}: {_count(src['images'], 'image', 'images')}{classes}",
        caption=f"vs fp32: top-1 agreement, decisions equal, max |logit diff|; {result.images_per_s:.1f} images/s "
        "through every row and dense, decoding included",
    )  # fmt: skip
    for r in result.rows:
        vs = f"{_floor_pct(r.top1_agreement_vs_fp32)} {_floor_pct(r.decision_agreement_vs_fp32)} {r.max_abs_logit_diff_vs_fp32:.1g}"
        table.add_row(escape(r.budget), r.precision, f"{r.top1:.2%}", f"{r.top5:.2%}", f"{r.gmacs_mean:.4g}",
                      f"{r.gmacs_fraction:.1%}", vs)  # fmt: skip
    table.add_row("dense graph", "fp32", f"{result.dense_top1:.2%}", f"{result.dense_top5:.2%}", "", "100%", "")
    _print_table(console, table)
    if src.get("skipped"):
        console.print(f"[yellow]{len(src['skipped'])} unreadable file(s) left out[/] (--skip-bad): "
                      f"{escape(', '.join(src['skipped'][:5]))}{' ...' if len(src['skipped']) > 5 else ''}")  # fmt: skip


def print_engines(console: Console, path: Path, built) -> None:
    """``build-trt``'s result: where, how many, for which TensorRT / GPU / batch / token buckets."""
    env = built.environment
    console.print(f"[green]engines written:[/] {escape(str(path))}")
    console.print(
        f"{len(built.engines)} {built.precision} engines, TensorRT {env.tensorrt}, {escape(env.gpu)} ({env.sm}), "
        f"batch 1..{built.max_batch}, token buckets {built.token_edges}",
        highlight=False,
    )


def print_serving(console: Console, bundle: Path, models: list[str], server) -> None:
    """``serve``'s ready line: what is served where, and how to stop it."""
    console.print(
        f"[green]serving[/] {escape(str(bundle))} as {escape(', '.join(models))}: HTTP {server.http_url}, "
        f"gRPC {server.grpc_url}, metrics {server.metrics_url}; Ctrl-C to stop",
        highlight=False,
    )


def print_tactics(console: Console, table) -> None:
    """``tune``'s choices: per batch size, stage and kept heads, over blocks (``TacticTable.summary``)."""
    out = Table("batch", "stage", "kept heads", "blocks", "gather ms", "masked ms", "picked", title="stage time per batch, per tactic")
    for r in table.summary():
        ms, picked = r["ms"], r["picked"]
        out.add_row(
            str(r["batch_size"]), r["stage"], str(r["kept_heads"]), str(r["blocks"]), f"{ms['gather']:.3f}", f"{ms['masked']:.3f}",
            ", ".join(f"{t} {n}" for t, n in picked.items() if n),
        )  # fmt: skip
    _print_table(console, out)


def print_bench(console: Console, report) -> None:
    """``bench``: the table per engine and batch size, speed-ups, parity, skipped engines, routing, environment."""
    from .bench.report import times

    s, env = report.settings, report.environment
    target = report.target
    if target["embedded_default"]:
        console.print("no checkpoint given: benchmarking the embedded demo model (AdaViT trained on digits)")
    title = f"{target['input'] or target['source_checkpoint']}: {target['model']}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("engine", no_wrap=True)
    for column in ("batch", "p50 ms", "p99 ms", "img/s", "vs dense", "GMACs", "peak MiB"):
        table.add_column(column, justify="right")
    for r in report.results:
        dense = report.result("dense", r["batch_size"])
        peak = r["peak_rss_mib"]
        table.add_row(
            escape(r["engine"]),
            str(r["batch_size"]),
            f"{r['latency_ms']['p50']:.2f}",
            f"{r['latency_ms']['p99']:.2f}",
            f"{r['throughput_ips']:.1f}",
            times(dense["latency_ms"]["p50"] / r["latency_ms"]["p50"]) if dense else "-",
            f"{r['gmacs_mean']:.3g}",
            "-" if peak is None else f"{peak:.0f}",
        )
    _print_table(console, table)
    for c in report.comparisons:
        if c["speedup_vs_dense"] is not None:
            line = (
                f"batch {c['batch_size']}: adaptive {times(c['speedup_vs_dense'])} dense "
                f"for {times(c['flops_ratio'])} fewer GMACs: efficiency {c['efficiency']:.2f}"
            )
            if c["reference_speedup_vs_dense"] is not None:
                line += f"; reference (masked PyTorch) {times(c['reference_speedup_vs_dense'])} dense"
            console.print(line, highlight=False)
        for engine, ratio in c.get("speedup_vs_fp32", {}).items():
            console.print(f"batch {c['batch_size']}: {engine} {times(ratio)} its fp32 self", highlight=False)
        dense = c.get("dense_p50_ms", {})
        for engine, ratio in c.get("speedup_vs_fastest_dense", {}).items():
            precision = engine.partition(".")[2] or "fp32"
            # fp32 against a lone same-backend dense engine is the first line already
            if ratio is not None and (engine != "adaptive" or len(dense.get("fp32", {})) > 1):
                fastest = c["fastest_dense"][precision]
                others = "".join(f"; {n} {dense[precision][n]:.1f} ms" for n in sorted(dense[precision]) if n != fastest)
                console.print(
                    f"batch {c['batch_size']}: {engine} {times(ratio)} the fastest dense {precision} engine "
                    f"({fastest}, {dense[precision][fastest]:.1f} ms{others})",
                    highlight=False,
                )
    if report.parity:
        console.print(pytorch_parity_sentence(report.parity), highlight=False)
    print_vs_fp32(console, report.precision_parity)
    for engine, reason in report.skipped.items():
        console.print(f"[yellow]{engine} skipped:[/] {escape(reason)}")
    for r in report.routing["by_batch_size"]:
        console.print(
            f"routing, batch {r['batch_size']}: {r['graph_calls_per_batch']:.1f} graph calls/batch "
            f"({', '.join(f'{t} {n:.1f}' for t, n in r.get('calls_per_batch_by_tactic', {}).items())}), "
            f"{r['inputs_per_graph_call']:.2f} inputs/call, {r['padding_waste']:.1%} padding",
            highlight=False,
        )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    console.print(
        f"{s['images']['count']} inputs ({escape(s['images']['source'])}); backend {s['backend']}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}, "
        f"tactics {', '.join(f'{p} {t}' for p, t in s.get('tactics', {}).items()) or 'default'}, "
        f"{escape(env['cpu'])} ({', '.join(env.get('cpu_flags', [])) or 'no AVX2'}); {versions}",
        highlight=False,
    )


def print_server_bench(console: Console, url: str, protocol: str, report) -> None:
    """``bench-server``: throughput, latency and server-side batch per model and concurrency, then errors."""
    table = Table(title=escape(f"{url} ({protocol}), one image per request"), box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", no_wrap=True)
    for column in ("clients", "img/s", "p50 ms", "p90 ms", "p99 ms", "server batch", "errors"):
        table.add_column(column, justify="right")
    for r in report.results:
        lat = r["latency_ms"]
        table.add_row(
            escape(r["model"]), str(r["concurrency"]), f"{r['throughput_ips']:.1f}",
            *(f"{lat[k]:.1f}" if lat else "-" for k in ("p50", "p90", "p99")),
            f"{r['server_batch_mean']:.2f}" if r["server_batch_mean"] else "-", str(r["errors"]),
        )  # fmt: skip
    _print_table(console, table)
    for c in report.comparisons:
        if c["adaptive_vs_dense_throughput"]:
            console.print(f"{c['concurrency']} clients: adaptive {c['adaptive_vs_dense_throughput']:.2f}x the dense throughput")
    for r in report.results:
        for message in r["error_samples"]:
            console.print(f"[yellow]{escape(r['model'])} error:[/] {escape(message)}")


def print_open_loop(console: Console, url: str, report) -> None:
    """``bench-server --rates``: per rate and policy, offered and achieved load, latency, goodput, cost."""
    capacity = f", capacity {report.capacity_rps:.1f} req/s" if report.capacity_rps else ""
    title = escape(f"{url}: open-loop Poisson load (req/s, ms), SLO {report.slo_ms:g} ms{capacity}")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    labelled = any("top1" in r for r in report.open_loop)
    failed = any(r["errors"] + r["unanswered"] for r in report.open_loop)
    columns = ["rate", "policy", "offered", "served", "p50", "p99", "in SLO", "GMACs", "budgets %"]
    for column in columns + (["failed"] if failed else []) + (["top-1"] if labelled else []):
        if column == "budgets %":  # the one column that may wrap, one budget a line
            table.add_column(column, min_width=11)
        else:
            table.add_column(column, justify="left" if column == "policy" else "right", no_wrap=True)
    for r in report.open_loop:
        total = max(sum(r["budgets"].values()), 1)
        mix = "\n".join(b if n == total else f"{b} {100 * n / total:.0f}" for b, n in r["budgets"].items())
        cells = [
            escape(r["rate"]), escape(r["policy"]), f"{r['offered_rps']:.0f}", f"{r['achieved_rps']:.0f}",
            *(f"{r[k]:.0f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms")), f"{r['goodput']:.1%}",
            f"{r['mean_gmacs']:.3g}" if r["mean_gmacs"] is not None else "-", escape(mix) or "-",
        ]  # fmt: skip
        if failed:
            cells.append(str(r["errors"] + r["unanswered"]))
        if labelled:
            cells.append(f"{r['top1']:.1%}" if r.get("top1") is not None else "-")
        table.add_row(*cells)
    _print_table(console, table)
    for r in report.open_loop:
        for message in r["error_samples"]:
            console.print(f"[yellow]{escape(r['policy'])} error:[/] {escape(message)}")
