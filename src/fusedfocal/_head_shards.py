"""A label-sharded ``FocalHead`` (issue 27): the kernel split over devices by labels.

``FocalHead(num_labels, label_shards=S, devices=...)`` holds ``S`` label shards: shard ``s``
owns the contiguous labels ``[start_s, start_s + size_s)`` (sizes as equal as possible, the
first ``C mod S`` shards one label longer, so ``C`` need not be a multiple of ``S``) and keeps
its kernel rows ``[size_s, H]``, its bias, its per-label vectors (``alpha``, ``class_weights``,
``logit_offsets``), and, with a head optimizer, its optimizer slots and step count, all as
variables created under ``tf.device(devices[s])``: a GPU, a logical CPU, or a remote worker's
device once ``tf.config.experimental_connect_to_cluster`` made it visible
(:mod:`fusedfocal.distributed`).

Per step (``docs/xmc_sharding.md``), every shard runs under its own ``tf.device``:

* the ``[B, H]`` features go to each shard's device (TensorFlow's runtime copies them: an
  all-gather in the one-process case, a ``Recv`` on a worker);
* each shard keeps the label ids in its range, shifted to local ids (ragged ids: a boolean
  mask; ids padded with -1: out-of-shard ids become -1; dense multi-hot: a column slice);
* it runs :func:`fusedfocal.ops.linear_focal_loss` with ``reduction="sum"`` on its rows (or the
  fused update :func:`fusedfocal.ops.head_update.linear_focal_loss_update` with
  ``shard=(s, C)``: the global ``B x C`` mean and a shard-salted rounding seed); the sigmoid
  focal loss is separable over labels, so the shards' losses sum to the whole head's exactly;
* the shard's kernel and bias gradients are formed and scaled on its device (the backward
  function is placed there explicitly); only the ``[B, H]`` ``dL/dfeatures`` and a scalar
  loss come back, and are summed;
* top-k: each shard's top ``min(k, size_s)`` logits and ids (shifted by ``start_s``) come
  back, ``S·k`` candidates per example, concatenated in shard order and reduced by one
  ``top_k``: ties go to the earlier column, i.e. the lower id, as in the unsharded head.
"""

from __future__ import annotations

import types

import numpy as np
import tensorflow as tf

from fusedfocal import _head_shard_io as io
from fusedfocal import ops
from fusedfocal._head_storage import (_STORAGE, Bfloat16BitsInitializer, _chunk_sampler, from_storage, run_xla_on,
                                      to_storage)
from fusedfocal.ops import _validation as v
from fusedfocal.ops import head_update as hu
from fusedfocal.ops._linear_inputs import check_ids
from fusedfocal.ops.linear import top_k_logits


def shard_bounds(num_labels, label_shards):
    """``[(start, size), ...]``: ``num_labels`` split into ``label_shards`` contiguous ranges,
    sizes as equal as possible (the first ``num_labels % label_shards`` one longer)."""
    q, r = divmod(int(num_labels), int(label_shards))
    sizes = [q + (1 if s < r else 0) for s in range(label_shards)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    return [(int(a), int(b)) for a, b in zip(starts, sizes)]


def check_label_shards(label_shards, num_labels):
    """None, or an int in ``[1, num_labels]``."""
    if label_shards is None:
        return None
    if isinstance(label_shards, bool) or not isinstance(label_shards, (int, np.integer)) or \
            not 1 <= label_shards <= num_labels:
        raise v.invalid("label_shards", f"None or an int in [1, num_labels={num_labels}] (each shard holds at "
                        "least one label)", label_shards)
    return int(label_shards)


def default_devices():
    """The logical GPUs, or the logical CPUs when there is no GPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def resolve_devices(devices, label_shards):
    """One device name per shard: ``devices`` (exactly ``label_shards`` of them), or by default
    :func:`default_devices` in turn (shard ``s`` on device ``s mod n``)."""
    if devices is None:
        found = default_devices()
        return [found[s % len(found)] for s in range(label_shards)]
    if isinstance(devices, str) or not all(isinstance(d, str) for d in devices) or len(devices) != label_shards:
        raise v.invalid("devices", f"None or a list of label_shards={label_shards} device names (one per shard)",
                        devices)
    return list(devices)


def shard_labels(labels, start, size):
    """Labels of one shard with shard-local ids: ragged ids masked to ``[start, start + size)`` and
    shifted, padded ids shifted with out-of-shard ids made -1 (the padding), dense multi-hot sliced."""
    if isinstance(labels, tf.RaggedTensor):
        keep = (labels >= start) & (labels < start + size)
        return tf.ragged.boolean_mask(labels, keep) - tf.cast(start, labels.dtype)
    labels = tf.convert_to_tensor(labels)
    if labels.dtype in (tf.int32, tf.int64):
        inside = (labels >= start) & (labels < start + size)
        return tf.where(inside, labels - tf.cast(start, labels.dtype), tf.constant(-1, labels.dtype))
    return labels[:, start:start + size]


def check_label_range(labels, num_labels):
    """Eagerly, a ValueError naming ``labels`` for ids outside ``[0, C)`` (-1 allowed as padding
    in a dense id tensor): a shard would drop them silently. Graph mode: assertions."""
    if isinstance(labels, tf.RaggedTensor):
        ids, lo = labels.flat_values, 0
    else:
        ids = tf.convert_to_tensor(labels)
        if ids.dtype not in (tf.int32, tf.int64):
            return []
        lo = -1
    return check_ids(ids, num_labels, lo=lo, xla=False, what="label ids")


_INIT_BLOCK = 1 << 16  # rows drawn per seed when a float32 shard is initialised


def _kernel_initializer(layer, full_shape, start, index, device):
    """The shard's rows drawn with the whole head's distribution (a variance-scaling initializer's
    fans from ``[C, H]``, not from the shard's shape). float32: from seeds of fixed blocks of
    global rows, so that the initial kernel is the same for every ``label_shards`` (not the
    unsharded head's, which Keras draws at once), written block by block into the shard inside one
    XLA function (the shard and one block in memory) run on the shard's device, a remote worker's
    included (:func:`fusedfocal._head_storage.run_xla_on`); bfloat16: from a shard-salted seed."""
    init, lib = layer.kernel_initializer, layer._lib
    if layer.weight_dtype != "float32":
        return Bfloat16BitsInitializer(init, lib, fan_shape=full_shape, salt=index, device=device)
    sampler = _chunk_sampler(init, lib, full_shape)
    if sampler is None:
        return init
    seed = getattr(init, "seed", None)
    seed = int(seed) if isinstance(seed, (int, np.integer)) else int(np.random.randint(0, 2**31 - 1))

    def draw(shape, dtype=None):
        size, hidden = int(shape[0]), int(shape[1])

        @tf.function(jit_compile=True)
        def fill(seed_t):  # the seed an argument: a constant one could be folded outside XLA (other numbers)
            from tensorflow.compiler.tf2xla.python import xla as _tfxla

            buf = tf.zeros([size, hidden], tf.float32)
            for b in range(start // _INIT_BLOCK, (start + size - 1) // _INIT_BLOCK + 1):
                lo, hi = max(start, b * _INIT_BLOCK), min(start + size, (b + 1) * _INIT_BLOCK)
                rows = sampler(tf.stack([seed_t, tf.constant(b, tf.int64)]), _INIT_BLOCK)
                buf = _tfxla.dynamic_update_slice(buf, rows[lo - b * _INIT_BLOCK:hi - b * _INIT_BLOCK],
                                                  tf.constant([lo - start, 0]))
            return buf

        with tf.init_scope():
            return tf.cast(run_xla_on(fill, device, tf.constant(seed, tf.int64)), dtype or "float32")
    return draw


def _vector_initializer(value, start, size):
    part = np.asarray(value, np.float64)[start:start + size] if isinstance(value, np.ndarray) else None

    def init(shape, dtype=None):
        dtype = tf.as_dtype(dtype or "float32")
        return tf.zeros(shape, dtype) if part is None else tf.constant(part, dtype, shape=shape)
    return init


def _add(layer, device, **kwargs):
    """``layer.add_weight`` on ``device``. Keras 3 defers a variable's creation when the layer is
    built inside a symbolic call (``fit``/``predict`` building the model), out of this
    ``tf.device`` scope: the deferred creation is put back on ``device``."""
    var = layer.add_weight(**kwargs)
    if getattr(var, "_value", "") is None and callable(getattr(var, "_initialize", None)):
        initialize = var._initialize

        def on_device(value):
            with tf.device(device):
                return initialize(value)
        var._initialize = on_device
    return var


def build_shards(layer, hidden):
    """Creates each shard's variables on its device; returns the list of shard namespaces."""
    full = (layer.num_labels, hidden)
    opt = layer.head_optimizer
    trainable = opt is None
    devices = resolve_devices(layer.devices, layer.label_shards)
    shards = []
    for s, (start, size) in enumerate(shard_bounds(layer.num_labels, layer.label_shards)):
        sh = types.SimpleNamespace(index=s, start=start, size=size, device=devices[s], vectors={}, state=None)
        with tf.device(sh.device):
            sh.kernel = _add(layer, sh.device, name=f"kernel_shard{s}", shape=(size, hidden), trainable=trainable,
                                         initializer=_kernel_initializer(layer, full, start, s, sh.device),
                                         dtype=_STORAGE[layer.weight_dtype])
            sh.bias = (_add(layer, sh.device, name=f"bias_shard{s}", shape=(size,), initializer=layer.bias_initializer,
                                        trainable=trainable) if layer.use_bias else None)
            if opt is not None:
                sh.state = _build_state(layer, sh, hidden, opt.update)
            for name, value in layer._vectors.items():
                if isinstance(value, (np.ndarray, str)):  # a vector, or "per_class"
                    sh.vectors[name] = _add(layer, sh.device, name=f"{name}_shard{s}", shape=(size,), trainable=False,
                                                        initializer=_vector_initializer(value, start, size))
        shards.append(sh)
    return shards


def _build_state(layer, sh, hidden, update):
    slots = {}
    for name in update.slot_names:
        k = _add(layer, sh.device, name=f"kernel_{name}_shard{sh.index}", shape=(sh.size, hidden), initializer="zeros",
                             trainable=False, dtype=_STORAGE[update.moment_dtype])
        b = (_add(layer, sh.device, name=f"bias_{name}_shard{sh.index}", shape=(sh.size,), initializer="zeros",
                              trainable=False, dtype="float32") if layer.use_bias else None)
        slots[name] = (k, b)
    it = _add(layer, sh.device, name=f"head_iterations_shard{sh.index}", shape=(), initializer="zeros",
                          trainable=False, dtype="int64")
    return hu.HeadState(kernel=sh.kernel, bias=sh.bias, slots=slots, iterations=it)


def _shard_vectors(layer, sh):
    out = {}
    for name, value in layer._vectors.items():
        w = sh.vectors.get(name)
        out[name] = tf.convert_to_tensor(w) if w is not None else value
    return out


def _shard_weights(layer, sh, dtype):
    if layer.weight_dtype != "float32":
        kernel = from_storage(sh.kernel)
    else:
        kernel = tf.cast(sh.kernel, dtype)
    return kernel, None if sh.bias is None else tf.cast(sh.bias, dtype)


def _on_device(features):
    """``features`` copied to the current ``tf.device`` once. Without it, the chunk loop captures a
    tensor of another device, and TensorFlow's partitioner sends it again in every iteration of the
    loop (measured: ``[B, H]`` once per chunk between the chief and each worker)."""
    return tf.identity(features)


def _placed_loss(layer, sh, features, labels):
    """One shard's share of the loss; its gradients are formed in the forward pass and scaled in
    the backward pass on ``sh.device`` (the placer would put unplaced backward ops on the caller's
    device: a kernel-sized transfer)."""
    with tf.device(sh.device):
        local = shard_labels(labels, sh.start, sh.size)
        kernel, bias = _shard_weights(layer, sh, features.dtype)
        features = _on_device(features)
    want = ops.linear.could_record()  # (not inside the custom gradient: it stops recording)

    @tf.custom_gradient
    def inner(x, k, *b):
        with tf.device(sh.device):
            loss, grads = ops.linear.linear_focal_loss_parts(
                x, k, b[0] if b else None, local, total_labels=layer.num_labels, want_grads=want,
                gamma=layer.gamma, reduction=layer.reduction, kernel_layout="ch", chunk_size=layer.chunk_size,
                **_shard_vectors(layer, sh))
        grads = [g for g in grads if g is not None]

        def grad(upstream):
            if not want:
                raise ValueError("the label-sharded loss was computed where no gradient tape was recording")
            with tf.device(sh.device):
                up = tf.cast(upstream, tf.float32)
                return [tf.cast(tf.cast(g, tf.float32) * up, g.dtype) for g in grads]
        return loss, grad

    return inner(features, kernel) if bias is None else inner(features, kernel, bias)


def _check_not_xla(layer):
    from fusedfocal.ops import native

    if native.in_xla_context() and len({sh.device for sh in layer._shards}) > 1:
        raise ValueError("Invalid value for argument `jit_compile`. Expected False with a FocalHead whose label "
                         "shards are on several devices (XLA compiles a step for one device). Received: "
                         f"jit_compile=True with devices {sorted({sh.device for sh in layer._shards})}")


def sharded_loss(layer, features, labels):
    """The head's loss, shard by shard on their devices; the sum of the shards' losses."""
    _check_not_xla(layer)
    checks = check_label_range(labels, layer.num_labels)
    with tf.control_dependencies(checks):
        return tf.add_n([_placed_loss(layer, sh, features, labels) for sh in layer._shards])


def sharded_loss_and_update(layer, features, labels):
    """The fused update on every shard (global mean scale, shard-salted seed); the summed loss."""
    _check_not_xla(layer)
    checks = check_label_range(labels, layer.num_labels)
    lr = layer.head_optimizer.current_learning_rate(layer._shards[0].state.iterations)
    losses = []
    with tf.control_dependencies(checks):
        for sh in layer._shards:
            local = shard_labels(labels, sh.start, sh.size)
            with tf.device(sh.device):
                losses.append(hu.linear_focal_loss_update(
                    _on_device(features), sh.state, local, update=layer.head_optimizer.update, learning_rate=lr,
                    gamma=layer.gamma, reduction=layer.reduction, chunk_size=layer.chunk_size,
                    shard=(sh.index, layer.num_labels), **_shard_vectors(layer, sh)))
    return tf.add_n(losses)


def sharded_top_k(layer, features):
    """``(scores, ids)``: each shard's top-k logits merged, ties to the lower id."""
    vals, ids = [], []
    for sh in layer._shards:
        with tf.device(sh.device):
            kernel, bias = _shard_weights(layer, sh, features.dtype)
            best, idx = top_k_logits(_on_device(features), kernel, bias, min(layer.top_k, sh.size), kernel_layout="ch",
                                     chunk_size=layer.chunk_size)
            vals.append(best)
            ids.append(idx + sh.start)
    top, pos = tf.math.top_k(tf.concat(vals, axis=1), layer.top_k)  # ties: earlier column = lower id
    return tf.cast(tf.sigmoid(top), tf.float32), tf.gather(tf.concat(ids, axis=1), pos, batch_dims=1)


class ShardedHeadMixin:
    """``label_shards``/``devices`` for ``FocalHead``; mixed in before :class:`FocalHeadMixin`.
    With ``label_shards=None`` (the default) every method is the unsharded head's."""

    def __init__(self, num_labels, *args, label_shards=None, devices=None, **kwargs):
        super().__init__(num_labels, *args, **kwargs)
        self.label_shards = check_label_shards(label_shards, self.num_labels)
        if devices is not None and self.label_shards is None:
            raise v.invalid("devices", "None without label_shards (devices place the label shards)", devices)
        self.devices = None if devices is None else resolve_devices(devices, self.label_shards)
        self._shards = []

    def build(self, input_shape):
        if self.label_shards is None:
            return super().build(input_shape)
        hidden = tf.TensorShape(input_shape)[-1]
        if hidden is None:
            raise v.invalid("input_shape", "a known last dimension (the feature size H)", input_shape)
        if self.weight_dtype != "float32" and self.head_optimizer is None:
            raise v.invalid("weight_dtype", "'float32' without a head optimizer (a bfloat16 head is trained by "
                            "the fused update: FocalHeadModel(..., head_optimizer=...))", self.weight_dtype)
        object.__setattr__(self, "_shards", build_shards(self, int(hidden)))
        self.kernel = self.bias = None
        self._head_state = None
        self.built = True

    def call(self, features, training=None):
        """As ``FocalHeadMixin.call``; sharded inference merges the shards' top-k candidates."""
        if self.label_shards is None or training:
            return super().call(features, training=training)
        scores, ids = sharded_top_k(self, features)
        out = {"ids": ids, "scores": scores}
        if self.full_scores:
            kernel, bias = self.float_weights()
            logits = tf.matmul(tf.cast(features, tf.float32), tf.cast(kernel, tf.float32), transpose_b=True)
            out["probabilities"] = tf.sigmoid(logits if bias is None else logits + bias)
        return out

    def loss(self, features, labels):
        """The fused focal loss (see ``FocalHeadMixin.loss``); sharded: the sum of the shards' losses,
        each computed on its shard's device (``docs/xmc_sharding.md``)."""
        if self.label_shards is None:
            return super().loss(features, labels)
        return sharded_loss(self, features, labels)

    def loss_and_update(self, features, labels):
        """The loss with the head updated by its optimizer in the same pass (see
        ``FocalHeadMixin.loss_and_update``); sharded: each shard's fused update on its device, with
        the whole head's mean scale and a shard-salted rounding seed."""
        if self.label_shards is None:
            return super().loss_and_update(features, labels)
        if self.head_optimizer is None:
            raise v.invalid("head_optimizer", "a head optimizer (FocalHeadModel(..., head_optimizer=...))", None)
        return sharded_loss_and_update(self, features, labels)

    @property
    def shards(self):
        """A list with one namespace per label shard (``index``, ``start``, ``size``, ``device``,
        ``kernel``, ``bias``, ``vectors``, and ``state``, the fused update's variables); empty when
        the head is not sharded."""
        return list(self._shards)

    @property
    def head_iterations(self):
        """Steps taken by the head optimizer (None without one)."""
        if self.label_shards is None:
            return super().head_iterations
        return None if self.head_optimizer is None else self._shards[0].state.iterations

    def float_weights(self):
        """``(kernel [C, H], bias [C] or None)`` as float tensors (sharded: gathered from every
        shard, a whole-kernel copy: for inspection and small heads)."""
        if self.label_shards is None:
            return super().float_weights()
        kernel = tf.concat([from_storage(sh.kernel) for sh in self._shards], axis=0)
        bias = None if not self.use_bias else tf.concat([tf.convert_to_tensor(sh.bias) for sh in self._shards], 0)
        return kernel, bias

    def set_kernel(self, values):
        """Assigns float ``values`` ``[C, H]`` to the kernel (sharded: each shard its rows)."""
        if self.label_shards is None:
            return super().set_kernel(values)
        values = tf.convert_to_tensor(values)
        for sh in self._shards:
            sh.kernel.assign(to_storage(values[sh.start:sh.start + sh.size], sh.kernel.dtype))

    def set_bias(self, values):
        """Assigns float ``values`` ``[C]`` to the bias (sharded: each shard its labels')."""
        values = tf.convert_to_tensor(values, tf.float32)
        if self.label_shards is None:
            return self.bias.assign(tf.cast(values, self.bias.dtype))
        for sh in self._shards:
            sh.bias.assign(values[sh.start:sh.start + sh.size])

    def layout(self):
        """How the head is laid out: ``[(device, start, size), ...]`` per shard (unsharded: one)."""
        if self.label_shards is None:
            return [(None, 0, self.num_labels)]
        return [(sh.device, sh.start, sh.size) for sh in self._shards]

    def save_own_variables(self, store):
        """Saves the weights; a sharded head shard by shard, with its label bounds (see
        :mod:`fusedfocal._head_shard_io`)."""
        if self.label_shards is None:
            return super().save_own_variables(store)
        io.save(self, store)

    def load_own_variables(self, store):
        """Loads weights saved by a head of any ``label_shards`` (re-split to this head's)."""
        io.load(self, store, super().load_own_variables)

    def get_config(self):
        config = super().get_config()
        config["label_shards"] = self.label_shards
        return config
