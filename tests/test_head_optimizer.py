"""FocalHead(weight_dtype=...) and FocalHeadModel(head_optimizer=...) in Keras 3 and tf_keras:
the fused update equals a head trained by the same Keras optimizer (float32), the head's weights
leave compile's optimizer, bfloat16 storage trains, save/load and checkpoint resume give the same
next step as an uninterrupted run, bad arguments name themselves.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import fusedfocal.keras as k3
import fusedfocal.legacy as tk

FLAVOURS = {"keras3": (keras, k3), "tf_keras": (tf_keras, tk)}
B, V, H, C, CHUNK = 8, 50, 6, 37, 16


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request):
    return FLAVOURS[request.param]


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, V, (n, 5)).astype(np.int32)
    ids = [sorted(set(rng.integers(0, C, rng.integers(0, 4)).tolist())) for _ in range(n)]
    y = tf.ragged.constant(ids, dtype=tf.int64, ragged_rank=1)
    return x, y


def _dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(B)


def _model(lib, mod, head_optimizer=None, seed=0, **head_kwargs):
    lib.utils.set_random_seed(seed)
    encoder = lib.Sequential([lib.layers.Embedding(V, H), lib.layers.GlobalAveragePooling1D()])
    head = mod.FocalHead(C, chunk_size=CHUNK, top_k=3, **head_kwargs)
    return mod.FocalHeadModel(encoder, head, head_optimizer=head_optimizer)


def _head_arrays(model):
    return [np.asarray(tf.cast(w, tf.float32)) for w in model.head.float_weights()]


@pytest.mark.parametrize("name,rule,jit", [("keras3", "sgd", True), ("keras3", "adam", False),
                                           ("tf_keras", "adam", True), ("tf_keras", "sgd", False)])
def test_fused_head_matches_keras_optimizer_on_the_head(name, rule, jit):
    """Encoder frozen (so only the head moves): the head trained by the fused update equals the
    head trained by the same Keras optimizer through compile, over 3 steps (rtol 1e-5). Each
    flavour with each rule, graph and XLA split between them (tests/ops/test_head_update.py
    covers every rule in every mode at the op level)."""
    lib, mod = FLAVOURS[name]
    x, y = _data()
    make = {"sgd": lambda: lib.optimizers.SGD(0.5, momentum=0.9), "adam": lambda: lib.optimizers.Adam(0.05)}[rule]
    results = []
    for fused in (True, False):
        model = _model(lib, mod, head_optimizer=make() if fused else None)
        model.encoder.trainable = False
        model.compile(optimizer=make(), jit_compile=jit)
        model.fit(_dataset(x, y), epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
        results.append(_head_arrays(model))
        if fused:
            assert int(model.head.head_iterations.numpy()) == 3
            assert not any(w is model.head.kernel for w in model.trainable_weights)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_encoder_trains_and_head_is_not_in_compile_optimizer(flavour):
    lib, mod = flavour
    x, y = _data()
    model = _model(lib, mod, head_optimizer="sgd")
    model(x[:2])
    emb0 = model.encoder.weights[0].numpy().copy()
    kernel0 = model.head.kernel.numpy().copy()
    model.compile(optimizer=lib.optimizers.Adam(0.01))
    model.fit(_dataset(x, y), epochs=1, steps_per_epoch=2, verbose=0)
    assert {id(w) for w in model.trainable_weights}.isdisjoint({id(model.head.kernel), id(model.head.bias)})
    assert not np.allclose(model.encoder.weights[0].numpy(), emb0)  # compile's optimizer trained the encoder
    assert not np.allclose(model.head.kernel.numpy(), kernel0)  # the fused update trained the head
    assert int(model.head.head_iterations.numpy()) == 2


@pytest.mark.parametrize("name,jit", [("keras3", True), ("tf_keras", False)])
def test_bfloat16_head_trains_with_falling_loss(name, jit):
    lib, mod = FLAVOURS[name]
    x, y = _data(64)
    model = _model(lib, mod, head_optimizer={"optimizer": "adam", "learning_rate": 0.05,
                                             "moment_dtype": "bfloat16"}, weight_dtype="bfloat16")
    model.compile(optimizer=lib.optimizers.Adam(0.01), jit_compile=jit)
    hist = model.fit(_dataset(x, y), epochs=4, verbose=0).history["loss"]
    assert model.head.float_weights()[0].dtype == tf.bfloat16
    assert tf.as_dtype(model.head.kernel.dtype) == tf.uint16  # bfloat16 bits: updated in place under XLA
    assert hist[-1] < 0.8 * hist[0], hist
    out = model.predict(x[:4], verbose=0)
    assert out["ids"].shape == (4, 3) and np.all((out["ids"] >= 0) & (out["ids"] < C))


def test_save_load_and_checkpoint_resume_give_the_same_next_step(flavour, tmp_path):
    lib, mod = flavour
    x, y = _data()
    ds = _dataset(x, y)
    opt = {"optimizer": "adam", "learning_rate": 0.05}

    def build():
        m = _model(lib, mod, head_optimizer=opt)
        m.compile(optimizer=lib.optimizers.SGD(0.1))
        return m

    straight = build()
    straight.fit(ds, epochs=1, steps_per_epoch=4, verbose=0, shuffle=False)

    first = build()
    first.fit(ds.take(2), epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "head.weights.h5")
    first.save_weights(path)
    resumed = build()
    resumed(x[:1])
    resumed.optimizer.build(resumed.trainable_variables) if lib is keras else None
    resumed.load_weights(path)
    assert int(resumed.head.head_iterations.numpy()) == 2
    np.testing.assert_array_equal(resumed.head._head_state.slots["m"][0].numpy(), first.head._head_state.slots["m"][0].numpy())
    resumed.fit(ds.skip(2), epochs=1, verbose=0, shuffle=False)
    # SGD without momentum has no state, so the encoder resumes exactly too
    for a, b in zip(_head_arrays(resumed), _head_arrays(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(resumed.head.head_iterations.numpy()) == 4

    # the config carries the head optimizer and the weight dtype
    config = first.get_config()
    head_opt = config["head"]["config"]["head_optimizer"]
    assert head_opt["optimizer"] == "adam" and head_opt["learning_rate"] == 0.05
    clone = type(first).from_config(config)
    assert clone.head.head_optimizer == first.head.head_optimizer


def test_keras3_save_and_load_model_file(tmp_path):
    x, y = _data()
    model = _model(keras, k3, head_optimizer="sgd", weight_dtype="bfloat16")
    model.compile(optimizer="adam")
    model.fit(_dataset(x, y), epochs=1, steps_per_epoch=2, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.head.weight_dtype == "bfloat16" and loaded.head.head_optimizer.update.optimizer == "sgd"
    np.testing.assert_array_equal(loaded.predict(x[:4], verbose=0)["ids"], model.predict(x[:4], verbose=0)["ids"])
    assert int(loaded.head.head_iterations.numpy()) == 2


def test_learning_rate_schedule_follows_head_steps(flavour):
    lib, mod = flavour
    x, y = _data()
    sched = lib.optimizers.schedules.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.5)
    model = _model(lib, mod, head_optimizer={"optimizer": "sgd", "learning_rate": sched})
    assert model.head.head_optimizer.current_learning_rate(tf.constant(2, tf.int64)).numpy() == pytest.approx(0.125)
    model.compile(optimizer="sgd")
    model.fit(_dataset(x, y), epochs=1, steps_per_epoch=2, verbose=0)
    config = model.get_config()["head"]["config"]["head_optimizer"]
    again = type(model).from_config(model.get_config())
    assert callable(again.head.head_optimizer.learning_rate) and isinstance(config["learning_rate"], dict)


def test_bad_head_arguments_name_the_argument(flavour):
    lib, mod = flavour
    with pytest.raises(ValueError, match="`weight_dtype`.*Received: weight_dtype='float16'"):
        mod.FocalHead(C, weight_dtype="float16")
    with pytest.raises(ValueError, match="`weight_dtype`.*head optimizer"):
        mod.FocalHead(C, weight_dtype="bfloat16")(tf.zeros([1, H]))
    with pytest.raises(ValueError, match="`head_optimizer`.*Received: head_optimizer='rmsprop'"):
        _model(lib, mod, head_optimizer="rmsprop")
    with pytest.raises(ValueError, match="`head_optimizer`.*clipnorm"):
        _model(lib, mod, head_optimizer=lib.optimizers.SGD(0.1, clipnorm=1.0))
    with pytest.raises(ValueError, match="`head_optimizer`.*unknown key"):
        _model(lib, mod, head_optimizer={"optimizer": "sgd", "lr": 0.1})
    with pytest.raises(ValueError, match="head_optimizer.*momentum"):
        _model(lib, mod, head_optimizer={"optimizer": "sgd", "momentum": 1.5})
    head = mod.FocalHead(C)
    head(tf.zeros([1, H]))
    encoder = lib.Sequential([lib.layers.Embedding(V, H), lib.layers.GlobalAveragePooling1D()])
    with pytest.raises(ValueError, match="`head_optimizer`.*not built"):
        mod.FocalHeadModel(encoder, head, head_optimizer="sgd")


_MIRRORED = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, tf_keras
import fusedfocal.keras as k3, fusedfocal.legacy as tk
x = np.ones((8, 5), np.int32)
y = tf.ragged.constant([[1], [2, 3]] * 4, dtype=tf.int64)
for lib, mod in ((keras, k3), (tf_keras, tk)):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        enc = lib.Sequential([lib.layers.Embedding(10, 4), lib.layers.GlobalAveragePooling1D()])
        model = mod.FocalHeadModel(enc, mod.FocalHead(7), head_optimizer="sgd")
        model.compile(optimizer="sgd")
    try:
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    except ValueError as e:
        msg = str(e)
        print("REFUSED", lib.__name__, "`head_optimizer`" in msg and "2 replicas" in msg, msg[-300:].replace(chr(10), " "))
"""


@pytest.mark.slow
def test_head_optimizer_refused_under_mirrored_strategy(tmp_path):
    """Each replica would update its own copy of the head: a clear error naming the argument
    (2 logical CPU devices, in a subprocess: they must be configured before TF starts)."""
    import os
    import subprocess
    import sys
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = [line for line in proc.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 2, proc.stdout + proc.stderr[-2000:]
    for line in refused:
        assert line.split()[2] == "True", line
