"""Shared helpers for tests/losses: data, tolerances, reference checks."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import reference as ref
from _testing import assert_close, compile_for, value_and_grad

DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
MODES = ("eager", "function", "xla")
DTYPE_IDS = [d.name for d in DTYPES]

_RNG = np.random.default_rng(1234)
C = 5
# [8, 5] logits: moderate values (the reference is evaluated in probability
# space) plus a row of zeros; labels with an all-negative row and an
# all-negative column (a class with no positives in the batch).
X = np.concatenate([_RNG.normal(0.0, 3.0, (7, C)), np.zeros((1, C))]).round(3)
Y = (_RNG.random((8, C)) < 0.4).astype(np.float64)
Y[2, :] = 0.0  # a row with no positive label
Y[:, 3] = 0.0  # a class with no positive in the batch
Y[0, 0] = Y[1, 0] = 1.0
SOFT = _RNG.random((8, C))
COUNTS = np.array([120.0, 7.0, 0.0, 35.0, 1000.0])  # one class never seen
NUM_DOCS = 1000.0


def tolerance(dtype) -> dict:
    """Tolerances for the loss (float32 out for f16/bf16/f32 inputs, float64
    for f64) and for the gradient (returned in the logits' dtype); the
    reference is evaluated at the logits rounded to ``dtype``."""
    name = tf.as_dtype(dtype).name
    f32 = dict(rtol=2e-5, atol=2e-6)
    return {
        "float64": dict(loss=dict(rtol=1e-10, atol=1e-13), grad=dict(rtol=1e-10, atol=1e-13)),
        "float32": dict(loss=f32, grad=f32),
        "float16": dict(loss=f32, grad=dict(rtol=1.5e-3, atol=1e-4)),
        "bfloat16": dict(loss=f32, grad=dict(rtol=1e-2, atol=1e-4)),
    }[name]


def rounded(x, dtype):
    """``x`` as the test feeds it (a tensor of ``dtype``) and as float64."""
    t = tf.cast(tf.constant(np.asarray(x, np.float64)), dtype)
    return t, tf.cast(t, tf.float64).numpy()


def loss_and_grad(fn, x, mode):
    """``fn(x)`` and ``d sum(fn(x)) / dx`` under eager / tf.function / XLA."""

    loss, grad = compile_for(mode, lambda z: value_and_grad(fn, z))(x)
    return loss, grad


def check_reference(fn, ref_fn, x, dtype, mode, *, what=""):
    """Value and gradient of ``fn`` (a TF loss of logits) against ``ref_fn``
    (its float64 NumPy twin); the reference gradient is the complex-step
    gradient of ``sum(ref_fn(x))``."""
    xt, x64 = rounded(x, dtype)
    loss, grad = loss_and_grad(fn, xt, mode)
    tol = tolerance(dtype)
    expected_dtype = tf.float64 if dtype == tf.float64 else tf.float32
    assert loss.dtype == expected_dtype, (what, loss.dtype)
    assert grad.dtype == dtype, (what, grad.dtype)
    assert_close(loss.numpy(), np.real(ref_fn(x64)), what=f"{what} loss", **tol["loss"])
    g_ref = ref.complex_step_sum_grad(ref_fn, x64)
    assert_close(tf.cast(grad, tf.float64).numpy(), g_ref, what=f"{what} grad", **tol["grad"])


def check_extremes(fn, *, dtypes=DTYPES):
    """Finite loss and gradient at |x| = 100, 1e4 (bf16/f32/f64) and the
    largest float16 (65504), in eager mode and under XLA (float32)."""
    for dtype in dtypes:
        big = 65504.0 if dtype == tf.float16 else 1e4  # the largest float16
        vals = np.array([-big, -100.0, -1e4 if dtype != tf.float16 else -6e4, 0.0, 100.0, big])
        x = np.stack([vals, -vals, vals[::-1], np.roll(vals, 2), vals])[:, :C]
        xt = tf.cast(tf.constant(x), dtype)
        for mode in ("eager", "xla") if dtype == tf.float32 else ("eager",):
            loss, grad = loss_and_grad(fn, xt, mode)
            assert np.isfinite(tf.cast(loss, tf.float64).numpy()).all(), (dtype, mode, loss)
            assert np.isfinite(tf.cast(grad, tf.float64).numpy()).all(), (dtype, mode, grad)


def check_shapes(fn, *, set_loss=False, per_example=False):
    """Empty batch [0, C], [1, 1], odd [7, 5] and rank 3 eagerly; the empty
    batch and rank 3 also under XLA (each XLA shape is a compile)."""
    for shape in ((0, C), (1, 1), (7, 5), (2, 3, 4)):
        x = tf.constant(_RNG.normal(0, 2, shape), tf.float32)
        y = tf.constant((_RNG.random(shape) < 0.5).astype(np.float32))
        for mode in ("eager", "xla") if shape in ((0, C), (2, 3, 4)) else ("eager",):
            loss, grad = loss_and_grad(lambda z: fn(z, y), x, mode)
            if set_loss:
                assert loss.shape == shape[-1:], (shape, loss.shape)
            elif per_example:
                assert loss.shape == shape[:-1], (shape, loss.shape)
            else:
                assert loss.shape == shape, (shape, loss.shape)
            assert grad.shape == shape
            assert np.isfinite(loss.numpy()).all() and np.isfinite(grad.numpy()).all(), (shape, mode)


def check_reductions(fn, x=X):
    """``sum`` and ``mean`` agree with reducing ``none``; mean of empty is 0."""
    xt = tf.constant(x, tf.float32)
    none = fn(xt, "none").numpy()
    np.testing.assert_allclose(fn(xt, "sum").numpy(), none.sum(), rtol=1e-5)
    np.testing.assert_allclose(fn(xt, "mean").numpy(), none.mean(), rtol=1e-5)
    # gradients of the reduced forms agree with autodiff of the reduction
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        m = fn(xt, "mean")
        n = tf.reduce_mean(fn(xt, "none"))
    np.testing.assert_allclose(tape.gradient(m, xt).numpy(), tape.gradient(n, xt).numpy(), rtol=1e-5, atol=1e-8)


def max_rel_err(actual, expected, floor):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    mask = np.abs(expected) >= floor
    if not mask.any():
        return 0.0
    return float(np.max(np.abs(actual - expected)[mask] / np.abs(expected)[mask]))


def configs_for(mode, configs):
    """Every config eagerly; the first only under tf.function / XLA (each
    config is a retrace and, under XLA, a compile)."""
    return configs if mode == "eager" else configs[:1]
