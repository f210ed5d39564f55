"""Render a ``bench_focal.py`` results JSON as the README's markdown table.

    python benchmarks/report.py benchmarks/results/focal-cpu-DATE.json [-o OUT.md]
    python benchmarks/report.py benchmarks/results/focal-cpu-DATE.json --summary   # README table

One table per (dtype, shape, pass): rows are provider x mode with the median
(ms), the ratio to fusedfocal in the same mode (and to fusedfocal's best
mode), the multiple of the memory floor, peak working memory (logits-sized
tensors, where measured), max relative error vs the float64 reference, and
first-call (compile) time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def _fmt(v, spec="{:.2f}"):
    return "-" if v is None else spec.format(v)


def render(data: dict) -> str:
    mi = data.get("machine_info", {})
    lines = [
        f"Results {data.get('datetime', '')[:19]} - {mi.get('cpu', {}).get('brand_raw', mi.get('processor', ''))}, "
        f"{mi.get('nproc', '?')} cores, device {mi.get('bench_device', '?')}; TensorFlow {mi.get('tensorflow', '?')}, "
        f"Keras {mi.get('keras', '?')}, tf_keras {mi.get('tf_keras', '?')}, fusedfocal {mi.get('fusedfocal', '?')}.",
        "",
    ]
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "provider" not in e:
            continue
        groups[(e["dtype"], tuple(e["shape"]), e["pass_"])].append(b)
    bw = next((b["extra_info"].get("copy_gbps") for b in data["benchmarks"] if "copy_gbps" in b["extra_info"]), None)
    if bw:
        lines += [f"Floor: bytes moved / {bw:.1f} GB/s (NumPy copy of 256 MiB, same run).", ""]
    for (dtype, shape, pass_) in sorted(groups, key=lambda k: (k[0] != "float32", k[0], k[1][0] * k[1][1], k[2])):
        rows = groups[(dtype, shape, pass_)]
        med = {(r["extra_info"]["provider"], r["extra_info"]["mode"]): r["stats"]["median"] * 1e3 for r in rows}
        ff_best = min((v for (p, _m), v in med.items() if p == "fusedfocal"), default=None)
        lines.append(f"### {dtype} [{shape[0]}, {shape[1]}] ({shape[0] * shape[1]:,} elements), {pass_}")
        lines.append("")
        lines.append("| provider | mode | median ms | vs fusedfocal (same mode) | vs fusedfocal best | x floor "
                     "| peak mem (x logits) | max rel err | first call ms |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: r["stats"]["median"]):
            e = r["extra_info"]
            m = r["stats"]["median"] * 1e3
            same = med.get(("fusedfocal", e["mode"]))
            err = e.get("max_rel_err")
            lines.append(
                f"| {e['provider']} | {e['mode']} | {m:.3f} | {_fmt(m / same if same else None)} "
                f"| {_fmt(m / ff_best if ff_best else None)} | {_fmt(e.get('x_floor'), '{:.1f}')} "
                f"| {_fmt(e.get('peak_mem_x'), '{:.1f}')} | {_fmt(err, '{:.1e}')} | {_fmt(e.get('first_call_ms'), '{:.0f}')} |"
            )
        lines.append("")
    return "\n".join(lines)


def render_summary(data: dict, dtype: str = "float32", pass_: str = "fwdbwd") -> str:
    """One compact table: each provider in its fastest mode, per shape.

    This is the README's table: the median of the provider's best mode, that
    mode, the ratio to fusedfocal's default path in its best mode, the
    multiple of the memory floor and the peak working memory. fusedfocal's
    XLA-path rows are listed too (what a ``jit_compile=True`` model runs).
    """
    best = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e.get("provider") in (None, "empty", "fusedfocal_none") or e.get("dtype") != dtype or e.get("pass_") != pass_:
            continue
        provider = e["provider"]
        if provider.startswith("fusedfocal") and e["mode"] == "xla":
            provider += " (XLA path)"  # what jit_compile=True models get: shown as well
        key = (tuple(e["shape"]), provider)
        if key not in best or b["stats"]["median"] < best[key]["stats"]["median"]:
            best[key] = b
    lines = ["| shape | provider | best mode | median ms | time / fusedfocal | x floor | peak mem (x logits) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for shape in sorted({s for s, _ in best}, key=lambda s: s[0] * s[1]):
        ff = best.get((shape, "fusedfocal"))
        rows = sorted((b for (s, _), b in best.items() if s == shape), key=lambda b: b["stats"]["median"])
        for b in rows:
            e = b["extra_info"]
            m = b["stats"]["median"] * 1e3
            ratio = m / (ff["stats"]["median"] * 1e3) if ff else None
            name = next(p for (s_, p), b_ in best.items() if s_ == shape and b_ is b)
            lines.append(f"| [{shape[0]}, {shape[1]}] | {name} | {e['mode']} | {m:.2f} | {_fmt(ratio)} "
                         f"| {_fmt(e.get('x_floor'), '{:.1f}')} | {_fmt(e.get('peak_mem_x'), '{:.1f}')} |")
    return "\n".join(lines)


PEERS = ("clipped", "keras3", "tf_keras")


def render_interleaved(data: dict) -> str:
    """Every provider x mode of the interleaved rounds, per shape, fastest first."""
    lines = []
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if not e.get("interleaved"):
            continue
        shape = e["shape"]
        st = e["interleaved"]
        ours = st.get("fusedfocal/xla", {}).get("median_ms")
        lines += [f"[{shape[0]}, {shape[1]}], float32, forward+backward, "
                  f"{next(iter(st.values()))['rounds']} interleaved rounds:", "",
                  "| provider / mode | median ms | p20 | p80 | time / fusedfocal XLA |",
                  "|---|---:|---:|---:|---:|"]
        for key, v in sorted(st.items(), key=lambda kv: kv[1]["median_ms"]):
            lines.append(f"| {key} | {v['median_ms']:.2f} | {v['p20_ms']:.2f} | {v['p80_ms']:.2f} "
                         f"| {_fmt(v['median_ms'] / ours if ours else None)} |")
        lines.append("")
    return "\n".join(lines)


def render_targets(data: dict) -> str:
    """Issue 10's ratios, float32 fwd+bwd, per shape: fusedfocal under XLA
    against the fastest peer in its best mode, and each Keras class against
    the function with ``reduction="sum"`` in the same mode."""
    med = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e.get("provider") and e.get("dtype") == "float32" and e.get("pass_") == "fwdbwd":
            med[(tuple(e["shape"]), e["provider"], e["mode"])] = b["stats"]["median"] * 1e3
    # Interleaved rounds (test_focal_interleaved) win over rows measured one by one.
    for b in data["benchmarks"]:
        e = b["extra_info"]
        for key, st in (e.get("interleaved") or {}).items():
            provider, mode = key.split("/")
            med[(tuple(e["shape"]), provider, mode)] = st["median_ms"]
    lines = ["| shape | fusedfocal XLA ms | fastest peer (mode) ms | speed-up | Keras 3 class / function "
             "(graph, XLA) | tf_keras class / function (graph, XLA) |",
             "|---|---:|---|---:|---|---|"]
    for shape in sorted({k[0] for k in med}, key=lambda s: s[0] * s[1]):
        ours = med.get((shape, "fusedfocal", "xla"))
        peers = [(v, f"{p} {m}") for (s_, p, m), v in med.items() if s_ == shape and p in PEERS]
        if ours is None or not peers:
            continue
        best, name = min(peers)

        def cls(p):
            out = []
            for m in ("function", "xla"):
                a, f = med.get((shape, p, m)), med.get((shape, "fusedfocal", m))
                out.append(_fmt(a / f if a and f else None))
            return ", ".join(out)

        lines.append(f"| [{shape[0]}, {shape[1]}] | {ours:.2f} | {name}: {best:.2f} | {best / ours:.2f}x "
                     f"| {cls('keras_class')} | {cls('legacy_class')} |")
    return "\n".join(lines)


def render_train_steps(data: dict) -> str:
    """``bench_train_step.py``: step time per loss and mode, the ratio to
    plain BCE in the same mode, and the loss's share of the step
    (``1 - t(trivial) / t(loss)``, medians of the same run)."""
    med, size = {}, None
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "interleaved" in e and "jit_compile" in e:
            for loss, st in e["interleaved"].items():
                med[(loss, bool(e["jit_compile"]))] = st["median_ms"]
            size = (e["batch"], e["features"], e["labels"])
    if not med:
        return ""
    lines = [f"Batch {size[0]}, {size[1]} features -> Dense({size[2]}), Adam, Keras 3 `train_on_batch`, "
             "interleaved rounds, medians.", "",
             "| loss | jit_compile | step ms | vs BCE | loss share of the step |", "|---|---|---:|---:|---:|"]
    for jit in (True, False):
        triv, bce = med.get(("trivial", jit)), med.get(("bce", jit))
        for (loss, j), m in sorted(med.items(), key=lambda kv: kv[1]):
            if j != jit or loss == "trivial":
                continue
            share = max(0.0, 1.0 - triv / m) if triv else None
            lines.append(f"| {loss} | {jit} | {m:.2f} | {_fmt(m / bce if bce else None)} "
                         f"| {_fmt(share * 100 if share is not None else None, '{:.1f}%')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("-o", "--output", help="write markdown here instead of stdout")
    ap.add_argument("--summary", action="store_true",
                    help="only the README table: float32 forward+backward, each provider in its best mode")
    ap.add_argument("--targets", action="store_true",
                    help="issue 10's ratios: fusedfocal under XLA vs the fastest peer, classes vs function")
    ap.add_argument("--interleaved", action="store_true",
                    help="the interleaved-rounds tables (test_focal_interleaved)")
    ap.add_argument("--train-steps", action="store_true",
                    help="the bench_train_step.py table (step time, vs BCE, the loss's share)")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    if args.train_steps:
        text = render_train_steps(data)
    elif args.interleaved:
        text = render_interleaved(data)
    elif args.targets:
        text = render_targets(data)
    else:
        text = render_summary(data) if args.summary else render(data)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
