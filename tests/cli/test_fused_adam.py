"""FusedAdam (fusedfocal.cli.stages.optim): Keras 3 Adam's update in TensorFlow's one fused kernel, the same
numbers as keras.optimizers.Adam."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras

from fusedfocal.cli.stages.optim import FusedAdam


def _run(cls, grads, w0, **kw):
    v = keras.Variable(w0)
    opt = cls(**kw)
    for g in grads:
        opt.apply_gradients([(g, v)])
    return v.numpy(), opt


@pytest.mark.parametrize("kw", [dict(learning_rate=0.01), dict(learning_rate=0.003, epsilon=9e-6, beta_1=0.8),
                                dict(learning_rate=0.01, weight_decay=0.1), dict(learning_rate=0.01, amsgrad=True)],
                         ids=["default", "epsilon-beta", "weight-decay", "amsgrad-fallback"])
def test_same_steps_as_keras_adam(kw):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(300, 16)).astype("float32")
    grads = [tf.constant(rng.normal(size=w0.shape).astype("float32") * s) for s in (1e-3, 1.0, 1e-6, 0.1)]
    ref, _ = _run(keras.optimizers.Adam, grads, w0, **kw)
    got, opt = _run(FusedAdam, grads, w0, **kw)
    assert np.abs(ref - w0).max() > 1e-3  # it moved
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == len(grads)


def test_sparse_gradients_as_keras_adam():
    """An embedding's IndexedSlices gradient (rows repeated), as the n-gram bag's kernel gets."""
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(50, 8)).astype("float32")
    grads = [tf.IndexedSlices(tf.constant(rng.normal(size=(6, 8)).astype("float32")),
                              tf.constant([3, 7, 3, 49, 0, 7]), tf.constant([50, 8])) for _ in range(3)]
    ref, _ = _run(keras.optimizers.Adam, grads, w0, learning_rate=0.01)
    got, _ = _run(FusedAdam, grads, w0, learning_rate=0.01)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_in_a_compiled_model_and_saved():
    x = np.random.default_rng(2).normal(size=(64, 5)).astype("float32")
    y = (x[:, :3] > 0).astype("float32")
    out = {}
    for cls in (keras.optimizers.Adam, FusedAdam):
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        m.compile(cls(0.05), keras.losses.BinaryCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        out[cls.__name__] = m.get_weights()
    for a, b in zip(out["Adam"], out["FusedAdam"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    cfg = keras.saving.serialize_keras_object(FusedAdam(0.02, epsilon=9e-6))
    back = keras.saving.deserialize_keras_object(cfg)
    assert isinstance(back, FusedAdam) and back.epsilon == pytest.approx(9e-6)


def test_one_model_after_another():
    """A comparison trains model after model in one process: each optimizer's fused update is its own."""
    x = np.random.default_rng(3).normal(size=(32, 4)).astype("float32")
    y = (x[:, :2] > 0).astype("float32")
    for _ in range(3):
        keras.backend.clear_session()
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        m.compile(FusedAdam(0.05), keras.losses.BinaryCrossentropy(from_logits=True))
        before = m.get_weights()[0].copy()
        m.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.abs(m.get_weights()[0] - before).max() > 0


def test_the_command_line_uses_it_where_the_step_has_no_xla():
    from fusedfocal.cli import resolve
    from fusedfocal.cli.commands.one_run import optimizer
    from fusedfocal.cli.parser import build_parser

    parser = build_parser()[0]

    def opt(*flags):
        return optimizer(resolve.spec(parser.parse_args(["train", "--optimizer", "adam", "--learning-rate", "0.01",
                                                         "--adam-epsilon", "9e-6", *flags]), "train"))
    fused = opt("--model", "ngram")  # tf.unique keeps the n-gram step off XLA
    assert type(fused) is FusedAdam and fused.epsilon == pytest.approx(9e-6)
    assert type(opt("--model", "ngram", "--jit-compile", "off")) is keras.optimizers.Adam  # no XLA at all
    assert type(opt("--model", "cnn")) is keras.optimizers.Adam  # an XLA step fuses Keras' Adam itself


_ON_ANOTHER_DEVICE = """
import numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from fusedfocal.cli.stages.optim import FusedAdam
rng = np.random.default_rng(2)
w0 = rng.normal(size=(30, 4)).astype("float32")
grads = [tf.constant(rng.normal(size=w0.shape).astype("float32")) for _ in range(3)]
out = []
for cls in (keras.optimizers.Adam, FusedAdam):
    with tf.device("/device:CPU:1"):
        v = keras.Variable(w0)
    opt = cls(learning_rate=0.01)
    step = tf.function(lambda g: opt.apply_gradients([(g, v)]))
    for g in grads:
        step(g)
    out.append(v.numpy())
assert v.value.device.endswith("CPU:1"), v.value.device
assert all(s.value.device.endswith("CPU:1") for s in opt.variables[2:]), [s.value.device for s in opt.variables]
np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-6)
print("OK")
"""


def test_a_variable_on_another_device_is_updated_there():
    """A label shard's kernel on a second (logical) device, trained by compile's optimizer: its slots
    are created there and the XLA-compiled update runs there (from the caller's device it fails:
    "Trying to access resource ... located in device CPU:1 from device CPU:0"). A subprocess:
    logical devices are set before TensorFlow starts."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _ON_ANOTHER_DEVICE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-3000:]
