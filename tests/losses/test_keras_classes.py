"""Keras 3 and tf_keras classes: registry, config round trips, save/load."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import fusedfocal
from _helpers import C, COUNTS, NUM_DOCS
from fusedfocal import legacy
from fusedfocal import losses as L

PW = list(np.linspace(0.5, 3.0, C))
ALPHA = list(np.linspace(0.2, 0.8, C))
# class name -> (constructor kwargs with vector parameters, label kind)
CASES = {
    "BCELoss": (dict(label_smoothing=0.1), "multi"),
    "WeightedBCELoss": (dict(pos_weight=PW), "multi"),
    "AsymmetricLoss": (dict(gamma_pos=1.0, gamma_neg=3.0, clip=0.1), "multi"),
    "ClassBalancedFocalLoss": (dict(class_counts=list(COUNTS), beta=0.99, alpha=ALPHA), "multi"),
    "DistributionBalancedLoss": (dict(class_counts=list(COUNTS), num_docs=NUM_DOCS, alpha=ALPHA), "multi"),
    "LogitAdjustedBCELoss": (dict(priors=list(L.priors_from_counts(COUNTS, NUM_DOCS)), tau=0.5), "multi"),
    "Poly1FocalLoss": (dict(epsilon=0.5, alpha=ALPHA), "multi"),
    "DiceLoss": (dict(smooth=0.5, per_class=False), "multi"),
    "TverskyLoss": (dict(alpha=0.2, beta=0.8), "multi"),
    "SquaredHingeLoss": (dict(), "multi"),
    "LogCoshLoss": (dict(), "multi"),
    "CategoricalFocalLoss": (dict(gamma=0.5, alpha=ALPHA), "onehot"),
    "SparseCategoricalFocalLoss": (dict(gamma=1.0, ignore_index=-1), "sparse"),
}

_RNG = np.random.default_rng(3)
B = 6
XIN = _RNG.normal(size=(B, 4)).astype(np.float32)
LOGITS = _RNG.normal(0, 2, (B, C)).astype(np.float32)
MULTI = (_RNG.random((B, C)) < 0.4).astype(np.float32)
IDS = _RNG.integers(0, C, B)
LABELS = {"multi": MULTI, "onehot": np.eye(C, dtype=np.float32)[IDS], "sparse": IDS.astype(np.int32)}


def _same_config(a, b):
    assert json.loads(json.dumps(a)) == json.loads(json.dumps(b))


@pytest.mark.parametrize("module", [fusedfocal.keras, legacy], ids=["keras3", "tf_keras"])
def test_config_round_trip_and_values(module):
    for name, (kw, kind) in CASES.items():
        loss = getattr(module, name)(**kw)
        cfg = loss.get_config()
        for k, val in kw.items():
            assert cfg[k] == pytest.approx(val), (name, k)
        clone = type(loss).from_config(cfg)
        _same_config(clone.get_config(), cfg)
        y = LABELS[kind]
        a, b = loss(y, LOGITS), clone(y, LOGITS)
        assert np.isfinite(a.numpy()) and a.numpy() == pytest.approx(b.numpy(), rel=1e-6), name
        # [B] sample weights
        sw = np.linspace(0.0, 1.0, B).astype(np.float32)
        assert np.isfinite(loss(y, LOGITS, sample_weight=sw).numpy()), name


def test_functional_equals_class():
    x, y = LOGITS, MULTI
    pairs = [
        (fusedfocal.WeightedBCELoss(pos_weight=PW), L.weighted_binary_crossentropy(x, y, pos_weight=PW)),
        (fusedfocal.AsymmetricLoss(), L.asymmetric_loss(x, y)),
        (fusedfocal.TverskyLoss(), L.tversky_loss(x, y)),
        (fusedfocal.CategoricalFocalLoss(), L.categorical_focal_loss(x, LABELS["onehot"])),
    ]
    for loss, expected in pairs:
        yy = LABELS["onehot"] if isinstance(loss, fusedfocal.CategoricalFocalLoss) else y
        np.testing.assert_allclose(loss(yy, x).numpy(), np.mean(expected.numpy()), rtol=1e-6)
    # set losses: sample_weight weights the soft counts
    sw = np.linspace(0.0, 1.0, B).astype(np.float32)
    np.testing.assert_allclose(fusedfocal.DiceLoss()(y, x, sample_weight=sw).numpy(),
                               np.mean(L.dice_loss(x, y, weights=sw).numpy()), rtol=1e-6)


def _model(lib, names):
    inp = lib.Input((4,))
    outs = [lib.layers.Dense(C, name=f"o{i}")(inp) for i in range(len(names))]
    return lib.Model(inp, outs)


def test_keras3_save_load(tmp_path):
    names = list(CASES)
    model = _model(keras, names)
    losses = [getattr(fusedfocal.keras, n)(**CASES[n][0]) for n in names]
    model.compile("sgd", loss=losses, jit_compile=False)
    ys = [LABELS[CASES[n][1]] for n in names]
    before = model.evaluate(XIN, ys, verbose=0)
    path = tmp_path / "all_losses.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    after = loaded.evaluate(XIN, ys, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-5)
    for orig, new in zip(losses, loaded.loss):
        assert type(new) is type(orig)
        _same_config(new.get_config(), orig.get_config())


def test_tf_keras_save_load(tmp_path):
    names = list(CASES)
    model = _model(tf_keras, names)
    losses = [getattr(legacy, n)(**CASES[n][0]) for n in names]
    model.compile("sgd", loss=losses)
    ys = [LABELS[CASES[n][1]] for n in names]
    before = model.evaluate(XIN, ys, verbose=0)
    path = str(tmp_path / "all_losses.keras")
    model.save(path)
    loaded = tf_keras.models.load_model(path)
    np.testing.assert_allclose(loaded.evaluate(XIN, ys, verbose=0), before, rtol=1e-5)
    for orig, new in zip(losses, loaded.loss):
        assert type(new) is type(orig)
        _same_config(new.get_config(), orig.get_config())


def test_registry():
    assert legacy.NAMES is fusedfocal.keras.NAMES
    for name, cls in fusedfocal.keras.NAMES.items():
        obj = fusedfocal.keras.get(name, class_counts=COUNTS, num_docs=NUM_DOCS)
        assert type(obj) is getattr(fusedfocal.keras, cls)
        assert type(legacy.get(name, class_counts=COUNTS, num_docs=NUM_DOCS)) is getattr(legacy, cls)
    wbce = fusedfocal.keras.get("wbce", class_counts=COUNTS, num_docs=NUM_DOCS)
    np.testing.assert_allclose(wbce.get_config()["pos_weight"], (NUM_DOCS - COUNTS) / np.maximum(COUNTS, 1))
    assert fusedfocal.keras.get("asl", gamma_neg=2.0).get_config()["gamma_neg"] == 2.0
    with pytest.raises(ValueError, match=r"Invalid value for argument `loss`. Expected one of \{.*\}. Received: loss='nope'"):
        fusedfocal.keras.get("nope")
    with pytest.raises(ValueError, match="Invalid value for argument `class_counts`"):
        fusedfocal.keras.get("cb")
    with pytest.raises(ValueError, match="Invalid value for argument `num_docs`"):
        fusedfocal.keras.get("db", class_counts=COUNTS)


def test_bad_arguments_in_init():
    with pytest.raises(ValueError, match="Invalid value for argument `gamma_pos`"):
        fusedfocal.AsymmetricLoss(gamma_pos=-1.0)
    with pytest.raises(ValueError, match="Invalid value for argument `beta`"):
        legacy.ClassBalancedFocalLoss(class_counts=COUNTS, beta=2.0)
    with pytest.raises(ValueError, match="Invalid value for argument `reduction`"):
        fusedfocal.DiceLoss(reduction="avg")


_SAVED = json.loads((Path(__file__).parent / "fixtures" / "saved_loss_configs.json").read_text())


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_configs_saved_by_earlier_versions_load(flavour):
    # Serialized by the hand-written classes (before the classes were built
    # from one declaration each): they must still load, as the same config.
    lib, module = (keras, fusedfocal.keras) if flavour == "keras3" else (tf_keras, legacy)
    for name, saved in _SAVED[flavour].items():
        loss = lib.saving.deserialize_keras_object(saved)
        assert type(loss) is getattr(module, name)
        again = json.loads(json.dumps(lib.saving.serialize_keras_object(loss)))
        # The same config, plus the Keras arguments added since (issue 29), at
        # their defaults: an old config keeps its old meaning.
        added = {k: again["config"].pop(k) for k in set(again["config"]) - set(saved["config"])}
        defaults = {k: p.default for k, p in inspect.signature(type(loss).__init__).parameters.items()}
        assert added == {k: defaults[k] for k in added}, (name, added)
        assert set(added) <= {"apply_class_balancing", "from_logits", "axis", "label_smoothing", "ignore_class"}, name
        _same_config(again, saved)
        assert np.isfinite(loss(LABELS[CASES.get(name, (0, "multi"))[1]], LOGITS).numpy())
