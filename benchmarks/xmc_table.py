"""The README's XMC step table from ``benchmarks/xmc_grid.py`` output (issue 19).

``python benchmarks/xmc_table.py benchmarks/results/xmc-step-*.jsonl
[--interleaved benchmarks/results/xmc-step-interleaved-*.json]``

One row per (C, H, B, mode): each provider's warm step time (median of its
steps) and peak memory above the resting model, and the fused head's ratios
to Dense + SigmoidFocalLoss. With ``--interleaved`` (a pytest-benchmark JSON
of ``bench_xmc_step.py --benchmark``) the time ratio comes from the
interleaved rounds of that run instead. "> 16 GiB" marks a run the watchdog
ended at the limit.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict

PROVIDERS = ("fused", "fusedfocal", "keras3")


def load_rows(paths):
    rows = defaultdict(dict)
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    key = (r["C"], r["H"], r["B"], r["mode"], r.get("dtype", "float32"))
                    rows[key][r["provider"]] = r  # the latest run wins
    return rows


def load_interleaved(path):
    out = {}
    if not path:
        return out
    with open(path) as f:
        data = json.load(f)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["C"], info["H"], info["B"], info["mode"], "float32")
        out[key] = info["interleaved"]
    return out


def _failure(r):
    """``"> 16 GiB"`` (watchdog), ``"OOM (+8.58 GiB)"`` (XLA could not allocate its buffer) or None."""
    if r.get("exceeded_gib"):
        return f"> {r['exceeded_gib']:g} GiB"
    if r.get("failed"):
        m = re.search(r"Out of memory while trying to allocate ([\d.]+\s*\w+)", r["failed"])
        return f"OOM (+{m.group(1)})" if m else "failed"
    return None


def _time(r):
    if r is None:
        return None, "-"
    if _failure(r):
        return None, _failure(r)
    if not r.get("step_s"):
        return None, "failed"
    t = statistics.median(r["step_s"])
    return t, f"{t:.2f}"


def _mem(r):
    if r is None:
        return None, "-"
    if _failure(r):
        return None, _failure(r)
    if "peak_above_resting_bytes" not in r:
        return None, "failed"
    if r.get("onednn", "0") != "0":  # pooled allocator: the warm peak is not visible, use the cold one
        m = (r["peak_rss_bytes"] - r["resting_bytes"]) / 2**30
        return m, f"{m:.2f} (cold)"
    m = r["peak_above_resting_bytes"] / 2**30
    return m, f"{m:.2f}"


def _rss(r):
    return f"{r['peak_rss_bytes'] / 2**30:.2f}" if r and r.get("peak_rss_bytes") else "-"


def table(rows, interleaved):
    head = ("| C | H | B | mode | step s: fused / Dense+SFL / Dense+Keras3 | fused vs SFL time "
            "| peak GiB above resting: fused / SFL / Keras3 | SFL / fused memory | fused process peak GiB |")
    lines = [head, "|" + "---|" * 9]
    for key in sorted(rows):
        c, h, b, mode, dtype = key
        got = rows[key]
        times = [_time(got.get(p)) for p in PROVIDERS]
        mems = [_mem(got.get(p)) for p in PROVIDERS]
        ratio = "-"
        if key in interleaved:
            il = interleaved[key]
            ratio = f"{il['fused']['median_ms'] / il['fusedfocal']['median_ms']:.2f}x (interleaved)"
        elif times[0][0] and times[1][0]:
            ratio = f"{times[0][0] / times[1][0]:.2f}x"
        mratio = "-"
        if mems[0][0] and mems[1][0]:
            mratio = f"{mems[1][0] / mems[0][0]:.1f}x"
        elif mems[0][0] is not None and _failure(got.get("fusedfocal", {})):
            mratio = "unfused does not fit"
        lines.append(f"| {c:,} | {h} | {b} | {mode} | {' / '.join(t[1] for t in times)} | {ratio} | "
                     f"{' / '.join(m[1] for m in mems)} | {mratio} | {_rss(got.get('fused'))} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl", nargs="+")
    p.add_argument("--interleaved", default=None)
    a = p.parse_args(argv)
    print(table(load_rows(a.jsonl), load_interleaved(a.interleaved)))


if __name__ == "__main__":
    main()
