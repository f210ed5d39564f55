"""A data-parallel encoder for ``FocalHeadModel(..., encoder_devices=...)`` (issue 27).

The label-sharded head splits the classifier over devices by labels; the encoder in front of it
stays data-parallel: each batch is split into ``R`` contiguous row blocks (sizes as equal as
possible, a block may be empty), block ``r`` goes through the encoder on ``devices[r]`` (a GPU, a
logical CPU, or a remote worker's device, see :mod:`fusedfocal.distributed`), and the ``R``
feature blocks are concatenated back in row order: the head sees the same ``[B, H]`` features as
with one device, so its loss (a mean over the whole batch) and top-k are unchanged.

The encoder's variables stay where they were created (the chief, in the worker case: a parameter
server in the sense of ``ParameterServerStrategy``); each replica reads them, and, in training,
forms its gradients **on its own device**: the forward pass runs under a ``tf.custom_gradient``
whose backward function calls the replica's own tape under the same ``tf.device`` (TensorFlow's
placer would put the unplaced ops of the tape's backward pass on the caller's device, i.e. run the
whole encoder backward on the chief). The replicas' gradients are summed by the caller's tape,
which is the gradient of the whole batch: ``fit`` and any Keras optimizer are untouched.

Per step and replica, what moves: the block's inputs in, the encoder's dense weights it reads in
(an embedding lookup runs where its table lives: only the looked-up rows move), the block's
features out, their gradient in, the dense weights' gradients (and an embedding's looked-up rows'
gradients) out. None of it depends on the label count.
"""

from __future__ import annotations

import tensorflow as tf

from fusedfocal.ops import _validation as v

SHARDS = "shards"  # encoder_devices="shards": the head's label-shard devices


def check_encoder_devices(devices, head):
    """None, ``"shards"`` (the head's shard devices; the head must have ``label_shards``) or a
    non-empty list of device names."""
    if devices is None:
        return None
    if isinstance(devices, str):
        if devices != SHARDS:
            raise v.invalid("encoder_devices", f"None, {SHARDS!r} or a list of device names", devices)
        if getattr(head, "label_shards", None) is None:
            raise v.invalid("encoder_devices", f"None or a list of device names with an unsharded head "
                            f"({SHARDS!r} means the devices of the head's label shards)", devices)
        return SHARDS
    if not isinstance(devices, (list, tuple)) or not devices or not all(isinstance(d, str) and d for d in devices):
        raise v.invalid("encoder_devices", f"None, {SHARDS!r} or a non-empty list of device names", devices)
    return list(devices)


def resolve(devices, head):
    """The checked ``encoder_devices`` as device names: ``"shards"`` is the head's shard devices
    (None before the head is built)."""
    if devices == SHARDS:
        return [sh.device for sh in head.shards] or None
    return devices


def features(encoder, inputs, devices, training):
    """``encoder(inputs)``, data-parallel over ``devices`` (None: called as it is). An encoder not
    built yet is called whole first: its variables are created where the model runs, not on a
    replica's device."""
    if devices is None or not getattr(encoder, "built", False) or not encoder.weights:
        return encoder(inputs, training=training)
    return encode(encoder, inputs, devices, training=bool(training))


def _check_context(devices):
    if v.in_xla_context() and len(set(devices)) > 1:
        raise ValueError("Invalid value for argument `jit_compile`. Expected False with a FocalHeadModel whose "
                         "encoder runs on several devices (XLA compiles a step for one device). Received: "
                         f"jit_compile=True with encoder_devices={list(devices)}")
    v.refuse_several_replicas("encoder_devices", "None under a distribution strategy with several replicas (the "
                              "strategy replicates the encoder already)", str(list(devices)))


def _rows(value, lo, hi):
    if isinstance(value, tf.SparseTensor):
        start = tf.concat([[tf.cast(lo, tf.int64)], tf.zeros([value.shape.rank - 1], tf.int64)], 0)
        size = tf.concat([[tf.cast(hi - lo, tf.int64)], value.dense_shape[1:]], 0)
        return tf.sparse.slice(value, start, size)
    return value[lo:hi]


def _batch_size(inputs):
    first = tf.nest.flatten(inputs, expand_composites=False)[0]
    if isinstance(first, tf.RaggedTensor):
        return first.nrows(out_type=tf.int32)
    if isinstance(first, tf.SparseTensor):
        return tf.cast(first.dense_shape[0], tf.int32)
    return tf.shape(first, out_type=tf.int32)[0]


def split_rows(inputs, replicas):
    """``inputs`` (a tensor or a structure of them, ragged and sparse included) cut into
    ``replicas`` contiguous row blocks, sizes as equal as possible (``B·r // R`` bounds), on the
    device they are on (only each block then travels to its replica)."""
    b = _batch_size(inputs)
    bounds = [(b * r) // replicas for r in range(replicas + 1)]
    return [tf.nest.map_structure(lambda t, lo=bounds[r], hi=bounds[r + 1]: _rows(t, lo, hi), inputs)
            for r in range(replicas)]


def _replica_forward(encoder, block, device, training):
    """The encoder on ``block`` under ``tf.device(device)``; its backward pass on ``device`` too."""
    anchor = tf.zeros([], tf.float32)  # custom_gradient wants a tensor argument; the block is captured

    @tf.custom_gradient
    def replica(a):
        with tf.device(device):
            with tf.GradientTape(persistent=True) as tape:
                features = encoder(block, training=training)

        def grad(upstream, variables=None):
            with tf.device(device):
                grads = tape.gradient(features, variables or [], output_gradients=upstream)
            return tf.zeros_like(a), list(grads)
        return features, grad

    return replica(anchor)


def encode(encoder, inputs, devices, training=False):
    """The encoder's features ``[B, H]`` with each row block on its device (see the module)."""
    devices = list(devices)
    _check_context(devices)
    blocks = split_rows(inputs, len(devices))
    outs = []
    for device, block in zip(devices, blocks):
        if training:
            outs.append(_replica_forward(encoder, block, device, training=True))
        else:
            with tf.device(device):
                outs.append(encoder(block, training=False))
    return tf.concat(outs, axis=0)
