"""fusedfocal.sigmoid_focal_loss against the float64 reference, in every dtype and mode."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal
import reference as ref
from _testing import assert_close, clipped_focal_recipe, compile_for, tolerance, value_and_grad
from fusedfocal.ops import focal as focal_module

GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.7)
C = 7
# Logits spanning saturation on both sides, zero, tiny and random values.
_GRID = np.array([-100, -30, -10, -3, -1, -1e-3, 0, 1e-3, 1, 3, 10, 30, 100], np.float64)
_RNG = np.random.default_rng(0)
X = np.concatenate([np.repeat(_GRID, C), _RNG.normal(0, 4, 9 * C)]).reshape(-1, C)
HARD = (_RNG.random(X.shape) < 0.4).astype(np.float64)
SOFT = _RNG.random(X.shape)
ALPHA_VEC = np.linspace(0.1, 0.9, C)

# (alpha, labels as fed, labels as the reference sees them, label_smoothing)
CASES = {
    "hard-float/no-alpha": (None, HARD.astype(np.float32), HARD, 0.0),
    "bool/scalar-alpha": (0.25, HARD.astype(bool), HARD, 0.0),
    "int32/vector-alpha": (ALPHA_VEC, HARD.astype(np.int32), HARD, 0.0),
    "soft/tensor-alpha": (ALPHA_VEC[None, :], SOFT.astype(np.float32), SOFT.astype(np.float32), 0.0),
    "hard/smoothing": (0.75, HARD.astype(np.float32), HARD, 0.1),
}


def _loss_and_grad(loss_fn):
    return lambda x, y: value_and_grad(lambda z: loss_fn(z, y), x)


def _inputs(dtype):
    x = tf.constant(X, dtype)
    # The reference sees exactly the (possibly rounded) values the op sees.
    return x, tf.cast(x, tf.float64).numpy()


@pytest.mark.parametrize("gamma", GAMMAS)
def test_matches_reference(dtype, mode, gamma):
    x, x64 = _inputs(dtype)
    for case, (alpha, labels, labels64, ls) in CASES.items():
        alpha_arg = tf.constant(alpha, tf.float64) if case.startswith("soft") else alpha
        fn = compile_for(mode, _loss_and_grad(
            lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, gamma=gamma, alpha=alpha_arg, label_smoothing=ls)))
        loss, grad = fn(x, tf.constant(labels))
        want = ref.sigmoid_focal(x64, labels64, gamma=gamma, alpha=alpha, label_smoothing=ls)
        want_grad = ref.sigmoid_focal_grad(x64, labels64, gamma=gamma, alpha=alpha, label_smoothing=ls)
        compute = tf.float64 if dtype == tf.float64 else tf.float32
        assert loss.dtype == compute and grad.dtype == dtype, case
        assert_close(loss, want, **tolerance(compute), what=f"loss {case}")
        assert_close(grad, want_grad, **tolerance(dtype), what=f"grad {case}")


@pytest.mark.parametrize("gamma", (0.0, 0.5, 2.0, 3.7))
@pytest.mark.parametrize("soft", (False, True))
def test_numerical_jacobian_float64(gamma, soft):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 3, (3, 4)))
    y = tf.constant(rng.random((3, 4)) if soft else (rng.random((3, 4)) < 0.5).astype(np.float64))
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: fusedfocal.sigmoid_focal_loss(x, y, gamma=gamma, alpha=0.3), [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-8)
    assert np.abs(theoretical[0]).max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("mode_", ("eager", "xla"))
@pytest.mark.parametrize("gamma", (0.0, 0.5, 2.0))
@pytest.mark.parametrize("dtype_,big", [("float32", 100.0), ("float32", 1e4), ("float16", 65504.0),
                                         ("bfloat16", 1e4), ("bfloat16", 3e38), ("float64", 1e4)])
def test_extremes_are_finite_and_exact(mode_, gamma, dtype_, big):
    x = tf.constant([[-big, big, -big, big]], dtype_)
    y = tf.constant([[1.0, 0.0, 0.0, 1.0]])  # two confident mistakes, two confident hits
    fn = compile_for(mode_, _loss_and_grad(lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, gamma=gamma, alpha=0.25)))
    loss, grad = fn(x, y)
    loss, grad = loss.numpy().astype(np.float64), tf.cast(grad, tf.float64).numpy()
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    xb = float(tf.cast(x[0, 1], tf.float64))  # big as representable in dtype
    # Confident mistakes: loss = alpha_t * |x|, gradient = -/+ alpha_t (never 0).
    np.testing.assert_allclose(loss[0, :2], [0.25 * xb, 0.75 * xb], rtol=1e-6)
    np.testing.assert_allclose(grad[0, :2], [-0.25, 0.75], rtol=1e-6)
    # Confident hits: zero loss and gradient.
    np.testing.assert_array_equal(loss[0, 2:], 0.0)
    np.testing.assert_array_equal(grad[0, 2:], 0.0)


def test_hessian_is_finite_at_saturation():
    # optax test_extreme_logits_finite_gradients: gamma 0.5, logits +-100.
    x = tf.constant([[-100.0, 100.0, 0.0]], tf.float64)
    y = tf.constant([[1.0, 1.0, 1.0]], tf.float64)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(fusedfocal.sigmoid_focal_loss(x, y, gamma=0.5))
        grad = inner.gradient(loss, x)
    hess = outer.gradient(grad, x)
    # The analytic gradient is not differentiated again (custom_gradient), so
    # second derivatives are zero rather than NaN; first ones are finite.
    assert np.isfinite(grad.numpy()).all()
    assert hess is None or np.isfinite(hess.numpy()).all()


@pytest.mark.parametrize("mode_", ("eager", "function", "xla"))
def test_gamma_zero_equals_bce(mode_):
    x, _ = _inputs(tf.float32)
    y = tf.constant(SOFT, tf.float32)
    ours = compile_for(mode_, _loss_and_grad(lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, gamma=0.0)))(x, y)
    bce = compile_for(mode_, _loss_and_grad(lambda x, y: tf.nn.sigmoid_cross_entropy_with_logits(y, x)))(x, y)
    assert_close(ours[0], bce[0], rtol=2e-6, atol=1e-7, what="value")
    assert_close(ours[1], bce[1], rtol=2e-6, atol=1e-7, what="gradient")


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_over_bce_is_modulating_factor(gamma):
    # torchvision TestFocalLoss: FL / CE == alpha_t * (1 - p_t)^gamma.
    x = np.clip(X, -20, 20)  # keep BCE away from 0 so the ratio is defined
    y = HARD
    ratio = fusedfocal.sigmoid_focal_loss(x, y, gamma=gamma, alpha=0.25).numpy() / \
        tf.nn.sigmoid_cross_entropy_with_logits(y, x).numpy()
    one_minus_p_t = y / (1 + np.exp(x)) + (1 - y) / (1 + np.exp(-x))  # no cancellation
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    np.testing.assert_allclose(ratio, alpha_t * one_minus_p_t**gamma, rtol=1e-10)


def test_clipped_recipe_has_dead_gradient_ours_does_not():
    x = tf.constant([[-30.0]])
    y = tf.constant([[1.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        naive = clipped_focal_recipe(x, y, alpha=0.25, gamma=2.0)  # y = 1: -0.25 (1-p)^2 log p
        ours = fusedfocal.sigmoid_focal_loss(x, y, gamma=2.0, alpha=0.25)
    assert tape.gradient(naive, x).numpy().item() == 0.0  # the bug we replace
    np.testing.assert_allclose(tape.gradient(ours, x).numpy().item(), -0.25, rtol=1e-6)


@pytest.mark.parametrize("shape,label_shape", [
    ((0, 5), (0, 5)),         # empty batch
    ((1, 1), (1, 1)),
    ((7, 5), (7, 5)),         # odd sizes
    ((2, 3, 4), (2, 3, 4)),   # rank 3 (e.g. tokens x labels)
    ((6, 5), (1, 5)),         # labels broadcast over the batch
    ((5,), (5,)),             # rank 1
])
@pytest.mark.parametrize("mode_", ("eager", "xla"))
def test_shapes(shape, label_shape, mode_):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(0, 3, shape), tf.float32)
    y = tf.constant((rng.random(label_shape) < 0.5).astype(np.float32))
    loss, grad = compile_for(mode_, _loss_and_grad(
        lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, gamma=2.0, alpha=0.25)))(x, y)
    assert loss.shape == shape and grad.shape == shape
    want = ref.sigmoid_focal(x.numpy().astype(np.float64), y.numpy(), gamma=2.0, alpha=0.25)
    assert_close(loss, want, **tolerance(tf.float32), what="loss")


@pytest.mark.parametrize("reduction", ("sum", "mean"))
@pytest.mark.parametrize("mode_", ("eager", "function", "xla"))
def test_reduced_path_matches_elementwise(reduction, mode_):
    x, _ = _inputs(tf.float32)
    y = tf.constant(HARD, tf.float32)
    reduce = tf.reduce_sum if reduction == "sum" else tf.reduce_mean
    full = compile_for(mode_, _loss_and_grad(lambda x, y: reduce(fusedfocal.sigmoid_focal_loss(x, y, alpha=0.25))))
    fused = compile_for(mode_, _loss_and_grad(
        lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, alpha=0.25, reduction=reduction)))
    (l1, g1), (l2, g2) = full(x, y), fused(x, y)
    assert l2.shape == ()
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    np.testing.assert_allclose(g2, g1, rtol=1e-6, atol=1e-12)


def test_empty_batch_reductions():
    x = tf.zeros([0, 3])
    y = tf.zeros([0, 3])
    for reduction in ("sum", "mean"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fusedfocal.sigmoid_focal_loss(x, y, reduction=reduction)
        assert float(loss) == 0.0
        assert tape.gradient(loss, x).shape == (0, 3)


def test_mixed_precision_inputs_match_float32_math():
    # float16 logits give the float32 result of the same (rounded) values.
    x16 = tf.constant(X, tf.float16)
    y = tf.constant(HARD, tf.float32)
    a = fusedfocal.sigmoid_focal_loss(x16, y)
    b = fusedfocal.sigmoid_focal_loss(tf.cast(x16, tf.float32), y)
    assert a.dtype == tf.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ----------------------------------------------------------------- bad input

BAD_ARGS = [
    (dict(gamma=-1.0), ValueError, r"`gamma`.*>= 0.*Received: gamma=-1.0"),
    (dict(gamma=float("nan")), ValueError, r"`gamma`"),
    (dict(gamma="2"), TypeError, r"`gamma`.*Received: gamma='2'"),
    (dict(alpha=1.5), ValueError, r"`alpha`.*\[0, 1\].*Received: alpha=1.5"),
    (dict(alpha=[0.1, 0.2]), ValueError, r"`alpha`.*length 3.*Received: alpha=vector of length 2"),
    (dict(alpha=[0.1, -0.2, 0.3]), ValueError, r"`alpha`.*entry -0.2 at flat index 1"),
    (dict(alpha="x"), TypeError, r"`alpha`"),
    (dict(label_smoothing=1.5), ValueError, r"`label_smoothing`.*\[0, 1\].*Received: label_smoothing=1.5"),
    (dict(label_smoothing=-0.1), ValueError, r"`label_smoothing`"),
    (dict(reduction="avg"), ValueError, r"`reduction`.*Received: reduction='avg'"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_ARGS, ids=[str(a[0]) for a in BAD_ARGS])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fusedfocal.sigmoid_focal_loss(tf.zeros([2, 3]), tf.zeros([2, 3]), **kwargs)


def test_bad_tensors():
    with pytest.raises(TypeError, match=r"`logits`.*floating.*Received: logits.dtype=int32"):
        fusedfocal.sigmoid_focal_loss(tf.zeros([2, 3], tf.int32), tf.zeros([2, 3]))
    with pytest.raises(ValueError, match=r"`logits`.*rank >= 1.*Received.*rank 0"):
        fusedfocal.sigmoid_focal_loss(1.0, 1.0)
    with pytest.raises(ValueError, match=r"`labels`.*rank >= 1"):
        fusedfocal.sigmoid_focal_loss(tf.zeros([3]), 1.0)
    with pytest.raises(ValueError, match=r"`labels`.*broadcast.*\(2, 3\).*Received: labels=.*\(2, 4\)"):
        fusedfocal.sigmoid_focal_loss(tf.zeros([2, 3]), tf.zeros([2, 4]))
    with pytest.raises(ValueError, match=r"`labels`.*broadcasts to logits"):
        fusedfocal.sigmoid_focal_loss(tf.zeros([1, 3]), tf.zeros([4, 3]))
    with pytest.raises(TypeError, match=r"`labels`.*Received: labels.dtype=string"):
        fusedfocal.sigmoid_focal_loss(tf.zeros([2]), tf.constant(["a", "b"]))


def test_labels_outside_unit_interval_are_opt_in_checked():
    x = tf.zeros([1, 2])
    y = tf.constant([[2.0, 0.0]])
    assert np.isfinite(fusedfocal.sigmoid_focal_loss(x, y).numpy()).all()  # documented: unchecked
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels.*\\[0, 1\\]"):
        fusedfocal.sigmoid_focal_loss(x, y, check_labels=True)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(focal_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize("mode_", ("eager", "function", "xla"))
@pytest.mark.parametrize("reduction", ("none", "sum", "mean"))
def test_sample_weight_matches_reference_on_the_pure_tf_path(mode_, reduction):
    """sample_weight multiplies each element's loss and gradient before the
    reduction; the pure-TF path here (the kernels are covered in tests/kernels)."""
    x, x64 = _inputs(tf.float32)
    w = _RNG.random((X.shape[0], 1))
    fn = compile_for(mode_, _loss_and_grad(lambda x, y: fusedfocal.sigmoid_focal_loss(
        x, y, gamma=2.0, alpha=0.25, reduction=reduction, sample_weight=w, implementation="xla")))
    loss, grad = fn(x, tf.constant(HARD))
    want = ref.sigmoid_focal(x64, HARD, gamma=2.0, alpha=0.25) * w
    want_g = ref.sigmoid_focal_grad(x64, HARD, gamma=2.0, alpha=0.25) * w
    if reduction == "sum":
        want = want.sum()
    elif reduction == "mean":
        want, want_g = want.sum() / want.size, want_g / want.size
    assert_close(loss, want, rtol=2e-6, atol=1e-6, what="loss")
    assert_close(grad, want_g, **tolerance(tf.float32), what="grad")


def test_bad_sample_weight_names_the_argument():
    with pytest.raises(ValueError, match="`sample_weight`.*broadcasts to logits"):
        fusedfocal.sigmoid_focal_loss(np.zeros((4, 3), np.float32), np.zeros((4, 3)),
                                      sample_weight=np.ones((4, 2)))
    with pytest.raises(ValueError, match="`sample_weight`"):
        fusedfocal.sigmoid_focal_loss(np.zeros((4, 3), np.float32), np.zeros((4, 3)),
                                      sample_weight="heavy")
