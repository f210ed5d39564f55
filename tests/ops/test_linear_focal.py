"""fusedfocal.linear_focal_loss and linear_top_k against the float64 reference.

Loss and the three gradients (features, kernel, bias) of the chunked head are
compared with dense float64 logits through ``reference.sigmoid_focal``. The
gradients of features and kernel are sums over labels or rows, so their
tolerance is relative to the largest entry (``atol = rtol * max|expected|``).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal
import reference as ref
from _testing import compile_for, tolerance

B, H, C = 5, 8, 37  # C is a multiple of none of the chunk sizes below
IDS = [[0, 3, 3], [], [36, 1], [5], []]  # empty rows, a duplicate id, the last id
Y = ref.multi_hot(IDS, C)
ALPHA_VEC = np.linspace(0.1, 0.9, C)
WEIGHTS = np.linspace(0.5, 2.0, C)
OFFSETS = np.linspace(-2.0, 1.0, C)


def _inputs(seed=0, layout="hc", dtype=np.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, (B, H))
    w = rng.normal(0, 0.5 * scale, (H, C) if layout == "hc" else (C, H))
    b = rng.normal(0, 0.5, C)
    # The reference sees exactly the (rounded) values the op sees.
    return [tf.cast(tf.constant(a), dtype) for a in (x, w, b)]


def _np64(*ts):
    return [tf.cast(t, tf.float64).numpy() for t in ts]


def labels_as(fmt, ids=IDS):
    if fmt == "ragged":
        return tf.ragged.constant(ids, dtype=tf.int64, ragged_rank=1, inner_shape=())
    if fmt == "padded":
        width = max(len(r) for r in ids)
        return tf.constant([r + [-1] * (width - len(r)) for r in ids], tf.int32)
    if fmt == "dense":
        return tf.constant(ref.multi_hot(ids, C), tf.float32)
    raise ValueError(fmt)


def _loss_and_grads(**kw):
    def f(x, w, b, labels):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            loss = fusedfocal.linear_focal_loss(x, w, b, labels, **kw)
        return (loss,) + tuple(tape.gradient(loss, [x, w, b]))

    return f


def _check(out, want, rtol, grad_rtol=None, atol=0.0):
    grad_rtol = rtol if grad_rtol is None else grad_rtol
    for i, (name, got, exp) in enumerate(zip(("loss", "d features", "d kernel", "d bias"), out, want)):
        got = tf.cast(got, tf.float64).numpy()
        r = rtol if i == 0 else grad_rtol
        np.testing.assert_allclose(got, exp, rtol=r, atol=rtol * np.max(np.abs(exp)) + atol, err_msg=name)
        assert np.max(np.abs(exp)) > 1e-6, name  # not vacuous


@pytest.mark.parametrize("implementation", ["xla", "native"])
@pytest.mark.parametrize("grad_mode", ["forward", "recompute"])
def test_ragged_ids_match_reference(mode, implementation, grad_mode):
    x, w, b = _inputs()
    fn = compile_for(mode, _loss_and_grads(alpha=0.25, chunk_size=16, implementation=implementation,
                                           grad_mode=grad_mode))
    out = fn(x, w, b, labels_as("ragged"))
    assert out[0].dtype == tf.float32 and out[0].shape == ()
    _check(out, ref.linear_focal(*_np64(x, w, b), Y, alpha=0.25), 1e-5)


@pytest.mark.parametrize("dtype_", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("mode_", ["function", "xla"])
def test_dtypes(dtype_, mode_):
    """Low-precision inputs: float32 accumulation, so the float32 loss is as
    exact as for float32 inputs; gradients come back in the input dtypes,
    within one rounding (the tolerances of tests/_testing.py)."""
    dtype = tf.as_dtype(dtype_)
    x, w, b = _inputs(dtype=dtype)
    fn = compile_for(mode_, _loss_and_grads(alpha=ALPHA_VEC, chunk_size=16, reduction="sum"))
    out = fn(x, w, b, labels_as("ragged"))
    assert out[0].dtype == (tf.float64 if dtype == tf.float64 else tf.float32)
    assert all(g.dtype == dtype for g in out[1:])
    want = ref.linear_focal(*_np64(x, w, b), Y, alpha=ALPHA_VEC, reduction="sum")
    if dtype == tf.float64:
        _check(out, want, 1e-12)
    elif dtype == tf.float32:
        _check(out, want, 1e-5)
    else:
        tol = tolerance(dtype)
        _check(out, want, 1e-5, grad_rtol=tol["rtol"], atol=tol["atol"])


def test_float16_features_with_float32_kernel():
    """A float32 kernel (a Keras variable under mixed precision) is cast chunk
    by chunk; each gradient comes back in its input's dtype."""
    x, _, _ = _inputs(dtype=tf.float16)
    _, w, b = _inputs(dtype=tf.float32)
    out = _loss_and_grads(chunk_size=16, reduction="sum")(x, w, b, labels_as("padded"))
    assert [t.dtype for t in out] == [tf.float32, tf.float16, tf.float32, tf.float32]
    want = ref.linear_focal(*_np64(x, w, b), Y, reduction="sum")
    _check(out, want, 1e-5, grad_rtol=1e-3, atol=6.2e-5)


OPTIONS = {
    "alpha-none": dict(alpha=None),
    "alpha-float": dict(alpha=0.25),
    "alpha-vector": dict(alpha=ALPHA_VEC),
    "class-weights": dict(class_weights=WEIGHTS, alpha=0.75),
    "logit-offsets": dict(logit_offsets=OFFSETS),
    "all-three": dict(alpha=ALPHA_VEC, class_weights=WEIGHTS, logit_offsets=OFFSETS, gamma=0.5),
    "bce": dict(gamma=0.0),
}


@pytest.mark.parametrize("option, reduction", [(o, "mean") for o in sorted(OPTIONS)] + [("all-three", "sum")])
@pytest.mark.parametrize("implementation", ["xla", "native"])
def test_options(option, reduction, implementation):
    kw = dict(OPTIONS[option], reduction=reduction)
    x, w, b = _inputs(seed=1, scale=2.0)
    fn = tf.function(_loss_and_grads(chunk_size=16, implementation=implementation, **kw))
    out = fn(x, w, b, labels_as("ragged"))
    _check(out, ref.linear_focal(*_np64(x, w, b), Y, **kw), 1e-5)


def test_gamma_zero_is_bce():
    x, w, b = _inputs(seed=2)
    y = labels_as("dense")
    got = _loss_and_grads(gamma=0.0, chunk_size=16)(x, w, b, y)
    want = _loss_and_grads_unfused(lambda z: fusedfocal.binary_crossentropy(z, y, reduction="mean"))(x, w, b)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


def _loss_and_grads_unfused(loss_fn, layout="hc"):
    def f(x, w, b):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            z = (x @ w if layout == "hc" else tf.matmul(x, w, transpose_b=True)) + b
            loss = loss_fn(z)
        return (loss,) + tuple(tape.gradient(loss, [x, w, b]))

    return f


@pytest.mark.parametrize("fmt", ["ragged", "padded", "dense"])
@pytest.mark.parametrize("layout", ["hc", "ch"])
@pytest.mark.parametrize("mode_", ["eager", "xla"])
def test_label_formats_and_layouts(fmt, layout, mode_):
    x, w, b = _inputs(seed=3, layout=layout)
    fn = compile_for(mode_, _loss_and_grads(alpha=0.25, chunk_size=16, kernel_layout=layout))
    out = fn(x, w, b, labels_as(fmt))
    want = ref.linear_focal(*_np64(x, w, b), Y, alpha=0.25, kernel_layout=layout)
    _check(out, want, 1e-5)


def test_soft_dense_labels():
    x, w, b = _inputs(seed=4)
    soft = np.random.default_rng(4).random((B, C))
    out = _loss_and_grads(chunk_size=16)(x, w, b, tf.constant(soft, tf.float32))
    _check(out, ref.linear_focal(*_np64(x, w, b), tf.constant(soft, tf.float32).numpy(), ), 1e-5)


@pytest.mark.parametrize("chunk, mode_", [(c, "function") for c in (1, 7, 36, 37, 38, 4096, None)]
                         + [(7, "xla"), (37, "xla")])
def test_chunk_boundaries(chunk, mode_):
    x, w, b = _inputs(seed=5, layout="ch")
    fn = compile_for(mode_, _loss_and_grads(chunk_size=chunk, kernel_layout="ch", alpha=ALPHA_VEC))
    out = fn(x, w, b, labels_as("padded"))
    _check(out, ref.linear_focal(*_np64(x, w, b), Y, alpha=ALPHA_VEC, kernel_layout="ch"), 1e-5)


def test_no_bias_and_upstream_scale():
    """bias=None; a non-unit upstream gradient scales all gradients (both modes)."""
    x, w, b = _inputs(seed=6)
    want = ref.linear_focal(*_np64(x, w, b), Y, alpha=0.25)
    zero_bias_want = ref.linear_focal(*_np64(x, w), None, Y, alpha=0.25)
    for grad_mode in ("forward", "recompute"):
        for fn in (lambda f: f, tf.function):
            @fn
            def f(x, w):
                with tf.GradientTape() as tape:
                    tape.watch([x, w])
                    loss = 3.0 * fusedfocal.linear_focal_loss(x, w, None, labels_as("ragged"), alpha=0.25,
                                                              chunk_size=16, grad_mode=grad_mode)
                return (loss,) + tuple(tape.gradient(loss, [x, w]))

            loss, gx, gw = f(x, w)
            np.testing.assert_allclose(loss, 3 * zero_bias_want[0], rtol=1e-5)
            np.testing.assert_allclose(gx, 3 * zero_bias_want[1], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(gw, 3 * zero_bias_want[2], rtol=1e-5, atol=1e-7)
    assert want[0] != zero_bias_want[0]


def test_variables_and_empty_batch():
    x, w, b = _inputs(seed=7)
    wv, bv = tf.Variable(w), tf.Variable(b)
    with tf.GradientTape() as tape:
        loss = fusedfocal.linear_focal_loss(x, wv, bv, labels_as("ragged"), chunk_size=16)
    gw, gb = tape.gradient(loss, [wv, bv])
    want = ref.linear_focal(*_np64(x, w, b), Y)
    np.testing.assert_allclose(gw, want[2], rtol=1e-5, atol=1e-9)
    empty = fusedfocal.linear_focal_loss(tf.zeros([0, H]), w, b, tf.ragged.constant([], tf.int32, ragged_rank=1))
    assert float(empty) == 0.0


def test_extreme_logits_are_finite():
    x, w, b = _inputs(seed=8)
    out = _loss_and_grads(chunk_size=16, gamma=0.5)(100.0 * x, w, b, labels_as("ragged"))
    assert all(np.isfinite(t.numpy()).all() for t in out)


# --------------------------------------------------------------------------
# Errors name the argument, what was expected and what was received.


def test_ids_out_of_range_eager():
    x, w, b = _inputs()
    for bad in ([[0, 37], [], [1], [2], []], [[-1], [], [1], [2], []]):
        with pytest.raises(ValueError, match=r"`labels`.*\[0, 37\).*out of range"):
            fusedfocal.linear_focal_loss(x, w, b, tf.ragged.constant(bad))
    with pytest.raises(ValueError, match=r"`labels`.*\[-1, 37\).*id -2"):
        fusedfocal.linear_focal_loss(x, w, b, tf.constant([[0], [-2], [1], [2], [3]]))


def test_ids_out_of_range_graph():
    x, w, b = _inputs()
    f = tf.function(lambda x, y: fusedfocal.linear_focal_loss(x, w, b, y))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels`"):
        f(x, tf.constant([[0], [40], [1], [2], [3]]))


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(reduction="none"), ValueError, r"`reduction`.*Received: reduction='none'"),
    (dict(kernel_layout="cx"), ValueError, r"`kernel_layout`.*Received: kernel_layout='cx'"),
    (dict(grad_mode="later"), ValueError, r"`grad_mode`"),
    (dict(chunk_size=0), ValueError, r"`chunk_size`"),
    (dict(implementation="gpu"), ValueError, r"`implementation`"),
    (dict(gamma=-1.0), ValueError, r"`gamma`"),
    (dict(alpha=np.ones(3) * 0.5), ValueError, r"`alpha`.*length 37"),
    (dict(alpha=1.5), ValueError, r"`alpha`"),
    (dict(class_weights=-np.ones(C)), ValueError, r"`class_weights`.*>= 0"),
    (dict(logit_offsets=np.ones(5)), ValueError, r"`logit_offsets`.*length 37"),
])
def test_bad_keywords(kwargs, exc, pattern):
    x, w, b = _inputs()
    with pytest.raises(exc, match=pattern):
        fusedfocal.linear_focal_loss(x, w, b, labels_as("ragged"), **kwargs)


def test_bad_shapes_and_dtypes():
    x, w, b = _inputs()
    y = labels_as("ragged")
    cases = [
        (lambda: fusedfocal.linear_focal_loss(x[0], w, b, y), ValueError, r"`features`.*rank 2"),
        (lambda: fusedfocal.linear_focal_loss(tf.cast(x, tf.int32), w, b, y), TypeError, r"`features`.*dtype"),
        (lambda: fusedfocal.linear_focal_loss(x, w[:3], b, y), ValueError, r"`kernel`.*\[8, C\]"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, y, kernel_layout="ch"), ValueError, r"`kernel`.*\[C, 8\]"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b[:3], y), ValueError, r"`bias`.*\[37\]"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, tf.constant([1, 2])), ValueError, r"`labels`.*rank 1"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, tf.zeros([B, 5])), ValueError, r"`labels`.*\[batch, 37\]"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, tf.zeros([3, C])), ValueError, r"`labels`.*5 rows"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, tf.ragged.constant([[0.5]] * B)), TypeError,
         r"`labels`.*int32 or int64"),
        (lambda: fusedfocal.linear_focal_loss(x, w, b, tf.constant(["a"] * B)[:, None]), TypeError, r"`labels`"),
        (lambda: fusedfocal.linear_top_k(x, w, b, 0), ValueError, r"`k`.*\[1, 37\]"),
        (lambda: fusedfocal.linear_top_k(x, w, b, 38), ValueError, r"`k`"),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fn()


# --------------------------------------------------------------------------
# Top-k.


@pytest.mark.parametrize("layout, k, mode_", [("hc", 1, "eager"), ("hc", 16, "eager"), ("ch", C, "eager"),
                                              ("hc", 4, "xla"), ("ch", 16, "xla")])
def test_top_k_matches_dense(layout, k, mode_):
    x, w, b = _inputs(seed=9, layout=layout)
    fn = compile_for(mode_, lambda x, w, b: fusedfocal.linear_top_k(x, w, b, k, chunk_size=16,
                                                                      kernel_layout=layout))
    scores, ids = fn(x, w, b)
    z = x @ w if layout == "hc" else tf.matmul(x, w, transpose_b=True)
    want_scores, want_ids = tf.math.top_k(tf.sigmoid(z + b), k)
    assert scores.dtype == tf.float32 and ids.dtype == tf.int32 and ids.shape == (B, k)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(ids, want_ids)


def test_top_k_bfloat16_no_bias():
    x, w, _ = _inputs(seed=10, dtype=tf.bfloat16)
    scores, ids = fusedfocal.linear_top_k(x, w, None, 5, chunk_size=8)
    z = tf.cast(x, tf.float32) @ tf.cast(w, tf.float32)
    want_scores, want_ids = tf.math.top_k(tf.sigmoid(z), 5)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(ids, want_ids)


def _matmuls(concrete):
    from test_linear_graph import _graphs

    return sum(op.type in ("MatMul", "BatchMatMulV2") for g in _graphs(concrete.graph) for op in g.get_operations())


def test_no_gradient_matmuls_without_a_tape():
    """Forward mode forms gradients in the forward pass only when a tape could
    ask for them: evaluation runs one matmul a chunk, and tf.gradients (no
    tape) still gets exact gradients by recomputation."""
    x, w, b = _inputs(seed=11)
    y = labels_as("ragged")
    loss_only = tf.function(lambda x: fusedfocal.linear_focal_loss(x, w, b, y, chunk_size=16))
    with_tape = tf.function(_loss_and_grads(chunk_size=16))
    assert _matmuls(loss_only.get_concrete_function(x)) == 2  # loop body + tail chunk
    assert _matmuls(with_tape.get_concrete_function(x, w, b, y)) == 6  # 3 a chunk
    want = ref.linear_focal(*_np64(x, w, b), Y)
    np.testing.assert_allclose(loss_only(x), want[0], rtol=1e-5)

    @tf.function
    def grads(x):
        return tf.gradients(fusedfocal.linear_focal_loss(x, w, b, y, chunk_size=16), x)[0]

    np.testing.assert_allclose(grads(x), want[1], rtol=1e-5, atol=1e-5 * np.abs(want[1]).max())


@pytest.mark.parametrize("mode_", ["function", "xla"])
def test_tensor_hyperparameters(mode_):
    """alpha as a scalar or [C] tensor, class weights and offsets as tensors
    (what a Keras layer passes from its non-trainable weights)."""
    x, w, b = _inputs(seed=12)
    for alpha in (tf.constant(0.3), tf.constant(ALPHA_VEC, tf.float32)):
        kw = dict(alpha=alpha, class_weights=tf.constant(WEIGHTS, tf.float32),
                  logit_offsets=tf.Variable(OFFSETS, dtype=tf.float32))
        out = compile_for(mode_, _loss_and_grads(chunk_size=16, kernel_layout="hc", **kw))(x, w, b, labels_as("padded"))
        ref_kw = dict(alpha=tf.cast(alpha, tf.float64).numpy(), class_weights=WEIGHTS.astype(np.float32),
                      logit_offsets=OFFSETS.astype(np.float32))
        _check(out, ref.linear_focal(*_np64(x, w, b), Y, **ref_kw), 1e-5)
