"""The command line's optimizers: Keras 3 Adam with each variable's update in one fused XLA kernel.

Keras 3's Adam updates a variable with about ten element-wise ops (the moments, the bias
correction, the step), each a pass over the variable's memory. :class:`FusedAdam` runs the same
update as one XLA-compiled function (``tf.function(jit_compile=True)``, called from the ordinary
train step), so the passes fuse into one. On the n-gram model's ``[11,141, 256]`` bag kernel
(Reuters), where Keras' update was most of a step, the median step is 4.3 ms against Keras'
8.5 ms with a dense gradient and 9.2 ms against 13.1 ms with the bag's sparse one (SGD with
momentum: 3.8 ms); ``pytest benchmarks/bench_cli_optimizer.py --benchmark``, 2-core x86_64,
2026-12-03, ``benchmarks/results/cli-optimizer-2026-12-03.json``.

The numbers are Keras' own, quirk included: for a sparse gradient (``tf.IndexedSlices``, from an
embedding or the n-gram bag's gather) Keras squares the slices before summing repeated rows, so the
second moment takes ``sum(g_i^2)``, not ``(sum g_i)^2``; ``FusedAdam`` does the same (TensorFlow's
``ResourceApplyAdam`` would not), and the CLI's measured recipes keep their dynamics.

Each update runs on its variable's device (a label shard's kernel lives on its own device: XLA
compiles for one). It falls back to Keras' own update under a ``tf.distribute`` strategy other than the default one,
with ``amsgrad``, or on another backend; weight decay, gradient clipping, EMA and loss scaling are
Keras' own steps around the update and are unchanged.
"""

from __future__ import annotations

import keras

__all__ = ["FusedAdam"]

def _update_fn(sparse):
    """``update(var, m, v, g, g2, alpha, beta_1, beta_2, epsilon)``, XLA-compiled (once per variable
    shape); ``g2`` is the second moment's input for a sparse gradient, else unused (the square of
    ``g`` is taken inside the fused kernel). Each optimizer makes its own: a function shared across
    models would keep traces that refer to a finished model's variables."""
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def update(var, m, v, g, g2, alpha, beta_1, beta_2, epsilon):
        m_new = m.read_value() + (g - m.read_value()) * (1.0 - beta_1)
        v_new = v.read_value() + ((g2 if sparse else tf.square(g)) - v.read_value()) * (1.0 - beta_2)
        m.assign(m_new)
        v.assign(v_new)
        var.assign_sub(m_new * alpha / (tf.sqrt(v_new) + epsilon))

    return update


def _tf_variable(variable):
    return getattr(variable, "_value", variable)


@keras.saving.register_keras_serializable(package="fusedfocal")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose per-variable update is one XLA-compiled function (same
    arguments, same results up to float rounding; see the module docstring)."""

    def add_variable_from_reference(self, reference_variable, *rest, **kwargs):
        """A slot on its variable's device (Keras' colocation does nothing eagerly under the
        default strategy: a label shard's slots would sit on the default device, where its XLA
        update cannot reach them, and hold kernel-sized memory there)."""
        import tensorflow as tf

        device = getattr(_tf_variable(reference_variable), "device", None)
        if keras.backend.backend() != "tensorflow" or not device:
            return super().add_variable_from_reference(reference_variable, *rest, **kwargs)
        with tf.device(device):
            return super().add_variable_from_reference(reference_variable, *rest, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if self.amsgrad or keras.backend.backend() != "tensorflow" or tf.distribute.has_strategy():
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1.0 - tf.pow(beta_2, step)) / (1.0 - tf.pow(beta_1, step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        shape = tf.shape(_tf_variable(variable))
        sparse = isinstance(gradient, tf.IndexedSlices)
        if sparse:  # repeated rows: sum(g), and sum(g^2) as Keras does
            values = tf.cast(gradient.values, dtype)
            g = tf.math.unsorted_segment_sum(values, gradient.indices, shape[0])
            g2 = tf.math.unsorted_segment_sum(tf.square(values), gradient.indices, shape[0])
        else:
            g = tf.cast(gradient, dtype)
            g2 = tf.zeros([], dtype)
        updates = self.__dict__.setdefault("_fused_updates", {})
        if sparse not in updates:
            updates[sparse] = _update_fn(sparse)
        # on the variable's device: XLA compiles for one device, and a label shard's kernel lives on
        # its own (a logical CPU, a GPU, a worker process)
        with tf.device(_tf_variable(variable).device):
            updates[sparse](_tf_variable(variable), _tf_variable(m), _tf_variable(v), g, g2, alpha, beta_1, beta_2,
                            tf.cast(self.epsilon, dtype))
