"""Keras drop-in (issue 29): the focal classes with Keras' arguments against live Keras.

``SigmoidFocalLoss``, ``CategoricalFocalLoss`` and ``SparseCategoricalFocalLoss``
given Keras' arguments equal live Keras 3 (``keras.losses.BinaryFocalCrossentropy``,
``CategoricalFocalCrossentropy``, ``SparseCategoricalCrossentropy`` for
``ignore_class``) and their tf_keras twins equal live tf_keras, over a grid of
inputs (logits and probabilities, clipped ones included), arguments, sample
weights and reductions, to 1e-5 relative. The new math (``apply_class_balancing``,
``from_logits=False``, categorical smoothing and ``axis``) is checked against
the float64 reference in value and gradient on every path (pure TF, native op,
eager / tf.function / XLA); config round trips and bad arguments close the file.
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import fusedfocal
import reference as ref
from _helpers import DTYPE_IDS, DTYPES, MODES, check_reference, configs_for
from _testing import assert_close
from fusedfocal import legacy
from fusedfocal import losses as L

RTOL = 1e-5
# Entries that both sides compute as ~1e-20 (a clipped probability times a
# focal factor of ~1e-14): relative error is meaningless there.
ATOL = 1e-7

_RNG = np.random.default_rng(29)
B, C, T = 8, 5, 3
LOGITS = _RNG.normal(0.0, 2.5, (B, C)).astype(np.float32)
LOGITS[0] = [-8.0, -3.0, 0.0, 3.0, 8.0]
# Probabilities, with values Keras clips (0, 1, within 1e-7 of them) in row 0.
PROBS = _RNG.uniform(0.01, 0.99, (B, C)).astype(np.float32)
PROBS[0] = [0.0, 1.0, 1e-9, 1.0 - 1e-9, 0.5]
HARD = (_RNG.random((B, C)) < 0.4).astype(np.float32)
HARD[0] = [1.0, 0.0, 1.0, 0.0, 1.0]  # a confident mistake at each clipped probability
SOFT = _RNG.random((B, C)).astype(np.float32)
IDS = _RNG.integers(0, C, B)
IDS[0] = 0  # the probability 0 is the true class: Keras' clip decides the value
ONEHOT = np.eye(C, dtype=np.float32)[IDS]
SOFTMAX_SOFT = _RNG.dirichlet(np.ones(C), B).astype(np.float32)
CAT_PROBS = _RNG.dirichlet(np.ones(C), B).astype(np.float32)
CAT_PROBS[0] = [0.0, 0.0, 1.0, 0.0, 0.0]  # Keras clips every entry of this row
WEIGHTS = {
    "none": None,
    "[B]": _RNG.uniform(0.0, 2.0, B).astype(np.float32),
    "[B,1]": _RNG.uniform(0.0, 2.0, (B, 1)).astype(np.float32),
}
ALPHA_VEC = [0.5, 1.0, 0.25, 2.0, 0.75]

KERAS3_REDUCTIONS = ("sum_over_batch_size", "sum", "none", None, "mean_with_sample_weight")
R = tf_keras.losses.Reduction
TF_KERAS_REDUCTIONS = (R.AUTO, R.SUM_OVER_BATCH_SIZE, R.SUM, R.NONE)

# Keras' constructor arguments (beside from_logits and reduction), passed alike to both.
BINARY_KWARGS = [
    {},
    dict(gamma=0.0),
    dict(gamma=0.5, label_smoothing=0.1),
    dict(apply_class_balancing=True),
    dict(apply_class_balancing=True, alpha=0.4, gamma=3.5),
    dict(apply_class_balancing=False, alpha=0.9, gamma=1.0),
    dict(apply_class_balancing=True, alpha=0.1, label_smoothing=1.0),
    dict(axis=-1, gamma=2.5, label_smoothing=0.3),
]
CATEGORICAL_KWARGS = [
    {},
    dict(gamma=0.0),
    dict(gamma=0.5, alpha=ALPHA_VEC),
    dict(alpha=1.0, gamma=3.0, label_smoothing=0.1),
    dict(alpha=0.7, label_smoothing=1.0),
    dict(axis=-1, gamma=1.5),
]

FLAVOURS = {
    "keras3": (keras, fusedfocal.keras, KERAS3_REDUCTIONS),
    "tf_keras": (tf_keras, legacy, TF_KERAS_REDUCTIONS),
}


def _close(ours, theirs, what):
    assert_close(np.asarray(ours), np.asarray(theirs), rtol=RTOL, atol=ATOL, what=what)


def _both(lib, module, keras_name, ours_name, kwargs, y_true, y_pred, sample_weight=None):
    theirs = getattr(lib.losses, keras_name)(**kwargs)(y_true, y_pred, sample_weight=sample_weight)
    ours = getattr(module, ours_name)(**kwargs)(y_true, y_pred, sample_weight=sample_weight)
    return ours.numpy(), theirs.numpy()


def _check_grid(lib, module, keras_name, ours_name, grid, inputs, labels, reduction, from_logits, weights=WEIGHTS):
    checked = 0
    for kwargs in grid:
        for label_name, y in labels.items():
            for w_name, w in weights.items():
                kw = dict(kwargs, from_logits=from_logits, reduction=reduction)
                ours, theirs = _both(lib, module, keras_name, ours_name, kw, y, inputs, w)
                _close(ours, theirs, f"{ours_name} {kw} labels={label_name} sample_weight={w_name}")
                checked += 1
    return checked


# ---------------------------------------------------------------- binary focal


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_binary_focal_matches_live_keras(flavour, from_logits):
    lib, module, reductions = FLAVOURS[flavour]
    inputs = LOGITS if from_logits else PROBS
    for reduction in reductions:
        n = _check_grid(lib, module, "BinaryFocalCrossentropy", "SigmoidFocalLoss", BINARY_KWARGS, inputs,
                        {"hard": HARD, "soft": SOFT}, reduction, from_logits)
        assert n == len(BINARY_KWARGS) * 2 * 3


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_binary_focal_axis_matches_live_keras(flavour):
    lib, module, reductions = FLAVOURS[flavour]
    x3 = _RNG.normal(0.0, 2.0, (B, T, C)).astype(np.float32)
    y3 = (_RNG.random((B, T, C)) < 0.4).astype(np.float32)
    p3 = _RNG.uniform(0.0, 1.0, (B, T, C)).astype(np.float32)
    cases = [(LOGITS, HARD, 0, True), (PROBS, SOFT, -2, False), (x3, y3, 1, True), (p3, y3, 0, False),
             (x3, y3, -1, True)]
    for x, y, axis, from_logits in cases:
        for reduction in reductions:
            kw = dict(axis=axis, from_logits=from_logits, reduction=reduction, gamma=1.5,
                      apply_class_balancing=True, alpha=0.3)
            ours, theirs = _both(lib, module, "BinaryFocalCrossentropy", "SigmoidFocalLoss", kw, y, x)
            _close(ours, theirs, f"{kw} on {x.shape}")


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_binary_labels_aligned_as_keras_3_does(flavour, from_logits):
    # A Dense(1) model: [B] (or [B, 1, 1]) labels against [B, 1] predictions
    # are read as [B, 1], as Keras 3 reads them. tf_keras raises on them with
    # from_logits=True and broadcasts them to [B, B] with from_logits=False,
    # so the twins are compared with tf_keras given [B, 1] labels.
    lib, module, reductions = FLAVOURS[flavour]
    x, y = (LOGITS if from_logits else PROBS)[:, 1:2], HARD[:, :1]
    for labels in (y[:, 0], y[:, :, None]):
        for reduction in reductions:
            kw = dict(from_logits=from_logits, reduction=reduction)
            w = WEIGHTS["[B]"]
            ours = module.SigmoidFocalLoss(**kw)(labels, x, sample_weight=w)
            theirs = lib.losses.BinaryFocalCrossentropy(**kw)(labels if flavour == "keras3" else y, x, sample_weight=w)
            _close(ours, theirs, f"labels {labels.shape} {reduction}")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_alpha_without_apply_class_balancing_warns_and_is_ignored_as_in_keras(flavour):
    lib, module, _ = FLAVOURS[flavour]
    with pytest.warns(UserWarning, match=r"alpha=0\.3 is ignored.*apply_class_balancing=True"):
        ours = module.SigmoidFocalLoss(alpha=0.3, from_logits=True)
    theirs = lib.losses.BinaryFocalCrossentropy(alpha=0.3, from_logits=True)
    _close(ours(HARD, LOGITS), theirs(HARD, LOGITS), "alpha ignored")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit choices do not warn
        module.SigmoidFocalLoss(alpha=0.3, from_logits=True, apply_class_balancing=False)
        module.SigmoidFocalLoss(alpha=0.3)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_keras_form_takes_the_fused_path_and_the_keras_path_alike(flavour, monkeypatch):
    # float32 with [B] weights: the fused kernel reduces (the sum divided by C);
    # float64 inputs, or [B, C] weights, go through Keras' own reduction.
    lib, module, reductions = FLAVOURS[flavour]
    loss_cls = module.SigmoidFocalLoss
    calls = []
    original = loss_cls._fused_call
    monkeypatch.setattr(loss_cls, "_fused_call", lambda self, *a: calls.append(a[0]) or original(self, *a))
    for reduction in reductions:
        loss = loss_cls(from_logits=True, gamma=0.5, reduction=reduction)
        w = WEIGHTS["[B]"]
        fused = loss(HARD, LOGITS, sample_weight=w).numpy()
        plain = loss(HARD, LOGITS.astype(np.float64), sample_weight=w).numpy()
        _close(fused, plain, f"fused vs Keras path {reduction}")
    assert len(calls) == 3, calls  # every reduction but "none" (and None) fused once


# ----------------------------------------------------------- categorical focal


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_categorical_focal_matches_live_keras(flavour, from_logits):
    lib, module, reductions = FLAVOURS[flavour]
    inputs = LOGITS if from_logits else CAT_PROBS
    for reduction in reductions:
        _check_grid(lib, module, "CategoricalFocalCrossentropy", "CategoricalFocalLoss", CATEGORICAL_KWARGS,
                    inputs, {"one-hot": ONEHOT, "soft": SOFTMAX_SOFT}, reduction, from_logits)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_categorical_focal_axis_matches_live_keras(flavour):
    # channels-first [B, C, T]: the class axis is 1 (a scalar alpha, no smoothing: see test_bad_arguments)
    lib, module, reductions = FLAVOURS[flavour]
    x = _RNG.normal(0.0, 2.0, (B, C, T)).astype(np.float32)
    p = _RNG.dirichlet(np.ones(C), (B, T)).transpose(0, 2, 1).astype(np.float32)
    y = np.eye(C, dtype=np.float32)[_RNG.integers(0, C, (B, T))].transpose(0, 2, 1)
    for inputs, from_logits in ((x, True), (p, False)):
        for reduction in reductions:
            kw = dict(axis=1, alpha=0.6, gamma=1.5, from_logits=from_logits, reduction=reduction)
            ours, theirs = _both(lib, module, "CategoricalFocalCrossentropy", "CategoricalFocalLoss", kw, y, inputs)
            _close(ours, theirs, f"{kw}")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_sparse_focal_is_keras_categorical_focal_of_one_hot_labels(flavour):
    lib, module, reductions = FLAVOURS[flavour]
    x3 = _RNG.normal(0.0, 2.0, (B, C, T)).astype(np.float32)
    ids3 = _RNG.integers(0, C, (B, T))
    onehot3 = np.eye(C, dtype=np.float32)[ids3].transpose(0, 2, 1)
    cases = [(LOGITS, IDS, ONEHOT, True, {}), (CAT_PROBS, IDS, ONEHOT, False, dict(gamma=0.5, alpha=ALPHA_VEC)),
             (LOGITS, IDS[:, None], ONEHOT, True, dict(label_smoothing=0.2, alpha=1.0)),
             (x3, ids3, onehot3, True, dict(axis=1, gamma=3.0))]
    for x, ids, onehot, from_logits, kwargs in cases:
        for reduction in reductions:
            kw = dict(kwargs, from_logits=from_logits, reduction=reduction)
            theirs = lib.losses.CategoricalFocalCrossentropy(**kw)(onehot, x, sample_weight=None)
            ours = module.SparseCategoricalFocalLoss(**kw)(ids, x)
            _close(ours, theirs, f"sparse {kw} ids {np.shape(ids)}")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_sparse_ignore_class_is_keras_sparse_categorical_crossentropy(flavour):
    # gamma=0, alpha=1: the sparse cross-entropy, whose ignore_class masks the
    # examples out of the mean (not only a loss of 0, unlike ignore_index).
    lib, module, reductions = FLAVOURS[flavour]
    ids = IDS.copy()
    ids[[1, 4, 5]] = -1
    for reduction in reductions:
        for w_name in ("none", "[B]"):
            kw = dict(from_logits=True, ignore_class=-1, reduction=reduction)
            w = WEIGHTS[w_name]
            theirs = lib.losses.SparseCategoricalCrossentropy(**kw)(ids, LOGITS, sample_weight=w)
            ours = module.SparseCategoricalFocalLoss(gamma=0.0, alpha=1.0, **kw)(ids, LOGITS, sample_weight=w)
            _close(ours, theirs, f"ignore_class {reduction} sample_weight={w_name}")


# ------------------------------------------------- gradients and compiled models


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_gradients_match_keras_where_keras_does_not_clip(flavour):
    lib, module, _ = FLAVOURS[flavour]
    x = tf.constant(_RNG.normal(0.0, 1.5, (B, C)).astype(np.float32))
    pairs = [
        ("BinaryFocalCrossentropy", "SigmoidFocalLoss", dict(apply_class_balancing=True, gamma=2.0), HARD),
        ("CategoricalFocalCrossentropy", "CategoricalFocalLoss", dict(gamma=1.5, label_smoothing=0.1), ONEHOT),
    ]
    for keras_name, ours_name, kwargs, y in pairs:
        grads = []
        for loss in (getattr(lib.losses, keras_name)(from_logits=True, **kwargs),
                     getattr(module, ours_name)(from_logits=True, **kwargs)):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(y, x, sample_weight=WEIGHTS["[B]"])
            grads.append(tape.gradient(value, x).numpy())
        # Keras' gradient runs through float32 probabilities: 1e-4 relative.
        assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7, what=f"{ours_name} gradient")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_compiled_model_evaluates_to_keras_loss(flavour):
    lib, module, _ = FLAVOURS[flavour]
    x_in = _RNG.normal(size=(16, 4)).astype(np.float32)
    y = (_RNG.random((16, 1)) < 0.3).astype(np.float32)
    values = []
    for loss in (lib.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=1.0),
                 module.SigmoidFocalLoss(apply_class_balancing=True, gamma=1.0, from_logits=False)):
        lib.utils.set_random_seed(0)
        model = lib.Sequential([lib.Input((4,)), lib.layers.Dense(1, activation="sigmoid")])
        model.compile("sgd", loss=loss)
        values.append(model.evaluate(x_in, y, batch_size=8, verbose=0))
    np.testing.assert_allclose(values[1], values[0], rtol=RTOL)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_model_with_keras_form_losses_saves_and_loads(flavour, tmp_path):
    lib, module, _ = FLAVOURS[flavour]
    inp = lib.Input((4,))
    outs = [lib.layers.Dense(C, activation=act, name=f"o{i}")(inp) for i, act in enumerate(["sigmoid", None, None])]
    model = lib.Model(inp, outs)
    losses = [module.SigmoidFocalLoss(**SERIAL_CASES["SigmoidFocalLoss"]),
              module.CategoricalFocalLoss(**dict(SERIAL_CASES["CategoricalFocalLoss"], from_logits=True)),
              module.SparseCategoricalFocalLoss(**SERIAL_CASES["SparseCategoricalFocalLoss"])]
    model.compile("sgd", loss=losses)
    x_in = _RNG.normal(size=(B, 4)).astype(np.float32)
    ys = [HARD, ONEHOT, np.where(IDS == 2, -1, IDS)]
    before = model.evaluate(x_in, ys, verbose=0)
    path = str(tmp_path / "keras_form.keras")
    model.save(path)
    loaded = lib.models.load_model(path)
    np.testing.assert_allclose(loaded.evaluate(x_in, ys, verbose=0), before, rtol=1e-6)
    for orig, new in zip(losses, loaded.loss):
        assert type(new) is type(orig) and new.get_config() == orig.get_config()


# ------------------------------------------------------- fusedfocal's defaults


def test_without_keras_arguments_nothing_changes():
    # fusedfocal's form: element-wise, alpha applied whenever given, alpha=None is 1.
    loss = fusedfocal.SigmoidFocalLoss(alpha=0.3, reduction="none")(HARD, LOGITS).numpy()
    assert loss.shape == (B, C)
    _close(loss, ref.sigmoid_focal(LOGITS.astype(np.float64), HARD, gamma=2.0, alpha=0.3), "focal")
    cat = fusedfocal.CategoricalFocalLoss(reduction="none")(ONEHOT, LOGITS).numpy()
    _close(cat, ref.categorical_focal(LOGITS.astype(np.float64), ONEHOT, 2.0), "categorical")
    sparse = legacy.SparseCategoricalFocalLoss(reduction=R.NONE)(IDS, LOGITS).numpy()
    _close(sparse, cat, "sparse")
    # Keras' defaults only once from_logits is given: alpha 0.25
    keras_form = fusedfocal.CategoricalFocalLoss(from_logits=True, reduction="none")(ONEHOT, LOGITS).numpy()
    _close(keras_form, 0.25 * cat, "categorical, Keras' alpha")


# ------------------------------------------------------- the float64 reference


def _bounds(dtype):
    return np.float64 if dtype == tf.float64 else np.float32  # the conversion runs in float32


# Probabilities for the gradient checks: away from the clip, plus clipped
# entries (gradient 0 there, in Keras and here).
P_REF = np.concatenate([_RNG.uniform(0.02, 0.98, (7, C)), [[0.0, 1.0, 0.3, 1e-9, 0.7]]])
Y_REF = np.concatenate([(_RNG.random((7, C)) < 0.4), [[1, 0, 1, 1, 0]]]).astype(np.float64)
X_REF = _RNG.normal(0.0, 3.0, (8, C)).round(3)


def _sigmoid_configs(dtype, impl):
    bounds = _bounds(dtype)
    return [
        ("probabilities, class balancing, smoothing",
         lambda p: L.sigmoid_focal_loss(p, Y_REF, gamma=0.5, alpha=0.3, apply_class_balancing=True,
                                        label_smoothing=0.2, from_logits=False, implementation=impl),
         lambda p: ref.sigmoid_focal(ref.keras_sigmoid_logits(p, bounds=bounds), Y_REF, gamma=0.5, alpha=0.3,
                                     label_smoothing=0.2), P_REF),
        ("label_smoothing=1",
         lambda x: L.sigmoid_focal_loss(x, Y_REF, gamma=2.0, label_smoothing=1.0, implementation=impl),
         lambda x: ref.sigmoid_focal(x, Y_REF, gamma=2.0, label_smoothing=1.0), X_REF),
        ("apply_class_balancing=True, alpha None (Keras' 0.25)",
         lambda x: L.sigmoid_focal_loss(x, Y_REF, gamma=3.5, apply_class_balancing=True, implementation=impl),
         lambda x: ref.sigmoid_focal(x, Y_REF, gamma=3.5, apply_class_balancing=True), X_REF),
        ("apply_class_balancing=False ignores alpha",
         lambda x: L.sigmoid_focal_loss(x, Y_REF, gamma=1.0, alpha=0.9, apply_class_balancing=False,
                                        implementation=impl),
         lambda x: ref.sigmoid_focal(x, Y_REF, gamma=1.0, alpha=0.9, apply_class_balancing=False), X_REF),
    ]


@pytest.mark.parametrize("implementation", ["xla", "native"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_new_arguments_match_reference(dtype, mode, implementation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # native: float64 falls back to pure TF, warning once
        for what, fn, ref_fn, x in configs_for(mode, _sigmoid_configs(dtype, implementation)):
            check_reference(fn, ref_fn, x, dtype, mode, what=f"{implementation} {what}")


def test_keras_form_class_matches_reference_in_value_and_gradient():
    # The class's per-sample mean of the converted probabilities, float64 end to end.
    p = tf.constant(P_REF)
    for module, legacy_style in ((fusedfocal.keras, False), (legacy, True)):
        extra = dict(reduction="none", dtype="float64") if module is fusedfocal.keras else dict(reduction=R.NONE)
        loss = module.SigmoidFocalLoss(from_logits=False, gamma=1.5, apply_class_balancing=True, alpha=0.4, **extra)
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss(Y_REF, p)
        grad = tape.gradient(value, p).numpy()

        def ref_fn(q, legacy_style=legacy_style):
            x = ref.keras_sigmoid_logits(q, legacy=legacy_style)
            return np.mean(ref.sigmoid_focal(x, Y_REF, gamma=1.5, alpha=0.4), axis=-1)

        want = ref_fn(P_REF)
        assert_close(value.numpy(), want, rtol=1e-10, atol=1e-13, what=f"{module.__name__} value")
        assert_close(grad, ref.complex_step_sum_grad(ref_fn, P_REF), rtol=1e-10, atol=1e-13,
                     what=f"{module.__name__} gradient")


def _categorical_configs(dtype):
    bounds = _bounds(dtype)
    cat_p = _RNG.dirichlet(np.ones(C), 8)
    cat_p[0] = [0.0, 0.6, 0.0, 0.4, 0.0]
    x3 = _RNG.normal(0.0, 2.0, (2, C, T)).round(3)
    y3 = _RNG.dirichlet(np.ones(C), (2, T)).transpose(0, 2, 1)
    soft = _RNG.dirichlet(np.ones(C), 8)
    return [
        ("categorical, probabilities, smoothing",
         lambda p: L.categorical_focal_loss(p, soft, gamma=0.5, alpha=ALPHA_VEC, label_smoothing=0.1,
                                            from_logits=False),
         lambda p: ref.categorical_focal(ref.keras_softmax_logits(p, bounds=bounds), soft, 0.5, ALPHA_VEC, 0.1),
         cat_p),
        ("categorical, axis=1",
         lambda x: L.categorical_focal_loss(x, y3, gamma=2.0, alpha=0.25, axis=1),
         lambda x: ref.categorical_focal(x, y3, 2.0, 0.25, axis=1), x3),
        ("sparse, smoothing 1, probabilities",
         lambda p: L.sparse_categorical_focal_loss(p, IDS, gamma=1.5, label_smoothing=1.0, from_logits=False),
         lambda p: ref.categorical_focal(ref.keras_softmax_logits(p, bounds=bounds), np.eye(C)[IDS], 1.5,
                                         label_smoothing=1.0), cat_p),
        ("sparse, axis=-2",
         lambda x: L.sparse_categorical_focal_loss(x, y3.argmax(1), gamma=0.5, label_smoothing=0.0, axis=-2),
         lambda x: ref.categorical_focal(x, np.eye(C)[y3.argmax(1)].transpose(0, 2, 1), 0.5, axis=1), x3),
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_categorical_new_arguments_match_reference(dtype, mode):
    for what, fn, ref_fn, x in configs_for(mode, _categorical_configs(dtype)):
        check_reference(fn, ref_fn, x, dtype, mode, what=what)


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_probabilities_at_the_clip_give_finite_gradients(mode):
    p = tf.constant([[0.0, 1.0, 1e-30, 1.0 - 1e-7, 0.5]], tf.float32)
    y = tf.constant([[1.0, 0.0, 1.0, 0.0, 1.0]])
    fns = [lambda q: L.sigmoid_focal_loss(q, y, gamma=0.5, from_logits=False),
           lambda q: L.categorical_focal_loss(q, y / 3.0, gamma=0.5, from_logits=False)]
    for fn in fns:
        def value_and_grad(q, fn=fn):
            with tf.GradientTape() as tape:
                tape.watch(q)
                total = tf.reduce_sum(fn(q))
            return total, tape.gradient(total, q)

        run = tf.function(value_and_grad, jit_compile=True) if mode == "xla" else value_and_grad
        total, grad = run(p)
        assert np.isfinite(total.numpy()) and np.isfinite(grad.numpy()).all(), (total, grad)


# ------------------------------------------------------- serialization, errors


SERIAL_CASES = {
    "SigmoidFocalLoss": dict(apply_class_balancing=True, alpha=0.4, gamma=1.5, from_logits=False,
                             label_smoothing=0.1, axis=-1),
    "CategoricalFocalLoss": dict(alpha=ALPHA_VEC, gamma=0.5, from_logits=False, label_smoothing=0.2, axis=-1),
    "SparseCategoricalFocalLoss": dict(gamma=1.0, from_logits=True, label_smoothing=0.1, ignore_class=-1),
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_config_round_trip_with_keras_arguments(flavour):
    lib, module, _ = FLAVOURS[flavour]
    inputs = {"SigmoidFocalLoss": (HARD, PROBS), "CategoricalFocalLoss": (ONEHOT, CAT_PROBS),
              "SparseCategoricalFocalLoss": (np.where(IDS == 2, -1, IDS), LOGITS)}
    for name, kwargs in SERIAL_CASES.items():
        loss = getattr(module, name)(**kwargs)
        cfg = loss.get_config()
        for k, v in kwargs.items():
            assert cfg[k] == pytest.approx(v), (name, k)
        clone = type(loss).from_config(json.loads(json.dumps(cfg)))
        assert clone.get_config() == cfg
        again = lib.saving.deserialize_keras_object(json.loads(json.dumps(lib.saving.serialize_keras_object(loss))))
        assert type(again) is type(loss) and again.get_config() == cfg
        y, x = inputs[name]
        want = loss(y, x).numpy()
        assert np.isfinite(want)
        assert clone(y, x).numpy() == want and again(y, x).numpy() == want, name


BAD = [
    ("SigmoidFocalLoss", dict(label_smoothing=1.5),
     r"Invalid value for argument `label_smoothing`. Expected a float in \[0, 1\]. Received: label_smoothing=1.5"),
    ("SigmoidFocalLoss", dict(label_smoothing=-0.1), r"argument `label_smoothing`.*Received: label_smoothing=-0.1"),
    ("SigmoidFocalLoss", dict(axis="last"), r"argument `axis`. Expected an integer axis.*Received: axis='last'"),
    ("SigmoidFocalLoss", dict(axis=True), r"argument `axis`.*Received: axis=True"),
    ("SigmoidFocalLoss", dict(from_logits="yes"),
     r"argument `from_logits`. Expected True, False or None. Received: from_logits='yes'"),
    ("SigmoidFocalLoss", dict(apply_class_balancing=1),
     r"argument `apply_class_balancing`. Expected True, False or None. Received: apply_class_balancing=1"),
    ("CategoricalFocalLoss", dict(label_smoothing=2.0), r"argument `label_smoothing`.*Received: label_smoothing=2.0"),
    ("CategoricalFocalLoss", dict(axis=1.0), r"argument `axis`. Expected an integer axis.*Received: axis=1.0"),
    ("CategoricalFocalLoss", dict(from_logits=0), r"argument `from_logits`.*Received: from_logits=0"),
    ("SparseCategoricalFocalLoss", dict(ignore_class=0.5), r"argument `ignore_class`.*Received: ignore_class=0.5"),
    ("SparseCategoricalFocalLoss", dict(ignore_class=-1, ignore_index=-100),
     r"argument `ignore_class`. Expected None when `ignore_index` is given.*Received: ignore_class=-1"),
]


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("name,kwargs,match", BAD, ids=[f"{n}-{k}" for n, k, _ in BAD])
def test_bad_arguments_raise_in_init(flavour, name, kwargs, match):
    _, module, _ = FLAVOURS[flavour]
    with pytest.raises(ValueError, match=match):
        getattr(module, name)(**kwargs)


def test_bad_arguments_of_the_functions():
    x = np.zeros((2, C, T), np.float32)
    y = np.zeros((2, C, T), np.float32)
    with pytest.raises(ValueError, match=r"argument `alpha`. Expected a scalar when axis=1 is not the last axis"):
        L.categorical_focal_loss(x, y, alpha=ALPHA_VEC, axis=1)
    with pytest.raises(ValueError, match=r"argument `label_smoothing`. Expected 0 when axis=1.*Received: "
                                         r"label_smoothing=0.1"):
        L.categorical_focal_loss(x, y, label_smoothing=0.1, axis=1)
    with pytest.raises(ValueError, match=r"argument `axis`. Expected an integer in \[-3, 2\].*Received: axis=3"):
        L.categorical_focal_loss(x, y, axis=3)
    with pytest.raises(ValueError, match=r"argument `axis`.*Received: axis=3"):
        fusedfocal.CategoricalFocalLoss(axis=3)(y, x)
    with pytest.raises(ValueError, match=r"argument `from_logits`. Expected True or False. Received: from_logits=None"):
        L.sigmoid_focal_loss(LOGITS, HARD, from_logits=None)
    with pytest.raises(ValueError, match=r"argument `epsilon`.*Received: epsilon=0.0"):
        L.sigmoid_focal_loss(PROBS, HARD, from_logits=False, epsilon=0.0)
    with pytest.raises(ValueError, match=r"argument `apply_class_balancing`.*Received: apply_class_balancing='no'"):
        L.sigmoid_focal_loss(LOGITS, HARD, apply_class_balancing="no")
    with pytest.raises(ValueError, match=r"argument `labels`.*without its class axis"):
        L.sparse_categorical_focal_loss(x, np.zeros((2, C), np.int32), axis=1)
