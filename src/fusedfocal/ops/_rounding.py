"""Stochastic rounding of float32 to bfloat16, on a counter-based hash (no RNG state).

Used by the fused head update (:mod:`fusedfocal.ops.head_update`) to store
its float32 results in bfloat16 weights and slots without bias: a value
between two bfloat16 neighbours rounds up with probability equal to its
distance from the lower one, so updates far below bfloat16's spacing still
move a weight on average (round-to-nearest would drop them).
"""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.ops import _validation as v

__all__ = ["stochastic_round"]


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(13, tf.uint32)))
    x = x * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _random_bits(shape, seed):
    """uint32 bits for each element: a counter-based hash of the element's index and ``seed``.

    Philox (``tf.random.stateless_uniform``) doubled the time of a bfloat16 fused step on the
    CPU; one multiply-xorshift hash of the index fuses into the update's element loop.
    """
    seed = tf.cast(seed, tf.int64)
    lo = lambda v: tf.cast(tf.bitwise.bitwise_and(v, tf.constant(0xFFFFFFFF, tf.int64)), tf.uint32)
    key = _fmix32(lo(seed[0]) * tf.constant(0x9E3779B1, tf.uint32) + _fmix32(lo(seed[1]) + tf.constant(1, tf.uint32)))
    n = tf.reduce_prod(shape)
    idx = tf.reshape(tf.cast(tf.range(n), tf.uint32), shape)
    return _fmix32(idx * tf.constant(0x9E3779B1, tf.uint32) + key)


def stochastic_round(x, dtype, seed):
    """``x`` (float32) stored in ``dtype`` with unbiased stochastic rounding.

    For bfloat16: adds 16 random bits to the float32 bit pattern and
    truncates the low 16 bits, so a value between two bfloat16 neighbours
    rounds up with probability equal to its distance from the lower one (in
    units of their spacing): ``E[round(x)] = x``. Infinities and NaNs stay
    what they are. The bits are a hash of each element's position and
    ``seed``, a shape ``[2]`` int tensor (a stream and a counter): the same
    seed gives the same rounding. float32 returns ``x`` unchanged.
    """
    dtype = tf.as_dtype(dtype)
    if dtype == tf.float32:
        return x
    if dtype != tf.bfloat16:
        raise v.invalid("dtype", "float32 or bfloat16", dtype.name)
    x = tf.cast(x, tf.float32)
    bits = tf.bitcast(x, tf.uint32)
    noise = tf.bitwise.right_shift(_random_bits(tf.shape(x), seed), tf.constant(16, tf.uint32))
    rounded = tf.bitwise.bitwise_and(bits + noise, tf.constant(0xFFFF0000, tf.uint32))
    out = tf.where(tf.math.is_finite(x), tf.bitcast(rounded, tf.float32), x)
    return tf.cast(out, tf.bfloat16)  # exact: the low 16 bits are zero
