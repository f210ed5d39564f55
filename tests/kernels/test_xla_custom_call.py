"""The fused op inside XLA: the ``fusedfocal_focal_loss`` typed-FFI custom call.

Checked against the float64 reference (value and gradient) in every dtype,
alpha form, gamma, reduction, with label smoothing and sample weights; the
optimized HLO holds the custom call (and the pure-TF path holds none); Keras
3 and tf_keras train and save/load under ``jit_compile=True``; the library
loads after an XLA compile; a library without the XLA kernel falls back.
Tests that need the library skip when it is not built (CI builds it); the
fallback tests always run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reference as R  # noqa: E402
from _testing import assert_close, tolerance  # noqa: E402

import fusedfocal  # noqa: E402
from fusedfocal.ops import native  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
native.reset()
HAS_XLA = native.load() is not None and native.has_xla_kernel()
needs_xla_kernel = pytest.mark.skipif(
    not HAS_XLA, reason="native op not built with its XLA kernel: run `python scripts/build_kernels.py`")

C = 13
DTYPES = [tf.float16, tf.bfloat16, tf.float32]
GAMMAS = [0.0, 0.5, 2.0, 3.7]
ALPHAS = {"none": None, "float": 0.25, "vector": np.linspace(0.1, 0.9, C)}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    native.reset()
    yield
    native.reset()


def _data(rows=37, seed=0, soft=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 5, (rows, C)).astype(np.float32)
    x[0, :] = [-100, -30, -10, -1, -1e-3, 0, 1e-3, 1, 10, 30, 100, 5, -5]  # both tails
    y = rng.random((rows, C)) if soft else (rng.random((rows, C)) < 0.3)
    return x, y.astype(np.float32)


def _xla_loss_and_grad(implementation="auto", upstream=None, **kw):
    @tf.function(jit_compile=True)
    def run(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fusedfocal.sigmoid_focal_loss(x, y, implementation=implementation, **kw)
            total = tf.reduce_sum(loss * upstream) if upstream is not None else loss
        return loss, tape.gradient(total, x)

    return run


def _reference(x64, y, reduction, weights, upstream, **kw):
    loss = R.sigmoid_focal(x64, y, **kw)
    grad = R.sigmoid_focal_grad(x64, y, **kw)
    if weights is not None:
        loss, grad = loss * weights, grad * weights
    if reduction == "none":
        return loss, grad * (upstream if upstream is not None else 1.0)
    if reduction == "sum":
        return loss.sum(), grad
    return loss.sum() / loss.size, grad / loss.size


@needs_xla_kernel
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha", list(ALPHAS), ids=list(ALPHAS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_custom_call_matches_reference(dtype, alpha, reduction):
    """Every gamma, with and without label smoothing and [B, 1] weights."""
    x, y = _data(soft=alpha == "vector")
    xt = tf.cast(tf.constant(x), dtype)
    x64 = tf.cast(xt, tf.float64).numpy()
    rng = np.random.default_rng(1)
    upstream = rng.normal(0, 1, x.shape).astype(np.float32) if reduction == "none" else None
    weights = rng.random((x.shape[0], 1)).astype(np.float32)
    for gamma in GAMMAS:
        for ls, w in ((0.0, None), (0.1, weights)):
            kw = dict(gamma=gamma, alpha=ALPHAS[alpha], label_smoothing=ls)
            loss, grad = _xla_loss_and_grad(upstream=upstream, reduction=reduction,
                                            sample_weight=w, **kw)(xt, y)
            want, want_g = _reference(x64, y, reduction, w, upstream, **kw)
            what = f"{dtype.name} alpha={alpha} gamma={gamma} ls={ls} weights={w is not None}"
            assert loss.dtype == tf.float32 and grad.dtype == dtype, what
            tol = tolerance(tf.float32)
            if reduction != "none":  # a sum of positive terms: relative to the total
                tol = dict(rtol=2e-6, atol=0.0)
            assert_close(loss, want, **tol, what=f"loss {what}")
            g_tol = dict(tolerance(dtype))
            g_tol["atol"] = max(g_tol["atol"], 2e-6 * float(np.abs(want_g).max()))
            assert_close(grad, want_g, **g_tol, what=f"grad {what}")


@needs_xla_kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_custom_call_equals_native_and_tf_paths(dtype):
    """The three paths (graph native op, XLA custom call, pure TF under XLA)
    agree element for element within one rounding of the dtype."""
    x, y = _data(rows=3 * 16384 // C + 7, seed=3)  # several blocks and a ragged tail
    xt = tf.cast(tf.constant(x), dtype)
    w = np.random.default_rng(4).random(x.shape).astype(np.float32)
    kw = dict(gamma=2.0, alpha=ALPHAS["vector"], reduction="sum", sample_weight=w)

    @tf.function
    def graph(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fusedfocal.sigmoid_focal_loss(x, y, implementation="native", **kw)
        return loss, tape.gradient(loss, x)

    lc, gc = _xla_loss_and_grad(**kw)(xt, y)
    ln, gn = graph(xt, y)
    lt, gt = _xla_loss_and_grad(implementation="xla", **kw)(xt, y)
    np.testing.assert_array_equal(lc.numpy(), ln.numpy())  # same kernel, same block order
    np.testing.assert_array_equal(tf.cast(gc, tf.float32).numpy(), tf.cast(gn, tf.float32).numpy())
    np.testing.assert_allclose(lc.numpy(), lt.numpy(), rtol=1e-5)
    eps = {tf.float16: 2**-10, tf.bfloat16: 2**-7}.get(dtype, 2e-6)
    g1, g2 = tf.cast(gc, tf.float64).numpy(), tf.cast(gt, tf.float64).numpy()
    np.testing.assert_allclose(g1, g2, rtol=eps, atol=1e-6 * np.abs(g2).max())


@needs_xla_kernel
def test_optimized_hlo_has_the_custom_call_and_the_fallback_has_none():
    x, y = _data()
    x = tf.constant(x)
    hlo = _xla_loss_and_grad(reduction="sum").experimental_get_compiler_ir(x, y)(stage="optimized_hlo")
    assert 'custom_call_target="fusedfocal_focal_loss"' in hlo
    assert "api_version=API_VERSION_TYPED_FFI" in hlo
    assert hlo.count("custom-call(") == 1  # one call: loss and gradient together
    tf_hlo = _xla_loss_and_grad("xla", reduction="sum").experimental_get_compiler_ir(x, y)(
        stage="optimized_hlo")
    assert "custom-call" not in tf_hlo and "fusedfocal_focal_loss" not in tf_hlo


@needs_xla_kernel
def test_bad_alpha_is_an_error_at_trace_and_at_lowering():
    """Shape checks run in the op's shape function (static shapes) and again
    in the XLA lowering (shapes known only there): an error, never a crash."""
    ops = native.load()
    x, y = _data()
    f = tf.function(jit_compile=True)(
        lambda x, y, a: ops.fused_focal_loss_grad(x, y, a, [], gamma=2.0))
    with pytest.raises(ValueError, match="alpha must have 0"):
        f(tf.constant(x), tf.constant(y), tf.ones([C + 1]))
    g = tf.function(jit_compile=True, input_signature=[
        tf.TensorSpec([None, C]), tf.TensorSpec([None, C]), tf.TensorSpec([None])])(
        lambda x, y, a: ops.fused_focal_loss_grad(x, y, a, [], gamma=2.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must be of shape"):
        g(tf.constant(x), tf.constant(y), tf.ones([C + 1]))


def test_without_xla_kernel_falls_back(monkeypatch):
    """A library without the XLA kernel (an older build or `--xla off`):
    "auto" quietly runs the pure-TF path under XLA, "native" warns once."""
    if native.load() is not None:
        monkeypatch.setitem(native._state, "xla_cpu_kernel", False)
    x, y = _data()
    x = tf.constant(x)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        auto = _xla_loss_and_grad(reduction="mean")
        la, ga = auto(x, y)
    assert not [w for w in rec if issubclass(w.category, RuntimeWarning)]
    assert "fusedfocal_focal_loss" not in auto.experimental_get_compiler_ir(x, y)(stage="hlo")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ln, gn = _xla_loss_and_grad("native", reduction="mean")(x, y)
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1
    assert "XLA" in msgs[0] and ("build_kernels.py" in msgs[0] or "not built" in msgs[0])
    lx, gx = _xla_loss_and_grad("xla", reduction="mean")(x, y)
    np.testing.assert_array_equal(la.numpy(), lx.numpy())
    np.testing.assert_array_equal(gn.numpy(), gx.numpy())


@needs_xla_kernel
@pytest.mark.slow
def test_library_loaded_after_an_xla_compile(tmp_path):
    """REGISTER_KERNEL_BUILDER, not REGISTER_XLA_OP: a library loaded after the
    process's first XLA compile still lowers into the custom call."""
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        f = tf.function(jit_compile=True)(lambda x: tf.reduce_sum(tf.exp(x)))
        f(tf.ones([4, 3]))  # the first XLA compile of the process
        import fusedfocal
        from fusedfocal.ops import native
        assert native.load() is not None and native.has_xla_kernel()
        x = tf.constant(np.linspace(-9, 9, 39, dtype=np.float32).reshape(13, 3))
        y = tf.constant((np.arange(39) % 3 == 0).astype(np.float32).reshape(13, 3))
        g = tf.function(jit_compile=True)(
            lambda x: fusedfocal.sigmoid_focal_loss(x, y, reduction="sum"))
        hlo = g.experimental_get_compiler_ir(x)(stage="optimized_hlo")
        want = fusedfocal.sigmoid_focal_loss(x, y, reduction="sum", implementation="xla")
        np.testing.assert_allclose(g(x).numpy(), want.numpy(), rtol=1e-6)
        print("CUSTOM_CALL" if "fusedfocal_focal_loss" in hlo else "NO_CUSTOM_CALL")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "CUSTOM_CALL"


# ------------------------------------------------------------ Keras ----

def _keras_spy(monkeypatch):
    calls = []
    orig = native.native_focal_loss

    def wrapped(*args, **kwargs):
        calls.append((args[0].dtype, args[5], kwargs.get("weights", args[6] if len(args) > 6 else None)
                      is not None))
        return orig(*args, **kwargs)

    monkeypatch.setattr(native, "native_focal_loss", wrapped)
    return calls


@needs_xla_kernel
@pytest.mark.parametrize("weights", [None, "rows", "elements"])
def test_keras3_fit_jit_compile_uses_the_kernel_reduction(weights, monkeypatch, tmp_path):
    import keras

    calls = _keras_spy(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 6)).astype(np.float32)
    y = (rng.random((64, C)) < 0.3).astype(np.float32)
    sw = {None: None, "rows": rng.random(64).astype(np.float32),
          "elements": rng.random((64, C)).astype(np.float32)}[weights]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(C)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True,
                  loss=fusedfocal.SigmoidFocalLoss(gamma=2.0, alpha=ALPHAS["vector"]))
    hist = model.fit(x, y, sample_weight=sw, epochs=8, batch_size=16, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    # The kernel's own reduction ("mean" = Keras' sum_over_batch_size), weights inside.
    assert calls and all(c[1] == "mean" and c[2] == (weights is not None) for c in calls), calls
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


@needs_xla_kernel
def test_tf_keras_fit_jit_compile_uses_the_kernel_reduction(monkeypatch, tmp_path):
    import tf_keras

    from fusedfocal import legacy

    calls = _keras_spy(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 6)).astype(np.float32)
    y = (rng.random((64, C)) < 0.3).astype(np.float32)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(C)])
    model.compile(optimizer=tf_keras.optimizers.Adam(0.05), jit_compile=True,
                  loss=legacy.SigmoidFocalLoss(gamma=2.0, alpha=0.25))
    hist = model.fit(x, y, sample_weight=rng.random(64).astype(np.float32), epochs=8,
                     batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.8 * hist.history["loss"][0]
    assert calls and all(c[1] == "mean" and c[2] for c in calls)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = tf_keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("cls_name", ["SigmoidFocalLoss", "BCELoss", "ClassBalancedFocalLoss"])
@pytest.mark.parametrize("framework", ["keras3", "tf_keras"])
def test_class_fused_reduction_equals_keras_reduction(framework, cls_name):
    """Each reduction x weight form: the kernel-side reduction gives Keras'
    own result, value and gradient (eager, graph and XLA)."""
    import tf_keras

    from fusedfocal import legacy

    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(0, 4, (24, C)).astype(np.float32))
    y = (rng.random((24, C)) < 0.3).astype(np.float32)
    if framework == "keras3":
        cls, reds = getattr(fusedfocal, cls_name), ["sum", "sum_over_batch_size", "mean",
                                                     "mean_with_sample_weight"]
    else:
        R_ = tf_keras.losses.Reduction
        cls, reds = getattr(legacy, cls_name), [R_.SUM, R_.AUTO, R_.SUM_OVER_BATCH_SIZE]
    kwargs = {"SigmoidFocalLoss": dict(gamma=2.0, alpha=0.25), "BCELoss": dict(label_smoothing=0.1),
              "ClassBalancedFocalLoss": dict(class_counts=list(range(1, C + 1)), beta=0.99)}[cls_name]
    assert cls.fused_reduction
    for red in reds:
        for sw in (None, rng.random(24).astype(np.float32), rng.random((24, C)).astype(np.float32)):
            loss_obj = cls(reduction=red, **kwargs)
            results = []
            for fused in (True, False):
                type(loss_obj).fused_reduction = fused
                try:
                    for jit in (None, False, True):
                        def run(x):
                            with tf.GradientTape() as tape:
                                tape.watch(x)
                                loss = loss_obj(y, x, sample_weight=sw)
                            return loss, tape.gradient(loss, x)
                        f = run if jit is None else tf.function(run, jit_compile=jit)
                        results.append(f(x))
                finally:
                    type(loss_obj).fused_reduction = True
            ref_l, ref_g = results[3]  # Keras' own path, eager
            for i, (l, g) in enumerate(results):
                what = f"{framework} {red} weights={None if sw is None else sw.shape} case={i}"
                assert l.dtype == ref_l.dtype, what
                np.testing.assert_allclose(l.numpy(), ref_l.numpy(), rtol=2e-6, err_msg=what)
                np.testing.assert_allclose(g.numpy(), ref_g.numpy(), rtol=1e-5,
                                           atol=1e-6 * np.abs(ref_g.numpy()).max(), err_msg=what)
