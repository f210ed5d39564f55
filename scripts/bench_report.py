"""Render a ``bench_focal.py`` results JSON as the README's markdown table.

    python scripts/bench_report.py benchmarks/results/focal-cpu-DATE.json [-o OUT.md]
    python scripts/bench_report.py benchmarks/results/focal-cpu-DATE.json --summary   # README table

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("-o", "--output", help="write markdown here instead of stdout")
    ap.add_argument("--summary", action="store_true",
                    help="only the README table: float32 forward+backward, each provider in its best mode")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    text = render_summary(data) if args.summary else render(data)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
