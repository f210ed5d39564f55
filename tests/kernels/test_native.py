"""The native op (kernels/, built by scripts/build_kernels.py) and its dispatch.

Parity tests skip when the library is not built; the fallback and XLA-context
tests always run.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reference as R  # noqa: E402
from _testing import value_and_grad  # noqa: E402

import fusedfocal  # noqa: E402
from fusedfocal.ops import native  # noqa: E402

native.reset()
BUILT = native.load() is not None
needs_lib = pytest.mark.skipif(
    not BUILT, reason=f"native op not built ({native.library_path}): run "
                      "`python scripts/build_kernels.py`")

DTYPES = [tf.float16, tf.bfloat16, tf.float32]
GAMMAS = [0.0, 0.5, 1.0, 2.0, 3.7]
C = 19


def alpha_forms():
    return [None, 0.25, np.linspace(0.1, 0.9, C)]


@pytest.fixture(autouse=True)
def _fresh_loader(monkeypatch):
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.delenv("FUSEDFOCAL_CPU_ISA", raising=False)
    native.reset()
    yield
    native.reset()


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls that took the native path."""
    calls = []
    orig = native.native_focal_loss

    def wrapped(*args, **kwargs):
        calls.append(args[0].dtype)
        return orig(*args, **kwargs)

    monkeypatch.setattr(native, "native_focal_loss", wrapped)
    return calls


def data(shape=(67, C), soft=False, scale=6.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    y = rng.random(shape) if soft else (rng.random(shape) < 0.3)
    return x, y.astype(np.float32)


def loss_and_grad(x, y, dtype=tf.float32, **kw):
    x = tf.cast(tf.convert_to_tensor(x), dtype)
    return value_and_grad(lambda z: fusedfocal.sigmoid_focal_loss(z, y, **kw), x)


def close(actual, expected, dtype=tf.float32, what=""):
    """rtol 2e-6 and atol 1e-6*max|ref| in float32; one ulp of the dtype else."""
    a = tf.cast(actual, tf.float64).numpy()
    e = tf.cast(expected, tf.float64).numpy()
    eps = {tf.float16: 2**-10, tf.bfloat16: 2**-7}.get(dtype, 2e-6)
    atol = 1e-6 * max(np.abs(e).max(), 1e-30) + (6e-8 if dtype == tf.float16 else 0.0)
    np.testing.assert_allclose(a, e, rtol=eps, atol=atol, err_msg=what)


# ---------------------------------------------------------------- parity ----

@needs_lib
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", alpha_forms(), ids=["none", "float", "vector"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_native_matches_xla(dtype, gamma, alpha, ls, spy):
    x, y = data(soft=ls > 0)
    kw = dict(gamma=gamma, alpha=alpha, label_smoothing=ls)
    ln, gn = loss_and_grad(x, y, dtype, implementation="native", **kw)
    lx, gx = loss_and_grad(x, y, dtype, implementation="xla", **kw)
    assert spy == [dtype]
    assert gn.dtype == dtype and ln.dtype == tf.float32
    close(ln, lx, tf.float32, "loss")
    close(gn, gx, dtype, "grad")


@needs_lib
@pytest.mark.parametrize("gamma", GAMMAS + [20.5])
@pytest.mark.parametrize("alpha", alpha_forms(), ids=["none", "float", "vector"])
@pytest.mark.parametrize("ls", [0.0, 0.2])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_native_matches_float64_reference(gamma, alpha, ls, soft):
    x, y = data(soft=soft)
    kw = dict(gamma=gamma, alpha=alpha, label_smoothing=ls)
    loss, grad = loss_and_grad(x, y, implementation="native", **kw)
    close(loss, R.sigmoid_focal(x.astype(np.float64), y, **kw), what="loss")
    close(grad, R.sigmoid_focal_grad(x.astype(np.float64), y, **kw), what="grad")


@needs_lib
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions_match_xla(dtype, reduction, spy):
    x, y = data(shape=(3 * 16384 // C + 5, C))  # several shards and a ragged tail
    kw = dict(gamma=2.0, alpha=np.linspace(0.1, 0.9, C), reduction=reduction)
    ln, gn = loss_and_grad(x, y, dtype, implementation="native", **kw)
    lx, gx = loss_and_grad(x, y, dtype, implementation="xla", **kw)
    assert spy == [dtype] and ln.shape == []
    np.testing.assert_allclose(ln.numpy(), lx.numpy(), rtol=1e-5)
    close(gn, gx, dtype, "grad")


@needs_lib
@pytest.mark.parametrize("isa", ["sse2", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_every_instruction_set(isa, dtype, monkeypatch):
    """FUSEDFOCAL_CPU_ISA lowers the run-time choice, so each copy is tested."""
    monkeypatch.setenv("FUSEDFOCAL_CPU_ISA", isa)
    x, y = data(shape=(101, 13), soft=True, seed=3)
    kw = dict(gamma=3.7, alpha=np.linspace(0.1, 0.9, 13), label_smoothing=0.1)
    ln, gn = loss_and_grad(x, y, dtype, implementation="native", **kw)
    lx, gx = loss_and_grad(x, y, dtype, implementation="xla", **kw)
    close(ln, lx, tf.float32, "loss")
    close(gn, gx, dtype, "grad")


@needs_lib
@pytest.mark.parametrize(
    "shape,alpha",
    [((2, 3, 5), 0.3), ((40, 1), None), ((0, 7), 0.3), ((5, 0), None), ((3, 20011), "vector"),
     ((4099, 7), "vector"), ((17,), None)],
    ids=["rank3", "C=1", "empty-batch", "C=0", "C>block", "tiled-alpha", "rank1"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_shapes(shape, alpha, reduction, spy):
    x, y = data(shape=shape, seed=1)
    if alpha == "vector":
        alpha = np.linspace(0.0, 1.0, shape[-1])
    kw = dict(gamma=2.0, alpha=alpha, reduction=reduction)
    ln, gn = loss_and_grad(x, y, implementation="native", **kw)
    lx, gx = loss_and_grad(x, y, implementation="xla", **kw)
    assert spy == [tf.float32]
    assert ln.shape == lx.shape and gn.shape == x.shape
    np.testing.assert_allclose(ln.numpy(), lx.numpy(), rtol=1e-5, atol=1e-6)
    if x.size:
        close(gn, gx, what="grad")


@needs_lib
def test_broadcast_labels_and_tf_function(spy):
    x, _ = data(shape=(8, C))
    y = np.zeros([C], np.float32)
    y[3] = 1
    f = tf.function(lambda x: loss_and_grad(x, y, implementation="auto", reduction="sum"))
    ln, gn = f(tf.constant(x))
    lx, gx = loss_and_grad(x, y, implementation="xla", reduction="sum")
    assert spy == [tf.float32]
    np.testing.assert_allclose(ln.numpy(), lx.numpy(), rtol=1e-6)
    close(gn, gx)


# -------------------------------------------------------------- extremes ----

@needs_lib
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
def test_extreme_logits_finite(dtype, gamma):
    big = [100.0, 1e4, float(np.finfo(np.float16).max)]
    x = np.array([[s * v for v in big for s in (1, -1)] + [0.0, 1e-6]] * 3, np.float32)
    y = np.stack([np.zeros(x.shape[1]), np.ones(x.shape[1]), np.full(x.shape[1], 0.5)])
    y = y.astype(np.float32)
    loss, grad = loss_and_grad(x, y, dtype, gamma=gamma, alpha=0.25, implementation="native")
    assert np.all(np.isfinite(loss.numpy()))
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    lx, gx = loss_and_grad(x, y, dtype, gamma=gamma, alpha=0.25, implementation="xla")
    close(loss, lx, tf.float32, "loss")
    close(grad, gx, dtype, "grad")
    # wrong-side logits keep a gradient of magnitude alpha_t (no dead gradient)
    g = tf.cast(grad, tf.float32).numpy()
    assert abs(g[1, 1]) > 0.2 and abs(g[0, 0]) > 0.5  # y=1, x=-100 / y=0, x=+100


# ------------------------------------------------------- fallback/dispatch ----

def test_float64_falls_back(spy):
    x, y = data()
    x64 = x.astype(np.float64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        la, ga = loss_and_grad(x64, y, tf.float64)
        assert not [w for w in rec if issubclass(w.category, RuntimeWarning)]
        ln, gn = loss_and_grad(x64, y, tf.float64, implementation="native")
        loss_and_grad(x64, y, tf.float64, implementation="native")
    assert spy == []
    assert la.dtype == tf.float64
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1  # once: "float64 unsupported", or "not built"
    np.testing.assert_array_equal(ln.numpy(), la.numpy())
    np.testing.assert_array_equal(gn.numpy(), ga.numpy())


def test_missing_library_warns_once_under_auto_and_once_when_requested(monkeypatch, tmp_path, spy):
    monkeypatch.setattr(native, "library_path", str(tmp_path / "_fused_focal_ops.so"))
    monkeypatch.delenv(native.WARNING_ENV_VAR, raising=False)
    x, y = data()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        la, ga = loss_and_grad(x, y)  # auto: the fallback is never silent
        loss_and_grad(x, y)
        assert len(rec) == 1 and "fusedfocal info" in str(rec[0].message)
        assert "0.84-0.97x" in str(rec[0].message) and native.WARNING_ENV_VAR in str(rec[0].message)
        for _ in range(3):
            ln, gn = loss_and_grad(x, y, implementation="native")
    assert spy == []
    assert len(rec) == 2 and all(w.category is RuntimeWarning for w in rec)
    assert "implementation='native'" in str(rec[1].message)
    assert "scripts/build_kernels.py" in str(rec[1].message)
    assert "pip install --no-binary fusedfocal" in str(rec[1].message)
    assert rec[0].filename == rec[1].filename == __file__  # points at the caller
    lx, gx = loss_and_grad(x, y, implementation="xla")
    np.testing.assert_array_equal(ln.numpy(), lx.numpy())
    np.testing.assert_array_equal(gn.numpy(), gx.numpy())


def test_broken_library_warns_once_even_under_auto(monkeypatch, tmp_path, spy):
    bad = tmp_path / "_fused_focal_ops.so"
    bad.write_bytes(b"\x7fELF not really a shared library")
    monkeypatch.setattr(native, "library_path", str(bad))
    x, y = data()
    with pytest.warns(RuntimeWarning, match="failed to load.*build_kernels.py") as rec:
        ln, gn = loss_and_grad(x, y)
        loss_and_grad(x, y)
    assert len([w for w in rec if w.category is RuntimeWarning]) == 1
    assert spy == []
    lx, gx = loss_and_grad(x, y, implementation="xla")
    np.testing.assert_array_equal(ln.numpy(), lx.numpy())
    np.testing.assert_array_equal(gn.numpy(), gx.numpy())


def test_env_var_and_bad_values(monkeypatch, spy):
    x, y = data(shape=(4, 3))
    monkeypatch.setenv(native.ENV_VAR, "xla")
    loss_and_grad(x, y)
    assert spy == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "not built", without the .so
        loss_and_grad(x, y, implementation="native")  # the keyword wins over the env var
    assert spy == ([tf.float32] if BUILT else [])
    monkeypatch.setenv(native.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="FUSEDFOCAL_IMPLEMENTATION"):
        loss_and_grad(x, y)
    monkeypatch.delenv(native.ENV_VAR)
    with pytest.raises(ValueError, match="Invalid value for argument `implementation`"):
        loss_and_grad(x, y, implementation="fast")


@pytest.mark.parametrize("implementation", ["auto", "native"])
def test_jit_compile_uses_the_custom_call(implementation, spy):
    """Inside XLA the native op is used when the library has its XLA kernel
    (it lowers to the fusedfocal_focal_loss custom call); without a library
    the XLA path runs, with one warning only for "native"."""
    x, y = data()
    f = tf.function(
        lambda x: loss_and_grad(x, y, gamma=0.5, reduction="mean",
                                implementation=implementation), jit_compile=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        lj, gj = f(tf.constant(x))
    has_xla = BUILT and native.has_xla_kernel()
    assert spy == ([tf.float32] if has_xla else [])
    runtime = [w for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == (1 if implementation == "native" and not has_xla else 0)
    lx, gx = loss_and_grad(x, y, gamma=0.5, reduction="mean", implementation="xla")
    np.testing.assert_allclose(lj.numpy(), lx.numpy(), rtol=1e-6)
    close(gj, gx)


def test_keras_jit_compile_uses_the_custom_call(spy):
    import keras

    x, y = data(shape=(32, 5))
    for jit in (True, False):
        del spy[:]
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(5)])
        model.compile(optimizer="sgd", jit_compile=jit,
                      loss=lambda yt, yp: fusedfocal.sigmoid_focal_loss(yp, yt, reduction="mean"))
        hist = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
        native_used = BUILT and (not jit or native.has_xla_kernel())
        assert spy == ([tf.float32] if native_used else [])


@needs_lib
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_grad_may_take_over_the_logits_buffer(dtype):
    """The op forwards the logits buffer to grad when nothing else holds it
    (a temporary in a graph); results must not change."""
    x, y = data(shape=(300, 7), seed=5)
    ops = native.load()
    alpha = tf.constant(0.25)

    @tf.function
    def temp_logits(x):
        loss, grad = ops.fused_focal_loss_grad(tf.cast(x * 2.0, dtype), y, alpha, [], gamma=2.0,
                                               reduction="sum")
        return loss, grad

    ln, gn = temp_logits(tf.constant(x))
    lx, gx = loss_and_grad(2.0 * x, y, dtype, gamma=2.0, alpha=0.25, reduction="sum",
                           implementation="xla")
    np.testing.assert_allclose(ln.numpy(), lx.numpy(), rtol=1e-5)
    close(gn, gx, dtype, "grad")
