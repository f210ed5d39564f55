"""Rows of a head variable, read and written in place by the fused update (:mod:`fusedfocal.ops.head_update`)."""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.ops import _validation as v
from fusedfocal.ops._linear_chunks import slice_

__all__ = ["Rows", "tf_variable"]


def tf_variable(var, name):
    """The ``tf.Variable`` behind a Keras 3 variable (or the variable itself)."""
    if isinstance(var, tf.Variable):
        return var
    inner = getattr(var, "_value", None)
    if isinstance(inner, tf.Variable):
        return inner
    raise TypeError(f"Invalid type for argument `{name}`. Expected a tf.Variable or a Keras variable. "
                    f"Received: {type(var).__name__}")


class Rows:
    """Rows ``[start, start + size)`` of a variable, read and written in place.

    A variable holds float32, bfloat16, or bfloat16 as its uint16 bit pattern
    (what ``FocalHead(weight_dtype="bfloat16")`` stores): reads return the
    stored values as float32/bfloat16, writes take them.

    Under XLA the variable's value is carried through the chunk loop (``cur``),
    updated with a dynamic-update-slice, and assigned once after the loop; XLA
    aliases it with the variable's buffer, so nothing kernel-sized is
    allocated. That needs float32 or uint16 storage on the CPU: XLA's CPU
    float normalisation turns a bfloat16 dynamic-update-slice into float32
    converts of the whole buffer, and a bitcast of the whole variable to
    uint16 breaks the aliasing (a kernel-sized buffer every step; both seen in
    the optimized HLO and the step's peak memory). A bfloat16 variable still
    works, at that cost. In graph and eager mode: a row gather and a row
    scatter on the variable (``cur`` is a dummy).
    """

    def __init__(self, var, name, xla):
        self.var = tf_variable(var, name)
        self.stored = self.var.dtype
        if self.stored not in (tf.float32, tf.bfloat16, tf.uint16):
            raise v.invalid(name, "a float32, bfloat16 or uint16 (bfloat16 bits) variable",
                            f"a {self.stored.name} variable", describe=True)
        self.dtype = tf.bfloat16 if self.stored == tf.uint16 else self.stored  # what the values are
        self.xla = xla
        self.carried_bits = xla and self.stored == tf.bfloat16  # carried as uint16 (see above)

    def initial(self):
        if not self.xla:
            return tf.zeros([], tf.int32)
        value = self.var.value()
        return tf.bitcast(value, tf.uint16) if self.carried_bits else value

    def _index(self, start, size):
        rank = self.var.shape.rank
        return [start] + [0] * (rank - 1), [size] + [-1] * (rank - 1)

    def read(self, cur, start, size):
        if not self.xla:
            with tf.control_dependencies([cur]):  # after this chunk's earlier write, if any
                out = self.var.sparse_read(start + tf.range(size))
        else:
            begin, sizes = self._index(start, size)
            out = slice_(cur, begin, sizes)
        return tf.bitcast(out, tf.bfloat16) if out.dtype == tf.uint16 else out

    def write(self, cur, start, size, value):
        if self.stored == tf.uint16 or self.carried_bits:
            value = tf.bitcast(tf.cast(value, tf.bfloat16), tf.uint16)
        if not self.xla:
            op = self.var.scatter_update(tf.IndexedSlices(value, start + tf.range(size)))
            with tf.control_dependencies([op]):
                return tf.identity(cur)
        from tensorflow.compiler.tf2xla.python import xla as _tfxla
        begin, _ = self._index(start, size)
        idx = tf.stack([tf.cast(b, tf.int32) for b in begin])
        return _tfxla.dynamic_update_slice(cur, value, idx)

    def finish(self, cur):
        """The op that stores the carried value (XLA), or None."""
        if not self.xla:
            return None
        return self.var.assign(tf.bitcast(cur, tf.bfloat16) if self.carried_bits else cur, read_value=False)
