"""One declaration per Keras loss class, and the registry of short names.

Each :class:`LossSpec` names a class, its functional loss, the parameter
builder that validates the constructor arguments (its signature *is* the
constructor's, before ``reduction``/``name``), the default ``name=``, the
docstring and two flags. :mod:`fusedfocal.keras` (Keras 3) and
:mod:`fusedfocal.legacy` (tf_keras) build their classes from these specs
with :func:`fusedfocal._keras_common.define_classes`, so the twins cannot
drift; :func:`build` makes an instance from a CLI short name for either.

This module imports no Keras: it sits between the Keras-side modules and
:mod:`fusedfocal.losses`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np

from fusedfocal import losses as L
from fusedfocal.losses import _common as lc
from fusedfocal.losses import asymmetric, balanced, bce, categorical, logit_adjust, overlap, poly
from fusedfocal.ops import _keras_compat as kc
from fusedfocal.ops import _validation as v


def focal_params(gamma=2.0, alpha=None, label_smoothing=0.0, *, apply_class_balancing=None, from_logits=None,
                 axis=None):
    """Validated constructor arguments of ``SigmoidFocalLoss``."""
    return dict(
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha),
        label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing),
        apply_class_balancing=kc.check_bool("apply_class_balancing", apply_class_balancing, optional=True),
        from_logits=kc.check_bool("from_logits", from_logits, optional=True),
        axis=kc.check_axis(axis, optional=True),
    )


def no_params():
    return {}


# -- how an instance calls its function -----------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """How a class calls its function, resolved once from its constructor
    arguments (which ``get_config`` returns unchanged).

    Attributes:
      kwargs: the function's keyword arguments.
      probabilities: ``"sigmoid"`` or ``"softmax"``: ``y_pred`` holds
        probabilities (``from_logits=False``), converted to logits the way
        the class's Keras reads them before the function runs.
      axis: the class axis of that conversion (softmax).
      mean_axis: the loss is Keras' per-sample one, the mean of the
        element-wise loss over this axis (``BinaryFocalCrossentropy``).
      align_labels: reshape ``y_true`` as Keras' ``LossFunctionWrapper``
        does (``[B]`` labels for ``[B, 1]`` predictions).
      mask_class: a Keras ``ignore_class``: the loss carries a Keras mask
        of the examples whose label is not this one, so the reduction
        averages over the kept ones.
    """

    kwargs: dict
    probabilities: str | None = None
    axis: int = -1
    mean_axis: int | None = None
    align_labels: bool = False
    mask_class: int | None = None


def plain_call(params):
    return Call(dict(params))


_IGNORED_ALPHA = (
    "SigmoidFocalLoss: alpha={alpha!r} is ignored. Passing `from_logits` or `axis` gives Keras' "
    "BinaryFocalCrossentropy meaning, where alpha weights the loss only with apply_class_balancing=True. "
    "Pass apply_class_balancing=True to apply it, or apply_class_balancing=False to silence this warning "
    "(or leave from_logits and axis out for fusedfocal's meaning: alpha applied when given)."
)


def focal_call(params):
    """``SigmoidFocalLoss``: fusedfocal's element-wise loss, or Keras'
    ``BinaryFocalCrossentropy`` once any of ``apply_class_balancing``,
    ``from_logits``, ``axis`` is given (see the class docstring)."""
    p = dict(params)
    balancing, from_logits, axis = p.pop("apply_class_balancing"), p.pop("from_logits"), p.pop("axis")
    if balancing is None and from_logits is None and axis is None:
        return Call(p)
    if balancing is None and p["alpha"] is not None:
        warnings.warn(_IGNORED_ALPHA.format(alpha=to_list(p["alpha"])), UserWarning, stacklevel=5)
    p["apply_class_balancing"] = bool(balancing)
    return Call(p, probabilities="sigmoid" if from_logits is False else None,
                mean_axis=-1 if axis is None else axis, align_labels=True)


def categorical_call(params):
    """``CategoricalFocalLoss``: with ``from_logits`` given, ``alpha=None``
    is Keras' default 0.25."""
    p = dict(params)
    from_logits = p.pop("from_logits")
    if from_logits is not None and p["alpha"] is None:
        p["alpha"] = kc.KERAS_ALPHA
    return Call(p, probabilities="softmax" if from_logits is False else None, axis=p["axis"],
                align_labels=from_logits is not None)


def sparse_call(params):
    """``SparseCategoricalFocalLoss``: as ``categorical_call``; ``ignore_class``
    is ``ignore_index`` plus a Keras mask."""
    p = dict(params)
    ignore_class = p.pop("ignore_class")
    call = categorical_call(p)
    kwargs = call.kwargs if ignore_class is None else dict(call.kwargs, ignore_index=ignore_class)
    return dataclasses.replace(call, kwargs=kwargs, align_labels=False, mask_class=ignore_class)


def to_list(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The declaration both Keras flavours build a loss class from.

    Attributes:
      cls: the class name (also its registered name, ``fusedfocal>cls``).
      short: the registry's short name (the CLI's ``--loss``).
      fn: ``fn(logits, labels, **call(params).kwargs, reduction=...)``.
      params: validates the constructor arguments and returns ``params``
        (what ``get_config`` returns); its signature gives the constructor's
        parameters and defaults (keyword-only ones come after ``reduction``,
        ``name`` and ``dtype``).
      call: ``params -> Call``: how an instance calls ``fn`` (its keyword
        arguments, and Keras' probability and per-sample forms).
      loss_name: the default ``name=``.
      doc: the class docstring; ``{keras}``, ``{lib}``, ``{module}``,
        ``{default}`` and ``{weighted_mean}`` are filled in per flavour.
      elementwise: ``fn`` returns ``[..., C]`` (``[B]`` sample weights get a
        trailing axis); False for per-example losses.
      fused_reduction: ``fn`` reduces (and weights) inside its kernel.
      set_loss: a per-batch set loss (Dice/Tversky): ``sample_weight`` weights
        the soft counts (:class:`fusedfocal._keras_common.SetLossMixin`).
    """

    cls: str
    short: str | None
    fn: Callable
    params: Callable
    loss_name: str
    doc: str
    elementwise: bool = True
    fused_reduction: bool = False
    set_loss: bool = False
    call: Callable = plain_call


_SET_DOC = """

    A per-batch set loss: the function returns per-class losses ``[C]``
    (``per_class=True``) or one global loss; the {keras} reduction averages
    them ({default}: the mean over classes) or sums them.
    ``sample_weight`` (``[B]`` or ``[B, C]``) weights each element's share
    of the soft TP/FP/FN counts.
    """

SPECS = (
    LossSpec(
        "SigmoidFocalLoss", "focal", L.sigmoid_focal_loss, focal_params, "sigmoid_focal_loss",
        """Sigmoid focal loss on logits (Lin et al., 2017), fused and exact.

    See :func:`fusedfocal.sigmoid_focal_loss` for the math.

    Two forms, chosen by the arguments:

    * fusedfocal's (``apply_class_balancing``, ``from_logits`` and ``axis``
      all left None): ``y_pred`` are logits, the loss is element-wise
      (``[..., C]``, so ``reduction="sum"`` sums over labels too), and
      ``alpha`` weights positives/negatives whenever it is given (None: no
      weighting).
    * Keras' ``BinaryFocalCrossentropy`` (any of the three given): every
      argument has Keras' meaning and Keras' default, so the same arguments
      give Keras' value. ``alpha`` weights the loss only with
      ``apply_class_balancing=True`` (then None means Keras' 0.25); the loss
      is the per-sample mean over ``axis`` (default -1), as Keras reduces
      it; ``from_logits=False`` reads ``y_pred`` as probabilities, clipped to
      ``{lib}.backend.epsilon()`` as {keras} clips them and converted to
      logits, then the exact math runs. Passing ``alpha`` without
      ``apply_class_balancing`` warns that Keras ignores it. Values equal
      {keras}'s to 1e-5 relative (tested over logits, probabilities with 0
      and 1, every argument, sample weights and reduction); see
      ``docs/losses.md``, "Keras drop-in", for the few differences.

    Args:
      gamma: focusing parameter >= 0 (0 gives BCE). Keras' default, 2.0.
      alpha: None, a float in [0, 1] or a per-class vector of length C
        (weight of positives; negatives get ``1 - alpha``).
      label_smoothing: float in [0, 1]; targets become
        ``y (1 - ls) + ls / 2`` (Keras').
      reduction: a {keras} reduction (default {default}).
      name: loss name.{dtype_doc}
      apply_class_balancing: None (fusedfocal's form), or Keras' bool:
        whether ``alpha`` weights the loss.
      from_logits: None (fusedfocal's form: logits), or Keras' bool: True
        for logits, False for probabilities.
      axis: None (fusedfocal's form: element-wise), or Keras' int: the axis
        the per-sample mean runs over.

    Example:
      >>> import {lib}, {module}
      >>> model = {lib}.Sequential([{lib}.Input((4,)), {lib}.layers.Dense(3)])
      >>> model.compile("adam", loss={module}.SigmoidFocalLoss(gamma=2.0, alpha=[.25, .5, .75]))
      >>> keras_form = {module}.SigmoidFocalLoss(apply_class_balancing=True, from_logits=True)
    """,
        fused_reduction=True,  # sigmoid_focal_loss sums (and weights) inside its kernel
        call=focal_call,
    ),
    LossSpec(
        "BCELoss", "bce", L.binary_crossentropy, bce.bce_params, "bce_loss",
        """Binary cross-entropy on logits; see :func:`fusedfocal.losses.binary_crossentropy`.""",
        fused_reduction=True,  # runs on sigmoid_focal_loss: sums inside its kernel
    ),
    LossSpec(
        "WeightedBCELoss", "wbce", L.weighted_binary_crossentropy, bce.wbce_params, "weighted_bce_loss",
        """BCE with per-class ``pos_weight``; see :func:`fusedfocal.losses.weighted_binary_crossentropy`.""",
    ),
    LossSpec(
        "AsymmetricLoss", "asl", L.asymmetric_loss, asymmetric.asl_params, "asymmetric_loss",
        """Asymmetric loss (Ridnik et al., 2021); see :func:`fusedfocal.losses.asymmetric_loss`.""",
    ),
    LossSpec(
        "ClassBalancedFocalLoss", "cb", L.class_balanced_focal_loss, balanced.cb_params,
        "class_balanced_focal_loss",
        """Class-balanced focal loss (Cui et al., 2019); see :func:`fusedfocal.losses.class_balanced_focal_loss`.""",
        fused_reduction=True,  # runs on sigmoid_focal_loss: sums inside its kernel
    ),
    LossSpec(
        "DistributionBalancedLoss", "db", L.distribution_balanced_loss, balanced.db_params,
        "distribution_balanced_loss",
        """Distribution-balanced loss (Wu et al., 2020); see :func:`fusedfocal.losses.distribution_balanced_loss`.""",
    ),
    LossSpec(
        "LogitAdjustedBCELoss", "la", L.logit_adjusted_bce, logit_adjust.la_params, "logit_adjusted_bce_loss",
        """Logit-adjusted BCE (Menon et al., 2021); see :func:`fusedfocal.losses.logit_adjusted_bce`.""",
    ),
    LossSpec(
        "Poly1FocalLoss", "poly", L.poly1_focal_loss, poly.poly_params, "poly1_focal_loss",
        """Poly-1 focal loss (Leng et al., 2022); see :func:`fusedfocal.losses.poly1_focal_loss`.""",
    ),
    LossSpec(
        "TverskyLoss", "tversky", L.tversky_loss, overlap.tversky_params, "tversky_loss",
        """Soft Tversky loss on sigmoid probabilities; see :func:`fusedfocal.losses.tversky_loss`.""" + _SET_DOC,
        set_loss=True,
    ),
    LossSpec(
        "DiceLoss", "dice", L.dice_loss, overlap.dice_params, "dice_loss",
        """Soft Dice loss on sigmoid probabilities; see :func:`fusedfocal.losses.dice_loss`.

    Reduction and ``sample_weight`` as in :class:`TverskyLoss`.
    """,
        set_loss=True,
    ),
    LossSpec(
        "SquaredHingeLoss", "hinge", L.squared_hinge_loss, no_params, "squared_hinge_loss",
        """Squared hinge on +-1 targets; see :func:`fusedfocal.losses.squared_hinge_loss`.""",
    ),
    LossSpec(
        "LogCoshLoss", "logcosh", L.log_cosh_loss, no_params, "log_cosh_loss",
        """Log-cosh of the probability error; see :func:`fusedfocal.losses.log_cosh_loss`.""",
    ),
    LossSpec(
        "CategoricalFocalLoss", None, L.categorical_focal_loss, categorical.categorical_params,
        "categorical_focal_loss",
        """Softmax focal loss on logits; see :func:`fusedfocal.losses.categorical_focal_loss`.

    Per-example loss (``elementwise = False``): ``sample_weight`` is ``[B]``.
    Every argument of Keras' ``CategoricalFocalCrossentropy`` has Keras'
    meaning; one default differs until ``from_logits`` is given: with
    ``from_logits`` left None, ``y_pred`` are logits and ``alpha=None`` means
    no weighting (1); with ``from_logits`` given (True, or False for
    probabilities, normalised and clipped to ``{lib}.backend.epsilon()`` as
    {keras} does), ``alpha=None`` is Keras' default 0.25, so the same
    arguments give Keras' value (to 1e-5 relative wherever Keras does not
    clip a probability; where it clips, this is the exact value and a
    gradient that does not vanish).

    Args:
      gamma: focusing parameter >= 0 (Keras' default, 2.0).
      alpha: None, a float >= 0 or a per-class vector (length C).
      reduction: a {keras} reduction (default {default}).
      name: loss name.{dtype_doc}
      label_smoothing: float in [0, 1]; targets ``y (1 - ls) + ls / C``.
      from_logits: None (logits; ``alpha=None`` is 1) or Keras' bool.
      axis: the class axis (Keras'); not the last one only with a scalar
        ``alpha`` and no smoothing.
    """,
        elementwise=False,
        call=categorical_call,
    ),
    LossSpec(
        "SparseCategoricalFocalLoss", None, L.sparse_categorical_focal_loss, categorical.sparse_params,
        "sparse_categorical_focal_loss",
        """Softmax focal loss with integer labels; see :func:`fusedfocal.losses.sparse_categorical_focal_loss`.

    The loss of :class:`CategoricalFocalLoss` on the one-hot labels, with the
    same arguments and the same rule for ``alpha=None`` (1, or Keras' 0.25
    once ``from_logits`` is given): Keras' ``CategoricalFocalCrossentropy``
    on one-hot labels. Per-example loss.

    Two ways to skip examples. ``ignore_index`` (fusedfocal's): loss 0, but
    the examples still count in {default}; pass a 0/1 ``sample_weight``
    {weighted_mean} to average over kept ones. ``ignore_class`` (Keras'
    ``SparseCategoricalCrossentropy`` meaning): loss 0 and a Keras mask, so
    {default} averages over the kept examples only.

    Args:
      gamma, alpha: as in :class:`CategoricalFocalLoss`.
      ignore_index: None or the label to give loss 0 (still counted).
      reduction: a {keras} reduction (default {default}).
      name: loss name.{dtype_doc}
      label_smoothing, from_logits, axis: as in :class:`CategoricalFocalLoss`.
      ignore_class: None or the label to mask out (Keras').
    """,
        elementwise=False,
        call=sparse_call,
    ),
)

#: short name -> class name (the same in fusedfocal.keras and fusedfocal.legacy)
NAMES = {s.short: s.cls for s in SPECS if s.short is not None}


def build(classes, name, class_counts=None, num_docs=None, params=None):
    """An instance of ``classes[NAMES[name]]``, with count-derived defaults.

    ``cb``/``db`` take ``class_counts`` (and ``num_docs``); ``la`` derives
    ``priors`` and ``wbce`` ``pos_weight = (N - n_c) / max(n_c, 1)`` from
    them unless given.
    """
    if not isinstance(name, str) or name not in NAMES:
        raise v.invalid("loss", f"one of {set(NAMES)}", name)
    cls = classes[NAMES[name]]
    params = dict(params or {})
    if name in ("cb", "db"):
        params["class_counts"] = class_counts if class_counts is not None else params.get("class_counts")
        if name == "db":
            params["num_docs"] = num_docs if num_docs is not None else params.get("num_docs")
    elif name == "la" and "priors" not in params:
        params["priors"] = L.priors_from_counts(class_counts, num_docs)
    elif name == "wbce" and "pos_weight" not in params and class_counts is not None:
        counts, n = lc.check_counts(class_counts, num_docs, required_docs=True)
        pos = np.maximum(counts, 1.0)
        params["pos_weight"] = (n - np.minimum(counts, n)) / pos
    return cls(**params)


GET_DOC = """{keras} loss instance from a short name.

    Names: ``bce``, ``wbce`` (``pos_weight=`` or, from ``class_counts`` and
    ``num_docs``, ``(N - n_c) / max(n_c, 1)``), ``focal``, ``asl``, ``cb``
    (needs ``class_counts``), ``db`` (needs ``class_counts`` and
    ``num_docs``), ``la`` (``priors=`` or ``class_counts`` + ``num_docs``),
    ``poly``, ``dice``, ``tversky``, ``hinge``, ``logcosh``. Other keyword
    arguments go to the class.

    Raises:
      ValueError: an unknown name (Keras-style message) or bad parameters.
    """


def getter(classes, keras):
    """The public ``get`` of one flavour (``keras``: "A Keras 3", "A tf_keras")."""

    def get(name, *, class_counts=None, num_docs=None, **params):
        return build(classes, name, class_counts, num_docs, params)

    get.__doc__ = GET_DOC.format(keras=keras)
    return get
