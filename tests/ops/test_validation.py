"""The opt-in run-time label check: NaN wording, and no silent no-op under XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal


@pytest.mark.parametrize("label, found", [(np.nan, "found NaN"), (-0.5, "found one < 0"), (2.0, "found one > 1")])
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_check_labels_names_what_it_found(label, found, mode):
    x = tf.zeros([2, 2])
    y = tf.constant([[0.0, 1.0], [label, 0.0]])
    f = lambda a, b: fusedfocal.sigmoid_focal_loss(a, b, check_labels=True)  # noqa: E731
    if mode == "function":
        f = tf.function(f)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        f(x, y)
    assert found in str(e.value)
    others = {"found NaN", "found one < 0", "found one > 1"} - {found}
    assert not any(o in str(e.value) for o in others)


def test_check_labels_in_range_passes_in_graph_mode():
    y = tf.constant([[0.0, 1.0], [0.25, 0.0]])
    value = tf.function(lambda a, b: fusedfocal.sigmoid_focal_loss(a, b, check_labels=True))(tf.zeros([2, 2]), y)
    assert np.isfinite(value.numpy()).all()


def test_check_labels_under_jit_compile_is_a_clear_error():
    """XLA drops tf.debugging asserts: the check must refuse, not silently pass a label of 2."""
    f = tf.function(lambda a, b: fusedfocal.sigmoid_focal_loss(a, b, check_labels=True), jit_compile=True)
    with pytest.raises(ValueError, match=r"`check_labels`.*XLA.*jit_compile=False"):
        f(tf.zeros([1, 2]), tf.constant([[2.0, 0.0]]))
    # Without the check the XLA path still compiles and runs.
    g = tf.function(lambda a, b: fusedfocal.sigmoid_focal_loss(a, b), jit_compile=True)
    assert np.isfinite(g(tf.zeros([1, 2]), tf.constant([[1.0, 0.0]])).numpy()).all()
