"""What the Keras 3 and tf_keras loss classes share.

Both wrappers are thin: ``call`` forwards to a functional loss
``fn(logits, labels, **params)``; the base ``Loss.__call__`` of each Keras
handles dtype, masks and reduction. Two things Keras does not do for us:

* ``sample_weight`` of shape ``[B]`` next to an element-wise ``[B, C]`` loss
  would broadcast along the wrong axis (Keras only expands it when ``C == 1``),
  so it is expanded to ``[B, 1]`` here; ``[B, C]`` weights pass through and
  give per-label weights (0 masks a missing label).
* NumPy per-class parameters must become lists in ``get_config``.

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

    ``_fn(logits, labels, **_params)`` gives the loss; ``elementwise`` says it
    is ``[..., C]`` (so ``[B]`` sample weights get a trailing axis).
    """

    elementwise = True  # fn returns [..., C]; False for per-example losses

    def _init_fn(self, fn, params):
        self._fn = fn
        self._params = dict(params)

    def call(self, y_true, y_pred):
        return self._fn(y_pred, y_true, **self._params)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.elementwise:
            sample_weight = expand_sample_weight(sample_weight, y_pred)
        if self.fused_reduction:
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
        rank = tf.TensorShape(y_pred.shape).rank
        if rank is None or rank < 2:
            return None  # Keras returns rank-1 empty values unreduced
        if sample_weight is not None:
            w_rank = tf.TensorShape(sample_weight.shape).rank
            if w_rank is None or w_rank != rank:
                return None  # only the [B, 1] / [B, C] forms (after expansion)
        if kind == "mean_with_sample_weight" and sample_weight is None:
            kind = "mean"
        return kind

    def _fused_call(self, kind, y_true, y_pred, sample_weight):
        weights = None if sample_weight is None else tf.cast(sample_weight, tf.float32)
        loss = self._fn(y_pred, y_true, reduction="mean" if kind == "mean" else "sum",
                        sample_weight=weights, **self._params)
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
        return self._fn(y_pred, y_true, weights=self._weights, **self._params)


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


def define_classes(specs, base, flavour, register, module):
    """``{class name: class}`` for ``specs``, subclasses of ``base`` registered
    with ``register`` and living in ``module``."""
    return {spec.cls: _define(spec, base, flavour, register, module) for spec in specs}


def _define(spec, base, flavour, register, module):
    own = list(inspect.signature(spec.params).parameters.values())
    assert all(p.default is not p.empty for p in own), spec.cls
    tail = [("reduction", flavour.reduction), ("name", spec.loss_name), *flavour.extra]
    names = [p.name for p in own] + [n for n, _ in tail]
    # A real function, so help(), inspect.signature and from_config see the
    # parameters: __init__(self, <params>, reduction=..., name=..., [dtype]).
    code = (
        f"def __init__(self, {', '.join(names)}):\n"
        f"    _base_init(self, _fn, _params({', '.join(p.name for p in own)}),\n"
        f"               {', '.join(f'{n}={n}' for n, _ in tail)})\n"
    )
    scope = {"_base_init": base.__init__, "_fn": spec.fn, "_params": spec.params}
    exec(code, scope)  # noqa: S102 - the source is built from the spec's parameter names only
    init = scope["__init__"]
    init.__defaults__ = tuple(p.default for p in own) + tuple(d for _, d in tail)
    init.__module__, init.__qualname__ = module, f"{spec.cls}.__init__"
    doc = spec.doc.format(**dataclasses.asdict(flavour))
    namespace = {
        "__module__": module,
        "__qualname__": spec.cls,
        "__doc__": doc,
        "__init__": init,
        "elementwise": spec.elementwise and not spec.set_loss,
        "fused_reduction": spec.fused_reduction,
    }
    bases = (SetLossMixin, base) if spec.set_loss else (base,)
    return register(type(spec.cls, bases, namespace))
