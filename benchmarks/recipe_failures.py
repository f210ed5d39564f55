"""Measure the three failures of the copied focal-loss recipe next to fusedfocal.

    .venv/bin/python benchmarks/recipe_failures.py

Prints a markdown table for the README: the gradient on a confident mistake,
the count of NaN/Inf points over a logit grid in float16 and bfloat16, and the
worst relative error against the float64 reference in float32.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedfocal  # noqa: E402
import reference as ref  # noqa: E402
from _testing import clipped_focal_recipe as clipped_recipe  # noqa: E402
from _testing import value_and_grad as _tape  # noqa: E402


def keras3(logits, labels, alpha=0.25, gamma=2.0):
    loss = keras.losses.BinaryFocalCrossentropy(
        from_logits=True, apply_class_balancing=True, alpha=alpha, gamma=gamma, reduction=None)
    return loss(labels[..., None], logits[..., None])


def ours(logits, labels, alpha=0.25, gamma=2.0):
    return fusedfocal.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma)


def value_and_grad(fn, x, y, **kw):
    loss, grad = _tape(lambda z: fn(z, y, **kw), tf.convert_to_tensor(x))
    return tf.cast(loss, tf.float64).numpy(), tf.cast(grad, tf.float64).numpy()


def main():
    grid = np.linspace(-100, 100, 215)  # 430 points: 215 logits x 2 labels
    x = np.concatenate([grid, grid])
    y = np.concatenate([np.ones_like(grid), np.zeros_like(grid)])
    rows = []
    for name, fn in [("clipped recipe", clipped_recipe), ("keras 3 BinaryFocalCrossentropy", keras3),
                     ("fusedfocal", ours)]:
        row = {"name": name}
        _, g = value_and_grad(fn, tf.constant([-30.0]), tf.constant([1.0]))
        row["grad@-30"] = g[0]
        for dt in ("float16", "bfloat16"):
            xt = tf.constant(x, dt)
            lv, gv = value_and_grad(fn, xt, tf.constant(y, dt))
            row[dt] = int((~np.isfinite(lv) | ~np.isfinite(gv)).sum())
        for gamma in (2.0, 0.5):
            x32 = tf.constant(x, tf.float32)
            lv, gv = value_and_grad(fn, x32, tf.constant(y, tf.float32), gamma=gamma)
            want = ref.sigmoid_focal(x32.numpy().astype(np.float64), y, gamma=gamma, alpha=0.25)
            want_g = ref.sigmoid_focal_grad(x32.numpy().astype(np.float64), y, gamma=gamma, alpha=0.25)
            sig = np.abs(want) > 1e-30  # where float32 can represent the answer
            with np.errstate(all="ignore"):
                row[f"err{gamma}"] = np.nanmax(np.where(sig, np.abs(lv - want) / np.abs(want), 0))
                sig_g = np.abs(want_g) > 1e-30
                row[f"gerr{gamma}"] = np.max(np.where(sig_g, np.abs(gv - want_g) / np.abs(want_g), 0))
                row[f"nan{gamma}"] = int((~np.isfinite(gv)).sum())
                mid = np.abs(x) <= 10
                row[f"mid{gamma}"] = np.max(np.abs(lv - want)[mid] / np.abs(want)[mid])
        rows.append(row)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {len(x)} points, logits in [-100, 100], "
          "labels 0 and 1, alpha 0.25, gamma 2 unless noted; relative errors where the float64 reference "
          "exceeds 1e-30\n")
    print("| implementation | dL/dx at x=-30, y=1 | NaN/Inf points float16 | NaN/Inf points bfloat16 "
          "| float32 worst rel. error of the loss, -10 ≤ x ≤ 10 | ... all x | of the gradient, all x "
          "| NaN grads at γ=0.5 (float32) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['name']} | {r['grad@-30']:.4g} | {r['float16']} / 430 | {r['bfloat16']} / 430 "
              f"| {r['mid2.0']:.1e} | {r['err2.0']:.1e} | {r['gerr2.0']:.1e} | {r['nan0.5']} |")


if __name__ == "__main__":
    main()
