"""Worst relative error of fusedfocal.sigmoid_focal_loss against the float64 reference.

    .venv/bin/python benchmarks/accuracy_report.py

For each input dtype and execution mode: logits on a grid over [-100, 100]
plus random values, hard and soft labels, gamma in {0, 0.5, 1, 2, 3.7},
alpha None / 0.25. The reference is evaluated at the input values as rounded
to the dtype, so the error measures the op, not the input rounding. Relative
error is taken where |reference| > 1e-30 (float32's normal range with
margin; for float16 gradients, above float16's smallest normal); soft-label gradients cross zero, so their error is given relative to the
largest gradient.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedfocal  # noqa: E402
import reference as ref  # noqa: E402
from _testing import value_and_grad  # noqa: E402

MODES = {"eager": lambda f: f, "tf.function": tf.function, "XLA": lambda f: tf.function(f, jit_compile=True)}


def main():
    rng = np.random.default_rng(0)
    grid = np.concatenate([np.linspace(-100, 100, 801), rng.normal(0, 5, 400)])
    labels = {"hard": (rng.random(grid.size) < 0.5).astype(np.float64),
              "soft": rng.random(grid.size).astype(np.float32).astype(np.float64)}
    print("| dtype | mode | loss: worst rel. error | gradient, hard labels: worst rel. error "
          "| gradient, soft labels: worst error / max abs gradient |")
    print("| --- | --- | ---: | ---: | ---: |")
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        x = tf.constant(grid, dtype)
        x64 = tf.cast(x, tf.float64).numpy()
        tiny = np.finfo(np.float16).tiny if dtype == "float16" else 0.0  # gradients below are subnormal
        for mode, wrap in MODES.items():
            worst_v = worst_g = worst_soft = 0.0
            for gamma in (0.0, 0.5, 1.0, 2.0, 3.7):
                for alpha in (None, 0.25):
                    def step(x, y):
                        return value_and_grad(
                            lambda z: fusedfocal.sigmoid_focal_loss(z, y, gamma=gamma, alpha=alpha), x)

                    fn = wrap(step)
                    for kind, y in labels.items():
                        loss, grad = fn(x, tf.constant(y, tf.float32))
                        loss = loss.numpy().astype(np.float64)
                        grad = tf.cast(grad, tf.float64).numpy()
                        want = ref.sigmoid_focal(x64, y, gamma=gamma, alpha=alpha)
                        want_g = ref.sigmoid_focal_grad(x64, y, gamma=gamma, alpha=alpha)
                        sig = np.abs(want) > 1e-30
                        worst_v = max(worst_v, np.max(np.abs(loss - want)[sig] / np.abs(want)[sig]))
                        if kind == "soft":  # a zero crossing: relative error is ill-defined
                            worst_soft = max(worst_soft, np.max(np.abs(grad - want_g)) / np.abs(want_g).max())
                            continue
                        sig = np.abs(want_g) > max(1e-30, float(tiny))
                        worst_g = max(worst_g, np.max(np.abs(grad - want_g)[sig] / np.abs(want_g)[sig]))
            print(f"| {dtype} | {mode} | {worst_v:.1e} | {worst_g:.1e} | {worst_soft:.1e} |")


if __name__ == "__main__":
    main()
