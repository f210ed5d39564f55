"""Test helpers shared by every test folder: modes, dtypes, tolerances.

A module of its own (not ``conftest``) because ``benchmarks/conftest.py``
would shadow ``from conftest import ...``.
"""

from __future__ import annotations

import socket

import numpy as np
import tensorflow as tf

MODES = ("eager", "function", "xla")
DTYPES = ("float16", "bfloat16", "float32", "float64")


def free_ports(n: int, host: str = "localhost") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (bound together, then released): the ports of
    worker processes a test starts on loopback. Another process may take one before the worker
    binds it; rare enough for tests."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def compile_for(mode: str, fn):
    """Wrap ``fn`` for an execution mode: eager, ``tf.function`` or XLA."""
    if mode == "eager":
        return fn
    if mode == "function":
        return tf.function(fn)
    if mode == "xla":
        return tf.function(fn, jit_compile=True)
    raise ValueError(mode)


def tolerance(dtype) -> dict:
    """``rtol``/``atol`` for a result delivered in ``dtype`` (float32 math inside).

    Results returned in float32 (the loss for f16/bf16/f32 inputs) get
    float32 tolerances; gradients returned in f16/bf16 get that type's
    rounding (half an ulp relative, plus its smallest normal as atol).
    """
    name = tf.as_dtype(dtype).name
    return {
        "float64": dict(rtol=1e-12, atol=1e-300),
        "float32": dict(rtol=2e-6, atol=1e-6),
        "float16": dict(rtol=1e-3, atol=6.2e-5),
        "bfloat16": dict(rtol=8e-3, atol=1e-6),
    }[name]


def assert_close(actual, expected, *, rtol, atol, what=""):
    """``np.testing.assert_allclose`` that names the worst element on failure."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values at {np.argwhere(~np.isfinite(actual))[:5].tolist()}"
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    if (err > bound).any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{what}: {int((err > bound).sum())} of {err.size} elements out of tolerance "
            f"(rtol={rtol}, atol={atol}); worst at {tuple(int(k) for k in i)}: "
            f"actual={actual[i]!r} expected={expected[i]!r} abs err={err[i]:.3g}"
        )


def value_and_grad(fn, x):
    """``fn(x)`` and ``d sum(fn(x)) / dx`` by a gradient tape (the one tape
    helper of the tests and benchmarks; wrap it with :func:`compile_for`)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = fn(x)
        total = tf.reduce_sum(loss)
    return loss, tape.gradient(total, x)


def clipped_focal_recipe(logits, labels, alpha=0.25, gamma=2.0):
    """The common recipe the package replaces (per element): probabilities
    clipped at 1e-7, then log and ``(1 - p_t) ** gamma``; its gradient dies
    beyond |x| ~ 16 and it gives NaN/Inf in float16."""
    p = tf.clip_by_value(tf.sigmoid(logits), 1e-7, 1 - 1e-7)
    labels = tf.cast(labels, p.dtype)
    p_t = labels * p + (1 - labels) * (1 - p)
    alpha_t = labels * alpha + (1 - labels) * (1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * tf.math.log(p_t)
