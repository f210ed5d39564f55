"""What the Keras 3 and tf_keras loss classes share.

Both wrappers are thin: ``call`` forwards to a functional loss
``fn(logits, labels, **params)``; the base ``Loss.__call__`` of each Keras
handles dtype, masks and reduction. Two things Keras does not do for us:

* ``sample_weight`` of shape ``[B]`` next to an element-wise ``[B, C]`` loss
  would broadcast along the wrong axis (Keras only expands it when ``C == 1``),
  so it is expanded to ``[B, 1]`` here; ``[B, C]`` weights pass through and
  give per-label weights (0 masks a missing label).
* NumPy per-class parameters must become lists in ``get_config``.
* Keras' own forms of the focal losses (``from_logits=False``, the per-sample
  mean of ``BinaryFocalCrossentropy``, ``ignore_class``): each instance
  resolves its constructor arguments once into a
  :class:`fusedfocal._registry.Call` that says how ``fn`` is called.

And one thing Keras cannot do: a loss whose function reduces inside its
kernel (``fused_reduction = True``: ``fn`` takes ``reduction="sum"|"mean"``
and ``sample_weight``) skips the ``[B, C]`` float32 loss tensor, the cast
of ``y_pred`` to the loss dtype and Keras' separate weighting and sum. The
result is the one Keras' own reduction gives (same divisor, same
distribution scaling); with a mask on ``y_pred`` or an unusual input the
ordinary Keras path runs.

:func:`define_classes` builds one flavour's classes from the declarations in
:mod:`fusedfocal._registry`, with real ``__init__`` signatures and docstrings.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import tensorflow as tf

from fusedfocal.losses import categorical
from fusedfocal.ops import _keras_compat as kc


def expand_sample_weight(sample_weight, y_pred):
    """Give ``[B]``-shaped weights a trailing axis to match ``[B, C]`` losses."""
    if sample_weight is None:
        return None
    sample_weight = tf.convert_to_tensor(sample_weight)
    pred_rank = tf.convert_to_tensor(y_pred).shape.rank
    if (
        pred_rank is not None
        and sample_weight.shape.rank is not None
        and sample_weight.shape.rank == pred_rank - 1
    ):
        sample_weight = tf.expand_dims(sample_weight, -1)
    return sample_weight


def to_config(value):
    """A JSON-friendly form of a loss parameter."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return value.numpy().tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LogitsLossMixin:
    """The body both ``LogitsLoss`` bases share; mixed in before each Keras' ``Loss``.

    ``_fn(logits, labels, **kwargs)`` gives the loss; ``elementwise`` says it
    is ``[..., C]`` (so ``[B]`` sample weights get a trailing axis).
    """

    elementwise = True  # fn returns [..., C]; False for per-example losses
    _resolve = None  # params -> fusedfocal._registry.Call (set per class)

    def _init_fn(self, fn, params):
        self._fn = fn
        self._params = dict(params)  # every constructor argument: get_config
        if self._resolve is None:  # a LogitsLoss built by hand: fn(**params)
            self._fn_kwargs, self._call = dict(self._params), None
        else:
            self._call = type(self)._resolve(self._params)
            self._fn_kwargs = self._call.kwargs
            if self._call.mean_axis is not None:
                self.elementwise = False  # Keras' per-sample loss

    # Flavour hooks: the probability clip and how this Keras reads probabilities.
    legacy_probabilities = False  # tf_keras: log(c + eps) in the binary cross-entropy

    def _epsilon(self):
        return kc.KERAS_EPSILON

    def _prepare(self, y_true, y_pred):
        """``(y_true, logits)`` as ``fn`` takes them (Keras' forms, see ``Call``)."""
        call = self._call
        if call is None:
            return y_true, y_pred
        if call.probabilities is not None:
            y_pred = tf.convert_to_tensor(y_pred)
            probs = tf.cast(y_pred, tf.float64 if y_pred.dtype == tf.float64 else tf.float32)
            if call.probabilities == "sigmoid":
                y_pred = kc.sigmoid_logits(probs, self._epsilon(), legacy=self.legacy_probabilities)
            else:
                axis = kc.canonical_axis(call.axis, probs.shape.rank, what="y_pred")
                y_pred = kc.softmax_logits(probs, self._epsilon(), axis)
        if call.align_labels:
            y_true = align_labels(y_true, y_pred)
        return y_true, y_pred

    def call(self, y_true, y_pred):
        y_true, y_pred = self._prepare(y_true, y_pred)
        loss = self._fn(y_pred, y_true, **self._fn_kwargs)
        call = self._call
        if call is not None and call.mean_axis is not None:
            loss = tf.reduce_mean(loss, axis=call.mean_axis)
        if call is not None and call.mask_class is not None:
            ids = categorical.sparse_label_ids(
                y_true, y_pred, kc.canonical_axis(call.axis, tf.TensorShape(y_pred.shape).rank))
            loss._keras_mask = tf.not_equal(ids, tf.cast(call.mask_class, ids.dtype))
        return loss

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.elementwise:
            sample_weight = expand_sample_weight(sample_weight, y_pred)
        if self.fused_reduction:
            if sample_weight is not None:
                sample_weight = tf.convert_to_tensor(sample_weight)
            kind = self._fused_kind(y_pred, sample_weight)
            if kind is not None:
                with tf.name_scope(self._fused_scope()):
                    return self._fused_call(kind, y_true, y_pred, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    # -- the fused reduction (see the module doc) ---------------------------

    fused_reduction = False  # fn reduces in its kernel and takes sample_weight

    # Subclass hooks: what this Keras calls its reductions, its mask, scaling.
    def _reduction_kind(self):
        """``"sum"``, ``"mean"`` (divide by the element count),
        ``"mean_with_sample_weight"`` or ``None`` (no reduction)."""
        raise NotImplementedError

    def _mask(self, y_pred):
        return getattr(y_pred, "_keras_mask", None)

    def _finish(self, loss, kind):
        return loss

    def _fused_scope(self):
        return self.name

    def _fused_kind(self, y_pred, sample_weight):
        kind = self._reduction_kind()
        if kind is None or not tf.is_tensor(y_pred) and not isinstance(y_pred, np.ndarray):
            return None
        if self._mask(y_pred) is not None:
            return None
        dtype = tf.as_dtype(y_pred.dtype)
        if dtype not in (tf.float16, tf.bfloat16, tf.float32):
            return None  # float64 etc.: Keras casts to the loss dtype first
        shape = tf.TensorShape(y_pred.shape)
        rank = shape.rank
        if rank is None or rank < 2:
            return None  # Keras returns rank-1 empty values unreduced
        if self._call is not None and self._call.mean_axis is not None:
            # Keras' per-sample mean over the last axis of [B, C]: the fused sum
            # divided by C, with [B] (or [B, 1]) sample weights.
            if rank != 2 or kc.canonical_axis(self._call.mean_axis, rank) != 1 or shape[1] is None:
                return None
            if sample_weight is not None and tf.TensorShape(sample_weight.shape).as_list() not in (
                    [shape[0]], [shape[0], 1]):
                return None
        elif sample_weight is not None:
            w_rank = tf.TensorShape(sample_weight.shape).rank
            if w_rank is None or w_rank != rank:
                return None  # only the [B, 1] / [B, C] forms (after expansion)
        if kind == "mean_with_sample_weight" and sample_weight is None:
            kind = "mean"
        return kind

    def _fused_call(self, kind, y_true, y_pred, sample_weight):
        weights = None if sample_weight is None else tf.cast(sample_weight, tf.float32)
        per_sample = self._call is not None and self._call.mean_axis is not None
        if per_sample and weights is not None and weights.shape.rank == 1:
            weights = weights[:, None]
        y_true, y_pred = self._prepare(y_true, y_pred)
        loss = self._fn(y_pred, y_true, reduction="mean" if kind == "mean" else "sum",
                        sample_weight=weights, **self._fn_kwargs)
        if per_sample and kind != "mean":  # the sum of per-sample means
            loss = loss / tf.cast(tf.TensorShape(y_pred.shape)[-1], loss.dtype)
        if kind == "mean_with_sample_weight":
            loss = tf.math.divide_no_nan(loss, tf.reduce_sum(weights))
        return self._finish(loss, kind)

    def get_config(self):
        config = super().get_config()
        config.update({k: to_config(p) for k, p in self._params.items()})
        return config


class SetLossMixin:
    """For Keras classes over set losses (Dice/Tversky): ``sample_weight``
    weights each element's share of the soft counts (it is passed to the
    function as ``weights``), not the final per-class losses, which the
    Keras reduction then averages (``sum_over_batch_size``: mean over
    classes) or sums."""

    elementwise = False
    _weights = None

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._weights = sample_weight
        try:
            return super().__call__(y_true, y_pred)
        finally:
            self._weights = None

    def call(self, y_true, y_pred):
        return self._fn(y_pred, y_true, weights=self._weights, **self._fn_kwargs)


# -- building one flavour's classes from the declarations -----------------


@dataclasses.dataclass(frozen=True)
class Flavour:
    """What differs between the Keras 3 and the tf_keras classes.

    ``reduction``: the default ``reduction=``; ``extra``: ``(name, default)``
    constructor arguments after ``name`` (Keras 3's ``dtype``); the rest fill
    the docstring templates of :class:`fusedfocal._registry.LossSpec`.
    """

    keras: str
    lib: str
    module: str
    default: str
    weighted_mean: str
    reduction: object
    extra: tuple = ()
    dtype_doc: str = ""


def align_labels(y_true, y_pred):
    """``y_true`` reshaped as Keras' ``LossFunctionWrapper`` does: a rank one
    below ``y_pred``'s with ``y_pred.shape[-1] == 1`` gains a trailing axis
    (``[B]`` labels, ``[B, 1]`` predictions); one above with a trailing 1
    loses it."""
    y_true = tf.convert_to_tensor(y_true)
    t, p = y_true.shape.rank, tf.TensorShape(y_pred.shape)
    if t is None or p.rank is None:
        return y_true
    if t == p.rank - 1 and p[-1] == 1:
        return tf.expand_dims(y_true, -1)
    if t == p.rank + 1 and y_true.shape[-1] == 1:
        return tf.squeeze(y_true, -1)
    return y_true


def define_classes(specs, base, flavour, register, module):
    """``{class name: class}`` for ``specs``, subclasses of ``base`` registered
    with ``register`` and living in ``module``."""
    return {spec.cls: _define(spec, base, flavour, register, module) for spec in specs}


def _define(spec, base, flavour, register, module):
    own = list(inspect.signature(spec.params).parameters.values())
    assert all(p.default is not p.empty for p in own), spec.cls
    positional = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = [p for p in own if p.kind is p.KEYWORD_ONLY]
    tail = [("reduction", flavour.reduction), ("name", spec.loss_name), *flavour.extra]
    names = [p.name for p in positional] + [n for n, _ in tail]
    if keyword:  # Keras' arguments added later: keyword-only, after the old ones
        names += ["*"] + [p.name for p in keyword]
    # A real function, so help(), inspect.signature and from_config see the
    # parameters: __init__(self, <params>, reduction=..., name=..., [dtype], *, <keyword-only params>).
    code = (
        f"def __init__(self, {', '.join(names)}):\n"
        f"    _base_init(self, _fn, _params({', '.join(f'{p.name}={p.name}' for p in own)}),\n"
        f"               {', '.join(f'{n}={n}' for n, _ in tail)})\n"
    )
    scope = {"_base_init": base.__init__, "_fn": spec.fn, "_params": spec.params}
    exec(code, scope)  # noqa: S102 - the source is built from the spec's parameter names only
    init = scope["__init__"]
    init.__defaults__ = tuple(p.default for p in positional) + tuple(d for _, d in tail)
    init.__kwdefaults__ = {p.name: p.default for p in keyword} or None
    init.__module__, init.__qualname__ = module, f"{spec.cls}.__init__"
    doc = spec.doc.format(**dataclasses.asdict(flavour))
    namespace = {
        "__module__": module,
        "__qualname__": spec.cls,
        "__doc__": doc,
        "__init__": init,
        "elementwise": spec.elementwise and not spec.set_loss,
        "fused_reduction": spec.fused_reduction,
        "_resolve": staticmethod(spec.call),
    }
    bases = (SetLossMixin, base) if spec.set_loss else (base,)
    return register(type(spec.cls, bases, namespace))
