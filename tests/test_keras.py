"""SigmoidFocalLoss as a Keras 3 and a tf_keras loss: fit, save/load, weights,
mixed precision and MirroredStrategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import fusedfocal
import fusedfocal.legacy
import reference as ref

C = 5
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype(np.float32)
Y = (RNG.random((64, C)) < 0.25).astype(np.float32)
ALPHA = [0.1, 0.3, 0.5, 0.7, 0.9]

FLAVOURS = {
    "keras3": (keras, fusedfocal.SigmoidFocalLoss, keras.mixed_precision),
    "tf_keras": (tf_keras, fusedfocal.legacy.SigmoidFocalLoss, tf_keras.mixed_precision),
}


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request):
    return FLAVOURS[request.param]


def _model(k, out_dtype=None):
    k.utils.set_random_seed(0)
    inputs = k.Input((8,))
    hidden = k.layers.Dense(16, activation="relu")(inputs)
    logits = k.layers.Dense(C, dtype=out_dtype)(hidden)
    return k.Model(inputs, logits)


def test_fit_reduces_loss(flavour):
    k, Loss, _ = flavour
    model = _model(k)
    model.compile(k.optimizers.Adam(0.01), loss=Loss(gamma=2.0, alpha=ALPHA))
    history = model.fit(X, Y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert history[-1] < history[0]


def test_default_reduction_is_mean_over_elements(flavour):
    k, Loss, _ = flavour
    logits = RNG.normal(size=(6, C)).astype(np.float32)
    labels = Y[:6]
    want = ref.sigmoid_focal(logits.astype(np.float64), labels, gamma=2.0, alpha=0.25)
    got = Loss(gamma=2.0, alpha=0.25)(labels, logits)
    np.testing.assert_allclose(float(got), want.mean(), rtol=1e-6)


def test_sample_weight_per_example_and_per_label(flavour):
    k, Loss, _ = flavour
    logits = RNG.normal(size=(6, C)).astype(np.float32)
    labels = Y[:6]
    elem = ref.sigmoid_focal(logits.astype(np.float64), labels, gamma=2.0)
    loss = Loss(gamma=2.0)
    w_row = np.arange(1, 7, dtype=np.float32)  # [B]: one weight per example
    np.testing.assert_allclose(float(loss(labels, logits, sample_weight=w_row)),
                               (elem * w_row[:, None]).sum() / elem.size, rtol=1e-6)
    mask = (RNG.random((6, C)) < 0.7).astype(np.float32)  # [B, C]: 0 masks a label
    np.testing.assert_allclose(float(loss(labels, logits, sample_weight=mask)),
                               (elem * mask).sum() / elem.size, rtol=1e-6)


def test_mask_normalised_by_weight_sum_keras3():
    logits = RNG.normal(size=(6, C)).astype(np.float32)
    elem = ref.sigmoid_focal(logits.astype(np.float64), Y[:6], gamma=2.0)
    mask = (RNG.random((6, C)) < 0.5).astype(np.float32)
    loss = fusedfocal.SigmoidFocalLoss(reduction="mean_with_sample_weight")
    np.testing.assert_allclose(float(loss(Y[:6], logits, sample_weight=mask)),
                               (elem * mask).sum() / mask.sum(), rtol=1e-6)


def test_get_config_round_trip(flavour):
    k, Loss, _ = flavour
    loss = Loss(gamma=1.5, alpha=np.array(ALPHA), label_smoothing=0.1, name="ff")
    config = loss.get_config()
    assert config["alpha"] == ALPHA and config["gamma"] == 1.5 and config["label_smoothing"] == 0.1
    json.dumps(config)  # serialisable
    clone = Loss.from_config(config)
    assert clone.get_config() == config
    logits = RNG.normal(size=(4, C)).astype(np.float32)
    np.testing.assert_allclose(float(clone(Y[:4], logits)), float(loss(Y[:4], logits)), rtol=1e-7)


def test_save_and_load_without_custom_objects(flavour, tmp_path):
    k, Loss, _ = flavour
    model = _model(k)
    model.compile("adam", loss=Loss(gamma=3.0, alpha=ALPHA, label_smoothing=0.05))
    model.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = k.models.load_model(path)
    loss = loaded.loss
    assert isinstance(loss, Loss)
    assert loss.get_config()["alpha"] == ALPHA and loss.get_config()["gamma"] == 3.0
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)
    assert np.isclose(loaded.evaluate(X, Y, verbose=0), model.evaluate(X, Y, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("policy", ("mixed_float16", "mixed_bfloat16"))
@pytest.mark.parametrize("logits_dtype", (None, "float32"))
def test_mixed_precision_fit(flavour, policy, logits_dtype):
    k, Loss, mp = flavour
    mp.set_global_policy(policy)
    try:
        model = _model(k, out_dtype=logits_dtype)  # None: the logits stay float16/bfloat16
        optimizer = k.optimizers.Adam(0.01)
        if policy == "mixed_float16" and k is tf_keras:
            optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer, loss=Loss(gamma=2.0, alpha=0.25))
        history = model.fit(X, Y, epochs=3, batch_size=16, verbose=0).history["loss"]
        if policy == "mixed_float16" and k is keras:
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        mp.set_global_policy("float32")
    assert np.isfinite(history).all()
    assert history[-1] < history[0]


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    flavour = sys.argv[1]
    if flavour == "keras3":
        import keras as k
        from fusedfocal import SigmoidFocalLoss as Loss
    else:
        import tf_keras as k
        from fusedfocal.legacy import SigmoidFocalLoss as Loss
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (rng.random((64, 5)) < 0.25).astype("float32")

    def build():
        k.utils.set_random_seed(0)
        model = k.Sequential([k.Input((8,)), k.layers.Dense(16, activation="relu"), k.layers.Dense(5)])
        model.compile(k.optimizers.SGD(0.5), loss=Loss(gamma=2.0, alpha=[.1, .3, .5, .7, .9]))
        return model

    single = build()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build()
    assert strategy.num_replicas_in_sync == 2
    mirrored.set_weights(single.get_weights())
    out = {"eval": [float(single.evaluate(x, y, batch_size=32, verbose=0)),
                    float(mirrored.evaluate(x, y, batch_size=32, verbose=0))]}
    h1 = single.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history["loss"]
    h2 = mirrored.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history["loss"]
    out["fit"] = [h1, h2]
    out["weight_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights()))
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLAVOURS))
def test_mirrored_strategy_matches_single_device(name, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True,
                          timeout=300, env=env, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    single_eval, mirrored_eval = out["eval"]
    np.testing.assert_allclose(mirrored_eval, single_eval, rtol=1e-5)
    np.testing.assert_allclose(out["fit"][1], out["fit"][0], rtol=1e-4)
    assert out["weight_diff"] < 1e-4
