"""The fused classifier head (issue 19), declared once for Keras 3 and tf_keras.

:class:`FocalHeadMixin` is the body of ``FocalHead``, a layer holding a
label-major kernel ``[C, H]`` and bias ``[C]``; :class:`HeadModelMixin` the
body of ``FocalHeadModel(encoder, head)``. :func:`define_head_classes` builds
one flavour's pair from them (``fusedfocal.keras`` and ``fusedfocal.legacy``
differ only in their Keras module and in how a model adds its loss), so the
twins cannot drift, as for the loss classes of :mod:`fusedfocal._registry`.

How the loss reaches ``fit``, in both Kerases and with ragged ``y``:

* ``FocalHead.call(features, training=True)`` returns ``{"features": features}``
  (no logits, no top-k: nothing of ``[B, C]``); at inference it returns the
  top-k, ``{"ids": int32 [B, k], "scores": float32 [B, k]}``, computed chunk
  by chunk by :func:`fusedfocal.ops.linear_top_k`.
* ``FocalHead.loss(features, labels)`` is the fused op
  :func:`fusedfocal.ops.linear_focal_loss` on the layer's weights.
* ``FocalHeadModel`` overrides ``compute_loss``, the one hook both Kerases'
  ``train_step``/``test_step`` call with ``y`` untouched, so ragged label ids
  from ``tf.data`` reach the op as they are; nothing else of ``fit`` (optimizer,
  loss scaling for ``mixed_float16``, ``MirroredStrategy``, ``jit_compile``,
  callbacks) is replaced. A compiled Keras loss would not do: Keras 3 and
  tf_keras convert ``y_true`` to a dense tensor, and a ``Loss`` cannot reach
  the kernel. ``add_loss`` from inside the layer would need the labels as a
  model input, so ``predict`` would need labels too.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fusedfocal import _head_optim, _head_replicas, ops
from fusedfocal._head_shards import ShardedHeadMixin
from fusedfocal._head_storage import _STORAGE, Bfloat16BitsInitializer, from_storage, to_storage
from fusedfocal.ops import _validation as v
from fusedfocal.ops import head_update as hu

PER_CLASS = "per_class"  # a config marker: the vector lives in the weights, not in the config
_VECTORS = ("alpha", "class_weights", "logit_offsets")
_RANGES = {"alpha": (0.0, 1.0), "class_weights": (0.0, None), "logit_offsets": (-np.inf, None)}


def _check_positive_int(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise v.invalid(name, "a positive int" + (" or None" if allow_none else ""), value)
    return int(value)


def _check_vector(name, value, num_labels):
    """None, a float, the marker ``"per_class"`` or a float64 vector of length ``num_labels``."""
    if isinstance(value, str):
        if value != PER_CLASS:
            raise v.invalid(name, f"None, a float, a vector of length {num_labels} or {PER_CLASS!r}", value)
        return value
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    lo, hi = _RANGES[name]
    out = v.check_class_vector(name, value, lo=lo, hi=hi)
    if isinstance(out, np.ndarray) and out.shape != (num_labels,):
        raise v.invalid(name, f"a float or a vector of length num_labels={num_labels}",
                        f"array of shape {out.shape}", describe=True)
    return out


def _constant(value):
    def init(shape, dtype=None):
        return tf.constant(value, dtype=tf.as_dtype(dtype or "float32"), shape=shape)
    return init


class FocalHeadMixin:
    """The body of ``FocalHead``; mixed in before a Keras ``Layer``."""

    def __init__(self, num_labels, gamma=2.0, alpha=None, class_weights=None, logit_offsets=None,
                 reduction="mean", top_k=5, chunk_size=None, full_scores=False, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", weight_dtype="float32",
                 head_optimizer=None, **kwargs):
        super().__init__(**kwargs)
        if weight_dtype not in hu.WEIGHT_DTYPES:
            raise v.invalid("weight_dtype", f"one of {set(hu.WEIGHT_DTYPES)}", weight_dtype)
        self.weight_dtype = weight_dtype
        # Usually given to FocalHeadModel(head_optimizer=...), which sets it here; kept in this
        # layer's config so that a saved head is rebuilt with its slots.
        self.head_optimizer = _head_optim.resolve(head_optimizer, self._lib)
        self.num_labels = _check_positive_int("num_labels", num_labels)
        self.gamma = v.check_nonnegative_float("gamma", gamma)
        self._vectors = {}
        for name, value in (("alpha", alpha), ("class_weights", class_weights), ("logit_offsets", logit_offsets)):
            self._vectors[name] = _check_vector(name, value, self.num_labels)
        if reduction not in ("mean", "sum"):
            raise v.invalid("reduction", "one of {'mean', 'sum'}", reduction)
        self.reduction = reduction
        self.top_k = _check_positive_int("top_k", top_k)
        if self.top_k > self.num_labels:
            raise v.invalid("top_k", f"at most num_labels={self.num_labels}", top_k)
        self.chunk_size = _check_positive_int("chunk_size", chunk_size, allow_none=True)
        if not isinstance(full_scores, bool):
            raise v.invalid("full_scores", "a bool", full_scores)
        self.full_scores = full_scores
        if not isinstance(use_bias, bool):
            raise v.invalid("use_bias", "a bool", use_bias)
        self.use_bias = use_bias
        self.kernel_initializer = self._lib.initializers.get(kernel_initializer)
        self.bias_initializer = self._lib.initializers.get(bias_initializer)

    def build(self, input_shape):
        hidden = tf.TensorShape(input_shape)[-1]
        if hidden is None:
            raise v.invalid("input_shape", "a known last dimension (the feature size H)", input_shape)
        # Label-major [C, H] ("ch"): a chunk of labels is a contiguous slab of rows. With a head
        # optimizer the fused update trains them, so they are not trainable variables (compile's
        # optimizer never sees them). A bfloat16 kernel is stored as its bit patterns in a uint16
        # variable, drawn in bfloat16 chunk by chunk; the bias ([C], small) stays float32.
        trainable = self.head_optimizer is None
        if self.weight_dtype == "float32":
            self.kernel = self.add_weight(name="kernel", shape=(self.num_labels, int(hidden)),
                                          initializer=self.kernel_initializer, trainable=trainable)
        else:
            if self.head_optimizer is None:
                raise v.invalid("weight_dtype", "'float32' without a head optimizer (a bfloat16 head is "
                                "trained by the fused update: FocalHeadModel(..., head_optimizer=...))",
                                self.weight_dtype)
            self.kernel = self.add_weight(name="kernel", shape=(self.num_labels, int(hidden)),
                                          initializer=Bfloat16BitsInitializer(self.kernel_initializer, self._lib),
                                          trainable=False, dtype=_STORAGE[self.weight_dtype])
        self.bias = (self.add_weight(name="bias", shape=(self.num_labels,), initializer=self.bias_initializer,
                                     trainable=trainable) if self.use_bias else None)
        self._head_state = None if self.head_optimizer is None else self._build_head_state(int(hidden))
        self._vector_weights = {}
        for name, value in self._vectors.items():
            if isinstance(value, np.ndarray) or value == PER_CLASS:
                # An initializer, not an assign: build may run inside a traced function.
                init = _constant(value) if isinstance(value, np.ndarray) else "zeros"
                self._vector_weights[name] = self.add_weight(name=name, shape=(self.num_labels,),
                                                             initializer=init, trainable=False)
        self.built = True

    # -- the two uses -------------------------------------------------------------------------------

    def call(self, features, training=None):
        """Training: ``{"features": features}`` for :meth:`loss`. Inference: the top-k
        ``{"ids": int32 [B, k], "scores": float32 [B, k]}`` (sigmoid probabilities, best
        first), plus ``"probabilities"`` float32 ``[B, C]`` with ``full_scores=True``."""
        if training:
            return {"features": features}
        kernel, bias = self._weights_like(features)
        scores, ids = ops.linear_top_k(features, kernel, bias, self.top_k, kernel_layout="ch",
                                       chunk_size=self.chunk_size)
        out = {"ids": ids, "scores": scores}
        if self.full_scores:
            logits = tf.matmul(tf.cast(features, tf.float32), tf.cast(kernel, tf.float32), transpose_b=True)
            if bias is not None:
                logits += tf.cast(bias, tf.float32)
            out["probabilities"] = tf.sigmoid(logits)
        return out

    def loss(self, features, labels):
        """The fused focal loss of ``features @ kernel.T + bias`` against ``labels``.

        Args:
          features: float ``[B, H]`` (float16/bfloat16 accumulate in float32).
          labels: ``tf.RaggedTensor`` int ids ``[B, None]``, int ids ``[B, L]``
            padded with -1, or dense multi-hot ``[B, C]`` for small ``C``.

        Returns:
          The float32 scalar loss (``reduction`` over ``B × C``).
        """
        kernel, bias = self._weights_like(features)
        kw = self._loss_vectors()
        return ops.linear_focal_loss(features, kernel, bias, labels, gamma=self.gamma, reduction=self.reduction,
                                     kernel_layout="ch", chunk_size=self.chunk_size, **kw)

    def _build_head_state(self, hidden):
        """The head optimizer's slots (kernel ``[C, H]`` in ``moment_dtype``, bias ``[C]``
        float32) and step count, as non-trainable weights: they save, load and resume with the
        model (a checkpoint of a model with a head optimizer holds them)."""
        update = self.head_optimizer.update
        slots = {}
        for name in update.slot_names:
            k = self.add_weight(name=f"kernel_{name}", shape=(self.num_labels, hidden), initializer="zeros",
                                trainable=False, dtype=_STORAGE[update.moment_dtype])
            b = (self.add_weight(name=f"bias_{name}", shape=(self.num_labels,), initializer="zeros",
                                 trainable=False, dtype="float32") if self.use_bias else None)
            slots[name] = (k, b)
        iterations = self.add_weight(name="head_iterations", shape=(), initializer="zeros", trainable=False,
                                     dtype="int64")
        return hu.HeadState(kernel=self.kernel, bias=self.bias, slots=slots, iterations=iterations)

    def set_head_optimizer(self, head_optimizer):
        """Trains this head with the fused update (called by ``FocalHeadModel``); before ``build``."""
        if self.built and head_optimizer != self.head_optimizer:
            raise v.invalid("head_optimizer", "a FocalHead that is not built yet (its weights' trainability "
                            "and the optimizer's slots are decided when it is built)", f"built head {self.name!r}",
                            describe=True)
        self.head_optimizer = head_optimizer

    def float_weights(self):
        """``(kernel [C, H], bias [C] or None)`` as float tensors: the kernel in its ``weight_dtype``
        (a bfloat16 kernel is stored as bit patterns in a uint16 variable, which XLA on the CPU
        updates in place; this reads it as bfloat16)."""
        return from_storage(self.kernel), None if self.bias is None else tf.convert_to_tensor(self.bias)

    def set_kernel(self, values):
        """Assigns float ``values`` ``[C, H]`` to the kernel in its storage (bfloat16: rounded to nearest)."""
        self.kernel.assign(to_storage(tf.convert_to_tensor(values), self.kernel.dtype))

    @property
    def head_iterations(self):
        """Steps taken by the head optimizer (None without one)."""
        return None if self._head_state is None else self._head_state.iterations

    def loss_and_update(self, features, labels):
        """The fused loss of :meth:`loss`, with the head updated by its optimizer in the same pass
        (:func:`fusedfocal.ops.head_update.linear_focal_loss_update`): the loss's gradient reaches
        ``features`` only. Raises ValueError without a head optimizer or under a distribution
        strategy with more than one replica (each replica would update its own copy)."""
        if self._head_state is None:
            raise v.invalid("head_optimizer", "a head optimizer (FocalHeadModel(..., head_optimizer=...))",
                            None)
        v.refuse_several_replicas("head_optimizer", "None under a distribution strategy with more than one replica "
                                  "(the fused update changes each replica's copy of the head on its own)",
                                  repr(self.head_optimizer.update.optimizer))
        kw = self._loss_vectors()
        lr = self.head_optimizer.current_learning_rate(self._head_state.iterations)
        return hu.linear_focal_loss_update(features, self._head_state, labels, update=self.head_optimizer.update,
                                           learning_rate=lr, gamma=self.gamma, reduction=self.reduction,
                                           chunk_size=self.chunk_size, **kw)

    def _loss_vectors(self):
        kw = {name: (self._vector_weights[name] if name in self._vector_weights else value)
              for name, value in self._vectors.items()}
        return {name: (tf.convert_to_tensor(w) if not isinstance(w, (float, type(None))) else w)
                for name, w in kw.items()}

    def _weights_like(self, features):
        """Kernel and bias in the features' dtype (mixed precision keeps float32 variables).
        bfloat16 storage is passed as it is (the ops cast chunk by chunk: no float32 copy)."""
        if self.weight_dtype != "float32":  # bit patterns as bfloat16 (no copy in graph mode)
            bias = None if self.bias is None else tf.cast(self.bias, features.dtype)
            return from_storage(self.kernel), bias
        dtype = tf.as_dtype(features.dtype)
        kernel = tf.cast(self.kernel, dtype)
        bias = None if self.bias is None else tf.cast(self.bias, dtype)
        return kernel, bias

    def compute_output_shape(self, input_shape):
        batch = tf.TensorShape(input_shape)[0]
        out = {"ids": (batch, self.top_k), "scores": (batch, self.top_k)}
        if self.full_scores:
            out["probabilities"] = (batch, self.num_labels)
        return out

    def get_config(self):
        config = super().get_config()
        opt = None if self.head_optimizer is None else self.head_optimizer.get_config(self._lib)
        vectors = {name: (PER_CLASS if isinstance(value, np.ndarray) else value)
                   for name, value in self._vectors.items()}
        config.update(num_labels=self.num_labels, gamma=self.gamma, reduction=self.reduction, top_k=self.top_k,
                      chunk_size=self.chunk_size, full_scores=self.full_scores, use_bias=self.use_bias,
                      weight_dtype=self.weight_dtype,
                      head_optimizer=opt,
                      kernel_initializer=self._lib.initializers.serialize(self.kernel_initializer),
                      bias_initializer=self._lib.initializers.serialize(self.bias_initializer), **vectors)
        return config


class HeadModelMixin:
    """The body of ``FocalHeadModel``; mixed in before a Keras ``Model``."""

    def __init__(self, encoder, head, head_optimizer=None, encoder_devices=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(head, self._head_class):
            raise TypeError(f"Invalid type for argument `head`. Expected a {self._head_class.__module__}."
                            f"FocalHead. Received: {type(head).__name__}")
        encoder_devices = _head_replicas.check_encoder_devices(encoder_devices, head)
        head_optimizer = _head_optim.resolve(head_optimizer, self._lib)
        if head_optimizer is not None:
            head.set_head_optimizer(head_optimizer)
        self.encoder = encoder
        self.head = head
        object.__setattr__(self, "_encoder_devices", encoder_devices)  # (not tracked by Keras)

    @property
    def encoder_devices(self):
        """The devices the encoder runs on, one row block of each batch on each, or None where
        the model runs it; ``"shards"`` is resolved to the head's label-shard devices once the
        head is built."""
        return _head_replicas.resolve(self._encoder_devices, self.head)

    def _features(self, inputs, training):
        return _head_replicas.features(self.encoder, inputs, self.encoder_devices, training)

    def call(self, inputs, training=None):
        return self.head(self._features(inputs, training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if getattr(self, "loss", None):  # compile(loss=...): Keras would never see the ragged labels
            raise v.invalid("loss", "None in compile() (FocalHeadModel's loss is its head's)", self.loss)
        if sample_weight is not None:
            raise ValueError("FocalHeadModel does not take `sample_weight` (the fused loss has no per-example "
                             "weights); use the head's `class_weights`. Received: sample_weight="
                             f"{getattr(sample_weight, 'shape', sample_weight)}")
        if isinstance(y_pred, dict) and "features" in y_pred:
            features = y_pred["features"]
            if self.head.head_optimizer is not None:  # training: the fused update, once a step
                return self._total_loss(self.head.loss_and_update(features, y), y_pred)
        else:  # evaluation: the head returned the top-k, so run the encoder once more
            features = self._features(x, training=False)
        return self._total_loss(self.head.loss(features, y), y_pred)

    def get_config(self):
        s = self._lib.saving.serialize_keras_object
        # the head optimizer is in the head's config (the head is rebuilt with its slots)
        return {"name": self.name, "encoder": s(self.encoder), "head": s(self.head)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        d = cls._lib.saving.deserialize_keras_object
        encoder = d(config.pop("encoder"), custom_objects=custom_objects)
        head = d(config.pop("head"), custom_objects=custom_objects)
        return cls(encoder, head, **config)


HEAD_DOC = """A dense classifier layer fused with the sigmoid focal loss, for huge label counts ({keras}).

    Holds a label-major kernel ``[num_labels, H]`` and a bias ``[num_labels]``.
    Training never forms ``[batch, num_labels]`` logits: the loss is
    :func:`fusedfocal.ops.linear_focal_loss`, chunk by chunk over labels; so
    is the top-k at inference (:func:`fusedfocal.ops.linear_top_k`). Train it
    inside :class:`FocalHeadModel` (or call :meth:`loss` from your own
    ``compute_loss``).

    Args:
      num_labels: Number of labels ``C``.
      gamma: Focusing parameter >= 0 (0 gives BCE).
      alpha: None, a float in [0, 1] or a vector of length ``C``.
      class_weights: None, a float or a vector ``[C]`` of per-label weights
        (class-balanced weights for tail labels).
      logit_offsets: None, a float or a vector ``[C]`` added to the logits in
        the loss only (logit adjustment, ``tau * log(prior)``); predictions use
        the raw logits.
      reduction: ``"mean"`` (over ``B × C``, as the unfused loss) or ``"sum"``.
      top_k: Labels returned per example at inference.
      chunk_size: Labels per chunk (None: the op's default).
      full_scores: Also return ``"probabilities"`` ``[B, C]`` at inference
        (small ``C`` only).
      use_bias: Whether to add a bias.
      kernel_initializer: Initializer of the ``[C, H]`` kernel.
      bias_initializer: Initializer of the bias; a prior bias
        (:func:`fusedfocal.prior_bias_initializer`) helps with many rare labels.
      weight_dtype: ``"float32"`` (default) or ``"bfloat16"``: how the kernel
        is stored (the bias stays float32). bfloat16 halves the kernel's
        memory; every chunk is still computed in float32. A bfloat16 head
        needs a head optimizer (``FocalHeadModel(..., head_optimizer=...)``),
        whose update rounds stochastically (a Keras optimizer would round to
        nearest and stall on small steps), and is stored as its bit patterns
        in a ``uint16`` variable, the one storage XLA on the CPU updates in
        place: read it with :meth:`float_weights`, write it with
        :meth:`set_kernel`.
      label_shards: None (default: one kernel) or ``S`` in ``[1, num_labels]``:
        the kernel, bias, per-label vectors and head-optimizer slots split
        into ``S`` contiguous label shards (sizes as equal as possible), each
        on its own device; per step only ``[B, H]`` features, their gradient,
        scalars and ``[B, k]`` top-k candidates cross devices. The loss, its
        gradients and the top-k equal the unsharded head's; weights saved
        with any ``S`` load with any other (``docs/xmc_sharding.md``).
      devices: None (the logical GPUs, else CPUs, in turn) or one device
        name per shard (e.g. remote workers' devices, see
        :mod:`fusedfocal.distributed`); not stored in the config.
      **kwargs: Layer arguments (``name``, ``dtype``, ...).

    Per-label vectors are stored as non-trainable weights (the config holds
    ``"per_class"``), so a model with 3 million labels keeps a small config.

    Call:
      ``head(features, training=True)`` -> ``{{"features": features}}``;
      ``head(features)`` -> ``{{"ids": int32 [B, top_k], "scores": float32 [B, top_k]}}``.
    """

MODEL_DOC = """An encoder followed by a :class:`FocalHead`, trained with the head's fused loss ({keras}).

    ``fit`` takes ``(x, y)`` with ``y`` the label ids of each example: a
    ``tf.RaggedTensor`` int ``[B, None]`` (``PipelineConfig(label_format="ids")``),
    ids ``[B, L]`` padded with -1, or multi-hot ``[B, C]`` for small ``C``.
    ``compile`` takes no ``loss`` (the head's is used; ``metrics`` on the
    top-k are not supported: evaluate ``predict``'s output with
    :mod:`fusedfocal.metrics_xmc`). ``predict`` returns the top-k,
    ``{{"ids": int32 [N, k], "scores": float32 [N, k]}}``. ``evaluate`` reports the
    loss (it runs the encoder a second time for it).

    Args:
      encoder: A layer or model from the inputs to features ``[B, H]``.
      head: A ``FocalHead`` (not built yet when ``head_optimizer`` is given).
      head_optimizer: None (default: the head trains with the optimizer given
        to ``compile``, as any layer), ``"sgd"``, ``"adam"``, a dict of
        :class:`fusedfocal.ops.head_update.HeadUpdate` fields plus
        ``learning_rate`` (a float or a Keras ``LearningRateSchedule``), or a
        Keras ``SGD``/``Adam`` instance (``clipnorm``, ``global_clipnorm``,
        ``amsgrad`` and ``use_ema`` are refused). The head is then updated by
        the fused path inside its loss (no kernel-sized gradient ever exists;
        :func:`fusedfocal.ops.head_update.linear_focal_loss_update`), its
        weights are not trainable variables of the model, and compile's
        optimizer trains the encoder only. The head's slots and step count
        are weights of the head, so they save, load and resume with the
        model. Not under a distribution strategy with several replicas.
      encoder_devices: None (default: the encoder runs where the model
        runs), ``"shards"`` (the devices of the head's label shards) or a
        list of device names: the encoder is data-parallel over them, each
        batch split into that many contiguous row blocks, block ``r``
        encoded on ``encoder_devices[r]`` (forward and backward), the
        features concatenated back in order for the head. The encoder's
        variables stay where they were created and the blocks' gradients
        are summed, so training equals the one-device encoder's (but for
        per-block random draws such as dropout's). With a label-sharded
        head on worker processes (:mod:`fusedfocal.distributed`) this puts
        the encoder on the workers too. Not stored in the config.

    Example:
      >>> import {lib}, {module}
      >>> encoder = {lib}.Sequential([{lib}.layers.Embedding(100, 8), {lib}.layers.GlobalAveragePooling1D()])
      >>> model = {module}.FocalHeadModel(encoder, {module}.FocalHead(1000, gamma=2.0, top_k=5))
      >>> model.compile(optimizer="adam")
    """


def define_head_classes(layer_base, model_base, lib, total_loss, register, module, keras_name):
    """``{"FocalHead": ..., "FocalHeadModel": ...}`` for one Keras flavour.

    ``total_loss(model, head_loss, y_pred)`` adds the model's other losses
    and scales for ``tf.distribute`` the way that Keras does for ``add_loss``.
    """
    fmt = dict(keras=keras_name, lib=lib.__name__, module=module)
    head = register(type("FocalHead", (ShardedHeadMixin, FocalHeadMixin, layer_base), {
        "__module__": module, "__qualname__": "FocalHead", "__doc__": HEAD_DOC.format(**fmt), "_lib": lib}))
    model = register(type("FocalHeadModel", (HeadModelMixin, model_base), {
        "__module__": module, "__qualname__": "FocalHeadModel", "__doc__": MODEL_DOC.format(**fmt), "_lib": lib,
        "_head_class": head, "_total_loss": total_loss}))
    return {"FocalHead": head, "FocalHeadModel": model}
