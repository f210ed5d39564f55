"""One XMC head training step (forward, backward, Adam update), for
``benchmarks/bench_xmc_step.py``: step time and peak memory of one provider
at one configuration, in this (fresh) process.

``python benchmarks/_xmc_step.py PROVIDER MODE C H B [--dtype float32]
[--steps 3] [--layout hc] [--chunk N] [--grad-mode forward]
[--implementation auto] [--limit-gib 16]`` prints one JSON line.

Providers (all train the same head: ``features [B, H] @ kernel + bias``,
sigmoid focal loss gamma 2, alpha 0.25, mean over B x C, Keras 3 Adam):

* ``fused``      -- ``fusedfocal.linear_focal_loss`` on padded label ids;
* ``fusedfocal`` -- matmul + ``fusedfocal.SigmoidFocalLoss`` on dense multi-hot;
* ``keras3``     -- matmul + ``keras.losses.BinaryFocalCrossentropy(
  apply_class_balancing=True, from_logits=True)`` on dense multi-hot;
* ``fused_sgd`` / ``fused_adam`` -- ``fusedfocal.ops.head_update.
  linear_focal_loss_update``: the same loss with the gradient fused into the
  update (no Keras optimizer, no kernel-sized gradient), label-major kernel,
  stored in ``--weight-dtype`` (float32, or bfloat16 as bit patterns in
  uint16 as ``FocalHead`` stores it, initialised chunk by chunk; the bias is
  float32), Adam's slots in ``--moment-dtype``; with a ``_bf16``
  suffix (``fused_sgd_bf16``, ``fused_adam_bf16``) both are bfloat16.

The unfused providers build their ``[B, C]`` multi-hot labels from the same
ids inside the step (as a pipeline that ships ids would; a pipeline that
ships multi-hot holds the same tensor). MODE is ``graph`` (tf.function) or
``xla`` (jit_compile=True).

Memory (TF's allocator statistics read zero on CPU, hence RSS, as in
``_peak_mem.py``): ``resting`` = RSS once the kernel, bias and both Adam
slots exist. The step is traced, compiled and run once (``first_step_s``;
``cold_peak_above_resting`` = VmHWM - resting then, compilation included).
Then freed heap pages go back to the OS (``malloc_trim``), the peak mark is
reset (``/proc/self/clear_refs`` <- 5) and the remaining steps run:
``peak_above_resting`` = VmHWM - RSS before them, the working set of a warm
step (tensors above 32 MB are mmapped by glibc and come back on free, so a
warm step faults its working set in again). That holds for TF's plain
allocator: run with ``TF_ENABLE_ONEDNN_OPTS=0`` (recorded as ``onednn``);
with oneDNN on, TF pools large CPU allocations and never returns them, so
the warm peak reads ~0 and only ``peak_rss_bytes`` (the whole process) and
the cold peak mean anything. A watchdog thread ends the process (exit code 3,
``{"exceeded_gib": limit}``) as soon as RSS passes ``--limit-gib``, so an
unfused step that cannot fit is recorded, not swapped or OOM-killed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time

import numpy as np

ALPHA, GAMMA = 0.25, 2.0
LABELS_PER_ROW = 8  # padded id width; about 5 positives a row (as the synthetic XMC corpus)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _peak_mem import _status  # noqa: E402  (one reader of /proc/self/status for both workers)


def _watchdog(limit_bytes, start):
    def run():
        while True:
            rss = _status("VmRSS")
            if rss > limit_bytes:
                print(json.dumps(dict(exceeded_gib=limit_bytes / 2**30, rss_bytes=rss,
                                      seconds=time.perf_counter() - start)), flush=True)
                os._exit(3)
            time.sleep(0.02)

    threading.Thread(target=run, daemon=True).start()


def make_ids(batch, num_labels, seed=0):
    """``[B, 8]`` int32 ids padded with -1: 1 to 8 (mean ~5) power-law ids a row."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, LABELS_PER_ROW), -1, np.int32)
    for r in range(batch):
        n = int(rng.integers(1, LABELS_PER_ROW + 1))
        ranks = np.unique(np.minimum((rng.pareto(1.1, n) * 10).astype(np.int64), num_labels - 1))
        ids[r, :ranks.size] = ranks
    return ids


def build_fused_update(provider, mode, num_labels, hidden, *, weight_dtype="float32", moment_dtype="float32",
                       chunk=None, implementation="auto"):
    """``(step(x, ids) -> loss, state)`` for the fused-update providers."""
    import keras
    import tensorflow as tf

    from fusedfocal._head_storage import _STORAGE as storage  # bfloat16 as bit patterns, as FocalHead stores it
    from fusedfocal._head_storage import Bfloat16BitsInitializer
    from fusedfocal.ops import head_update as hu

    rule = provider.split("_", 1)[1]
    update = hu.HeadUpdate(optimizer=rule, moment_dtype=moment_dtype)
    init = keras.initializers.RandomNormal(0.0, hidden ** -0.5, seed=0)
    if weight_dtype == "bfloat16":
        init = Bfloat16BitsInitializer(init, keras)
    kernel = keras.Variable(init, shape=(num_labels, hidden), dtype=storage[weight_dtype], name="kernel")
    bias = keras.Variable(keras.initializers.Constant(-4.0), shape=(num_labels,), dtype="float32", name="bias")
    slots = {n: (keras.Variable(keras.initializers.Zeros(), shape=(num_labels, hidden), dtype=storage[moment_dtype]),
                 keras.Variable(keras.initializers.Zeros(), shape=(num_labels,), dtype="float32"))
             for n in update.slot_names}
    state = hu.HeadState(kernel, bias, slots, keras.Variable(0, dtype="int64", trainable=False))
    lr = {"sgd": 0.01 * num_labels, "adam": 1e-3}[rule]  # SGD on the mean over B x C needs a C-scaled rate

    def step(x, ids):
        return hu.linear_focal_loss_update(x, state, ids, update=update, learning_rate=lr, gamma=GAMMA,
                                           alpha=ALPHA, chunk_size=chunk, implementation=implementation)

    return tf.function(step, jit_compile=mode == "xla"), state


def build(provider, mode, num_labels, hidden, batch_max, *, dtype="float32", layout="hc", chunk=None,
          grad_mode="forward", implementation="auto", weight_dtype="float32", moment_dtype="float32"):
    """Returns ``(step(x, ids) -> loss, variables)``; the Adam slots are built."""
    import keras
    import tensorflow as tf

    import fusedfocal

    if provider.endswith("_bf16"):
        provider, weight_dtype, moment_dtype = provider[:-5], "bfloat16", "bfloat16"
    if provider.startswith("fused_"):
        return build_fused_update(provider, mode, num_labels, hidden, weight_dtype=weight_dtype,
                                  moment_dtype=moment_dtype, chunk=chunk, implementation=implementation)

    shape = (hidden, num_labels) if layout == "hc" else (num_labels, hidden)
    # Initialised in float32 by TF (a NumPy float64 draw would need 3x the kernel's bytes at 3M labels).
    kernel = keras.Variable(keras.initializers.RandomNormal(0.0, hidden ** -0.5, seed=0), shape=shape,
                            dtype="float32", name="kernel")
    bias = keras.Variable(keras.initializers.Constant(-4.0), shape=(num_labels,), dtype="float32", name="bias")
    opt = keras.optimizers.Adam(1e-3)
    opt.build([kernel, bias])
    cdtype = tf.as_dtype(dtype)

    if provider == "fusedfocal":
        loss_obj = fusedfocal.SigmoidFocalLoss(gamma=GAMMA, alpha=ALPHA)
    elif provider == "keras3":
        loss_obj = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA,
                                                        from_logits=True)
    elif provider != "fused":
        raise ValueError(provider)

    def loss_fn(x, ids):
        if provider == "fused":
            k = kernel.value
            return fusedfocal.linear_focal_loss(
                x, k, bias.value, ids, gamma=GAMMA, alpha=ALPHA, kernel_layout=layout, chunk_size=chunk,
                grad_mode=grad_mode, implementation=implementation)
        k = tf.cast(kernel.value, cdtype)
        z = tf.matmul(x, k, transpose_b=layout == "ch") + tf.cast(bias.value, cdtype)
        b = tf.shape(ids)[0]
        rows = tf.broadcast_to(tf.range(b)[:, None], tf.shape(ids))
        cols = tf.where(ids >= 0, ids, num_labels)
        y = tf.tensor_scatter_nd_update(tf.zeros(tf.stack([b, num_labels + 1])), tf.stack([rows, cols], -1),
                                        tf.ones(tf.shape(ids)))[:, :num_labels]
        return loss_obj(y, z)

    def step(x, ids):
        with tf.GradientTape() as tape:
            loss = loss_fn(x, ids)
        grads = tape.gradient(loss, [kernel, bias])
        opt.apply_gradients(zip(grads, [kernel, bias]))
        return loss

    return tf.function(step, jit_compile=mode == "xla"), (kernel, bias)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("provider")
    p.add_argument("mode", choices=("graph", "xla"))
    p.add_argument("C", type=int)
    p.add_argument("H", type=int)
    p.add_argument("B", type=int)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--layout", default="hc")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--grad-mode", default="forward")
    p.add_argument("--implementation", default="auto")
    p.add_argument("--limit-gib", type=float, default=16.0)
    p.add_argument("--weight-dtype", default="float32", help="fused_sgd/fused_adam: the head's storage")
    p.add_argument("--moment-dtype", default="float32", help="fused_adam: the slots' storage")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    _watchdog(a.limit_gib * 2**30, t_start)
    import tensorflow as tf

    step, _ = build(a.provider, a.mode, a.C, a.H, a.B, dtype=a.dtype, layout=a.layout, chunk=a.chunk,
                    grad_mode=a.grad_mode, implementation=a.implementation, weight_dtype=a.weight_dtype,
                    moment_dtype=a.moment_dtype)
    rng = np.random.default_rng(1)
    dt = tf.as_dtype(a.dtype)

    def inputs(batch):
        return (tf.cast(tf.constant(rng.normal(0, 1, (batch, a.H)).astype(np.float32)), dt),
                tf.constant(make_ids(batch, a.C)))

    x, ids = inputs(a.B)
    resting = _status("VmRSS")
    times, losses = [], []
    t0 = time.perf_counter()
    losses.append(float(step(x, ids)))
    first = time.perf_counter() - t0
    cold = _status("VmHWM") - resting
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss1 = _status("VmRSS")
    for i in range(max(1, a.steps - 1)):
        t0 = time.perf_counter()
        losses.append(float(step(x, ids)))
        times.append(time.perf_counter() - t0)
    hwm = _status("VmHWM")
    out = dict(provider=a.provider, mode=a.mode, C=a.C, H=a.H, B=a.B, dtype=a.dtype, layout=a.layout,
               weight_dtype=a.weight_dtype, moment_dtype=a.moment_dtype,
               chunk=a.chunk, grad_mode=a.grad_mode, implementation=a.implementation,
               resting_bytes=resting, cold_peak_above_resting_bytes=cold,
               peak_above_resting_bytes=max(0, hwm - rss1), peak_rss_bytes=hwm, rss_before_warm_bytes=rss1,
               onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
               first_step_s=first, step_s=times, losses=losses, wall_s=time.perf_counter() - t_start)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
