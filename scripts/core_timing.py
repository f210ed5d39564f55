"""Forward+backward timing ratios of the fused op against what users run today.

    .venv/bin/python scripts/core_timing.py [--rounds 30]

float32, gradient with respect to the logits inside the same tf.function, in
graph (tf.function) and XLA (jit_compile) modes, at [65536, 19] and
[8192, 1000]. Providers run interleaved round by round, so machine noise hits
them alike; the table gives medians and the ratio to fusedfocal (>1: slower
than fusedfocal). The full suite is benchmarks/bench_focal.py.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedfocal  # noqa: E402


def clipped(x, y):
    p = tf.clip_by_value(tf.sigmoid(x), 1e-7, 1 - 1e-7)
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * 0.25 + (1 - y) * 0.75
    return tf.reduce_sum(-alpha_t * (1 - p_t) ** 2.0 * tf.math.log(p_t))


_KERAS = keras.losses.BinaryFocalCrossentropy(
    from_logits=True, apply_class_balancing=True, alpha=0.25, gamma=2.0, reduction="sum")

PROVIDERS = {
    "fusedfocal": lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum"),
    "clipped recipe": clipped,
    "keras 3 BinaryFocalCrossentropy": lambda x, y: _KERAS(y, x),
}


def make_step(loss_fn, jit):
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(x, y)
        return loss, tape.gradient(loss, x)

    return tf.function(step, jit_compile=jit)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"medians of {args.rounds} rounds, ms\n")
    print("| shape | mode | provider | median ms | ratio to fusedfocal |")
    print("| --- | --- | --- | ---: | ---: |")
    for shape in ((65536, 19), (8192, 1000)):
        x = tf.constant(rng.normal(0, 3, shape), tf.float32)
        y = tf.constant((rng.random(shape) < 0.1).astype(np.float32))
        for mode, jit in (("graph", False), ("XLA", True)):
            steps = {name: make_step(fn, jit) for name, fn in PROVIDERS.items()}
            for step in steps.values():  # compile and warm up
                for _ in range(3):
                    step(x, y)[1].numpy()
            times = {name: [] for name in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    start = time.perf_counter()
                    step(x, y)[1].numpy()
                    times[name].append(time.perf_counter() - start)
            base = np.median(times["fusedfocal"])
            for name, ts in times.items():
                med = np.median(ts)
                print(f"| {list(shape)} | {mode} | {name} | {med * 1e3:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
