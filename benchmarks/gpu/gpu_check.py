"""GPU run of the focal benchmarks (issue 6): one command on a machine where
TensorFlow sees a GPU.

    python benchmarks/gpu/gpu_check.py [DATE]

Runs ``benchmarks/bench_focal.py --benchmark`` with every provider placed on
``GPU:0`` (``FUSEDFOCAL_BENCH_DEVICE``), writes
``benchmarks/results/focal-gpu-DATE.json`` and ``.md``, then prints the peak
of ``tf.config.experimental.get_memory_info('GPU:0')`` per provider for one
fwd+bwd XLA step at [8192, 1000] float32 (in logits-sized tensors) and the
card's copy bandwidth (``x + 0`` under XLA on a 256 MiB tensor), against
which each provider's multiple of the floor is printed.
Status: not yet measured (no GPU machine with TensorFlow was available).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv):
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        sys.exit("gpu_check: TensorFlow sees no GPU")
    date = argv[0] if argv else dt.date.today().isoformat()
    out = os.path.join(ROOT, "benchmarks", "results", f"focal-gpu-{date}")
    env = dict(os.environ, FUSEDFOCAL_BENCH_DEVICE="GPU:0")
    subprocess.run([sys.executable, "-m", "pytest", os.path.join(ROOT, "benchmarks", "bench_focal.py"),
                    "--benchmark", "-q", f"--benchmark-json={out}.json"], env=env, check=True, cwd=ROOT)
    with open(out + ".md", "w") as f:
        subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), out + ".json"],
                       stdout=f, check=True)

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_focal as bf

    with tf.device("GPU:0"):
        big = tf.ones([64 * 1024 * 1024], tf.float32)
        cp = tf.function(lambda a: a + 0.0, jit_compile=True)
        cp(big).numpy()
        ts = []
        for _ in range(10):
            t0 = time.perf_counter()
            _ = cp(big)[0].numpy()
            ts.append(time.perf_counter() - t0)
        bw = 2 * big.shape[0] * 4 / sorted(ts)[5]
    print(f"GPU copy bandwidth (x + 0, XLA, 256 MiB): {bw / 1e9:.0f} GB/s")
    shape = (8192, 1000)
    x, y = bf.make_inputs(shape, tf.float32)
    unit = shape[0] * shape[1] * 4
    floor = 3 * unit / bw
    for p in ("fusedfocal", "fusedfocal_none", "native", "clipped", "keras3", "tf_keras", "bce"):
        if bf.skip_reason(p, "xla", "fwdbwd"):
            continue
        fn, _, _ = bf.make_step(p, "xla", "fwdbwd", shape[1])
        with tf.device("GPU:0"):
            fn(x, y)[0].numpy()
            tf.config.experimental.reset_memory_stats("GPU:0")
            base = tf.config.experimental.get_memory_info("GPU:0")["current"]
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                fn(x, y)[0].numpy()
                ts.append(time.perf_counter() - t0)
            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] - base
        med = sorted(ts)[10]
        print(f"{p:16s} {med * 1e3:8.3f} ms  x{med / floor:5.1f} floor  peak {peak / unit:4.1f} x logits")


if __name__ == "__main__":
    main(sys.argv[1:])
