"""Keras 3 initializers of the loss family (registered, serialisable)."""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["PriorBias"]


@keras.saving.register_keras_serializable(package="fusedfocal")
class PriorBias(keras.initializers.Initializer):
    """Constant per-unit bias (e.g. the prior log-odds of each label)."""

    def __init__(self, bias):
        self.bias = [float(b) for b in np.atleast_1d(np.asarray(bias, np.float64))]

    def __call__(self, shape, dtype=None):
        value = np.asarray(self.bias, np.float64)
        value = np.broadcast_to(value, tuple(shape))
        return keras.ops.convert_to_tensor(value, dtype=dtype or keras.backend.floatx())

    def get_config(self):
        return {"bias": list(self.bias)}
