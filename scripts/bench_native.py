#!/usr/bin/env python
"""CPU benchmark: native fused focal op vs the XLA path vs the clipped recipe.

    python scripts/build_kernels.py && python scripts/bench_native.py
    python scripts/bench_native.py --shapes 8192x1000 --runs 20 --out benchmarks/results

Forward + backward (loss summed, gradient w.r.t. logits), float32, alpha=0.25,
gamma=2, medians (p20/p80) of --runs timed calls after --warmup calls (which
include tracing and XLA compilation). Providers:

  native             fusedfocal.sigmoid_focal_loss(implementation="native") in tf.function
  xla-path/jit       the same call, implementation="xla", tf.function(jit_compile=True)
  xla-path/graph     implementation="xla", plain tf.function
  clipped/graph|jit  p = clip(sigmoid(x), 1e-7, 1-1e-7); -alpha_t (1-p_t)^2 log(p_t); autodiff
  keras/graph|jit    keras.losses.BinaryFocalCrossentropy(from_logits=True,
                     apply_class_balancing=True, alpha=0.25, gamma=2, reduction="sum")
  copy               x * 1.0 in tf.function: read + write through TF (output
                     allocation and page faults included), for the TF floor

Bandwidth floor of fwd+bwd = bytes(logits read + labels read + grad written)
/ copy bandwidth, copy bandwidth = 2 * bytes(tensor) / t_copy, all measured
in the same run: "TF floor" with the TF copy above (incl. TF call overhead),
"raw floor" with numpy.copyto into a preallocated buffer (memory only). Reported: ms, x of floor, and speed-up of native over each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import fusedfocal  # noqa: E402
from fusedfocal.ops import native  # noqa: E402

ALPHA, GAMMA = 0.25, 2.0


def fused(impl):
    def f(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fusedfocal.sigmoid_focal_loss(x, y, gamma=GAMMA, alpha=ALPHA,
                                                 reduction="sum", implementation=impl)
        return loss, tape.gradient(loss, x)
    return f


def clipped(x, y):
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = tf.clip_by_value(tf.sigmoid(x), 1e-7, 1 - 1e-7)
        p_t = y * p + (1 - y) * (1 - p)
        alpha_t = y * ALPHA + (1 - y) * (1 - ALPHA)
        loss = tf.reduce_sum(-alpha_t * tf.square(1 - p_t) * tf.math.log(p_t))
    return loss, tape.gradient(loss, x)


def keras_loss():
    import keras

    obj = keras.losses.BinaryFocalCrossentropy(
        from_logits=True, apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA, reduction="sum")

    def f(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = obj(y, x)
        return loss, tape.gradient(loss, x)
    return f


def copy(x, y):
    return x * 1.0, y[:1, :1]


def raw_copy_ms(x, runs):
    """Memory-only floor: numpy copy into a preallocated buffer (no TF, no page faults)."""
    a = x.numpy()
    b = np.empty_like(a)
    np.copyto(b, a)
    ts = []
    for _ in range(max(runs, 5)):
        t = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def timeit(fn, args, warmup, runs):
    t0 = time.perf_counter()
    for _ in range(warmup):
        out = fn(*args)
        _ = out[0].numpy()
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn(*args)
        _ = out[0].numpy()  # CPU ops are synchronous; this forces the result
        times.append(time.perf_counter() - t)
    del out
    q = np.percentile(np.array(times) * 1e3, [50, 20, 80])
    return {"median_ms": q[0], "p20_ms": q[1], "p80_ms": q[2], "warmup_s": first}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="8192x1000,32768x4096")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--providers", default="copy,native,xla-path/jit,xla-path/graph,"
                                           "clipped/graph,clipped/jit,keras/graph,keras/jit")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    if native.load(explicit=True) is None:
        print("native op not built: run python scripts/build_kernels.py", file=sys.stderr)
        return 1
    makers = {
        "copy": lambda: tf.function(copy),
        "native": lambda: tf.function(fused("native")),
        "xla-path/jit": lambda: tf.function(fused("xla"), jit_compile=True),
        "xla-path/graph": lambda: tf.function(fused("xla")),
        "clipped/graph": lambda: tf.function(clipped),
        "clipped/jit": lambda: tf.function(clipped, jit_compile=True),
        "keras/graph": lambda: tf.function(keras_loss()),
        "keras/jit": lambda: tf.function(keras_loss(), jit_compile=True),
    }
    providers = args.providers.split(",")
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow": tf.__version__, "numpy": np.__version__,
        "cpu_isa": os.environ.get("FUSEDFOCAL_CPU_ISA", "auto (widest supported)"),
        "floor_formula": "N*(bytes(logits)+bytes(labels)+bytes(grad)) / copy_bandwidth; "
                         "copy_bandwidth = 2*bytes(tensor)/t_copy (TF: x*1.0 in tf.function; "
                         "raw: numpy.copyto into a preallocated buffer)",
    }
    rows = []
    for shape_s in args.shapes.split(","):
        shape = tuple(int(s) for s in shape_s.split("x"))
        n = int(np.prod(shape))
        rng = np.random.default_rng(0)
        x = tf.constant((rng.standard_normal(shape, dtype=np.float32) * 3))
        y = tf.constant((rng.random(shape, dtype=np.float32) < 0.1).astype(np.float32))
        res = {}
        for name in providers:
            res[name] = timeit(makers[name](), (x, y), args.warmup, args.runs)
            print(f"{shape_s:>12} {name:>16}: {res[name]['median_ms']:9.2f} ms "
                  f"(p20 {res[name]['p20_ms']:.2f}, p80 {res[name]['p80_ms']:.2f})", flush=True)
        floor_ms = None
        if "copy" in res:
            bw = 2 * 4 * n / (res["copy"]["median_ms"] / 1e3)
            floor_ms = 3 * 4 * n / bw * 1e3
            meta.setdefault("copy_bandwidth_GBps", {})[shape_s] = bw / 1e9
        raw_ms = raw_copy_ms(x, args.runs)
        raw_bw = 2 * 4 * n / (raw_ms / 1e3)
        raw_floor_ms = 3 * 4 * n / raw_bw * 1e3
        meta.setdefault("raw_copy_bandwidth_GBps", {})[shape_s] = raw_bw / 1e9
        print(f"{shape_s:>12} {'numpy copyto':>16}: {raw_ms:9.2f} ms ({raw_bw / 1e9:.1f} GB/s)")
        for name, r in res.items():
            row = {"shape": list(shape), "dtype": "float32", "provider": name, **r}
            row["raw_floor_ms"] = raw_floor_ms
            row["x_raw_floor"] = r["median_ms"] / raw_floor_ms
            if floor_ms:
                row["floor_ms"] = floor_ms
                row["x_floor"] = r["median_ms"] / floor_ms
            if "native" in res and name not in ("native", "copy"):
                row["native_speedup"] = r["median_ms"] / res["native"]["median_ms"]
            rows.append(row)
        del x, y

    lines = [f"# Native CPU op benchmark ({meta['date']})", "",
             f"`{meta['command']}`  ", f"TF {meta['tensorflow']}, {meta['cpu_count']} CPUs, "
             f"ISA {meta['cpu_isa']}; floor = {meta['floor_formula']}", "",
             "| shape | provider | median ms | p20 | p80 | x TF floor | x raw floor | native speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['provider']} | {r['median_ms']:.2f} | "
            f"{r['p20_ms']:.2f} | {r['p80_ms']:.2f} | "
            f"{r.get('x_floor', float('nan')):.2f} | {r['x_raw_floor']:.2f} | "
            f"{r.get('native_speedup', float('nan')):.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(os.environ.get("OUT") or args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"bench_native_cpu_{stamp}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"bench_native_cpu_{stamp}.md").write_text(table + "\n")
    print(f"wrote {out}/bench_native_cpu_{stamp}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
