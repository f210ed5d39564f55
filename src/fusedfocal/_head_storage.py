"""How ``FocalHead`` stores its weights: bfloat16 as bit patterns in uint16, initialised in chunks.

A bfloat16 kernel (and bfloat16 optimizer slots) live in ``uint16`` variables
holding the bfloat16 bit patterns: the one storage that XLA on the CPU updates
in place (``fusedfocal.ops.head_update``'s ``_Rows`` says why).
:func:`to_storage`/:func:`from_storage` convert, and
:class:`Bfloat16BitsInitializer` draws such a kernel chunk by chunk.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fusedfocal.ops import head_update as hu

_INIT_ROWS = 1 << 16  # rows a chunk when a bfloat16 kernel is initialised
_TRUNC_STD = 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2], as Keras corrects by


def _chunk_sampler(initializer, lib, full_shape):
    """``draw(seed [2], rows) -> float32 [rows, H]`` with ``initializer``'s distribution for the
    full ``[C, H]`` shape (a variance-scaling initializer's fans come from the full shape), from
    stateless random ops, so chunks can be drawn inside one XLA loop; None for an initializer this
    does not know (it is then called once on the full shape)."""
    h = full_shape[1]
    if isinstance(initializer, lib.initializers.VarianceScaling):  # Glorot/He/LeCun are subclasses
        fan_in, fan_out = full_shape
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[initializer.mode]
        var = initializer.scale / max(1.0, fan)
        dist = initializer.distribution
        if dist == "uniform":
            lim = float(np.sqrt(3.0 * var))
            return lambda seed, n: tf.random.stateless_uniform([n, h], seed, -lim, lim)
        std = float(np.sqrt(var)) / (_TRUNC_STD if dist == "truncated_normal" else 1.0)
        fn = tf.random.stateless_truncated_normal if dist == "truncated_normal" else tf.random.stateless_normal
        return lambda seed, n: fn([n, h], seed, stddev=std)
    name = type(initializer).__name__
    cfg = initializer.get_config()
    if name == "RandomNormal":
        return lambda seed, n: tf.random.stateless_normal([n, h], seed, cfg["mean"], cfg["stddev"])
    if name == "TruncatedNormal":
        return lambda seed, n: tf.random.stateless_truncated_normal([n, h], seed, cfg["mean"], cfg["stddev"])
    if name == "RandomUniform":
        return lambda seed, n: tf.random.stateless_uniform([n, h], seed, cfg["minval"], cfg["maxval"])
    if name in ("Zeros", "Ones", "Constant"):
        value = float({"Zeros": 0.0, "Ones": 1.0}.get(name, cfg.get("value")))
        return lambda seed, n: tf.fill([n, h], tf.constant(value, tf.float32))
    return None


class Bfloat16BitsInitializer:
    """Initialises a ``[C, H]`` bfloat16 kernel stored as uint16 bit patterns, chunk by chunk of
    rows inside one XLA loop that writes into its output in place: a Keras initializer's
    whole-kernel draw holds three kernel-sized temporaries (3M x 768: 13 GiB for a 4.3 GiB
    kernel); this holds the kernel and one chunk. An initializer it does not know runs once on
    the full shape."""

    def __init__(self, initializer, lib, rows=_INIT_ROWS, fan_shape=None, salt=0, device=None):
        self.initializer, self.lib, self.rows = initializer, lib, rows
        self.fan_shape, self.salt = fan_shape, salt  # a label shard: the whole head's shape, the shard index
        self.device = device  # a label shard's device (a remote worker's: see run_xla_on)

    def __call__(self, shape, dtype=None):
        full = tuple(int(d) for d in shape)
        sampler = _chunk_sampler(self.initializer, self.lib, tuple(self.fan_shape or full))
        if sampler is None:
            return tf.bitcast(tf.cast(self.initializer(full, dtype="float32"), tf.bfloat16), tf.uint16)
        seed = getattr(self.initializer, "seed", None)
        seed = int(seed) if isinstance(seed, (int, np.integer)) else int(np.random.randint(0, 2**31 - 1))
        seed += self.salt * 1000003
        rows = min(self.rows, full[0])
        n_full, tail = divmod(full[0], rows)

        @tf.function(jit_compile=True)
        def build(seed):  # the seed an argument: a constant one could be folded outside XLA (other numbers)
            from tensorflow.compiler.tf2xla.python import xla as _tfxla

            def bits(i, n):
                return tf.bitcast(tf.cast(sampler(tf.stack([seed, i]), n), tf.bfloat16), tf.uint16)

            def body(i, buf):
                return i + 1, _tfxla.dynamic_update_slice(buf, bits(i, rows), tf.stack([i * rows, 0]))

            _, buf = tf.while_loop(lambda i, _: i < n_full, body, (tf.constant(0), tf.zeros(full, tf.uint16)))
            if tail:
                buf = _tfxla.dynamic_update_slice(buf, bits(tf.constant(n_full), tail), tf.stack([n_full * rows, 0]))
            return buf

        with tf.init_scope():
            return run_xla_on(build, self.device, tf.constant(seed, tf.int32))


def is_remote(device):
    """Whether ``device`` names another process's device (a worker of a connected cluster)."""
    return bool(device) and "/job:" in device and "/job:localhost" not in device


def run_xla_on(fn, device, *args):
    """``fn(*args)``, an XLA function (``jit_compile=True``; tensor arguments), run on ``device``. A remote
    worker runs no XLA function called eagerly from this process (``KernelAndDeviceOp does not
    support EagerFunctionParams``) but runs one called from a plain ``tf.function`` placed on it:
    the worker draws its own rows with the same XLA numbers as a local device, and only the
    function travels."""
    if not is_remote(device):
        return fn(*args)

    @tf.function
    def on_worker(*args):
        with tf.device(device):
            return fn(*args)
    return on_worker(*args)


def to_storage(values, storage):
    """Float values as a variable of dtype ``storage`` holds them (uint16: bfloat16 bit patterns,
    rounded to nearest)."""
    if tf.as_dtype(storage) == tf.uint16:
        return tf.bitcast(tf.cast(values, tf.bfloat16), tf.uint16)
    return tf.cast(values, storage)


def from_storage(value):
    """A variable's value as floats (uint16 storage: its bfloat16 bit patterns as bfloat16)."""
    value = hu.tf_variable(value, "weight").value() if not isinstance(value, tf.Tensor) else value
    return tf.bitcast(value, tf.bfloat16) if value.dtype == tf.uint16 else value


# How each weight_dtype / moment_dtype is stored: bfloat16 as its bit patterns in uint16, the one
# storage that XLA on the CPU updates in place (ops.head_update._Rows says why).
_STORAGE = {"float32": "float32", "bfloat16": "uint16"}
