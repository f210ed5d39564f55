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
from typing import Callable

import numpy as np

from fusedfocal import losses as L
from fusedfocal.losses import _common as lc
from fusedfocal.losses import asymmetric, balanced, bce, categorical, logit_adjust, overlap, poly
from fusedfocal.ops import _validation as v


def focal_params(gamma=2.0, alpha=None, label_smoothing=0.0):
    """Validated parameters of :func:`fusedfocal.sigmoid_focal_loss`."""
    return dict(
        gamma=v.check_nonnegative_float("gamma", gamma),
        alpha=v.check_class_vector("alpha", alpha),
        label_smoothing=v.check_unit_interval("label_smoothing", label_smoothing, closed_right=False),
    )


def no_params():
    return {}


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The declaration both Keras flavours build a loss class from.

    Attributes:
      cls: the class name (also its registered name, ``fusedfocal>cls``).
      short: the registry's short name (the CLI's ``--loss``).
      fn: ``fn(logits, labels, **params, reduction=...)``.
      params: validates the constructor arguments and returns ``params``;
        its signature gives the constructor's parameters and defaults.
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

    See :func:`fusedfocal.sigmoid_focal_loss` for the math and arguments.

    Args:
      gamma: focusing parameter >= 0 (0 gives BCE).
      alpha: None, a float in [0, 1] or a per-class vector of length C.
      label_smoothing: float in [0, 1).
      reduction: a {keras} reduction (default {default}).
      name: loss name.{dtype_doc}

    Example:
      >>> import {lib}, {module}
      >>> model = {lib}.Sequential([{lib}.Input((4,)), {lib}.layers.Dense(3)])
      >>> model.compile("adam", loss={module}.SigmoidFocalLoss(gamma=2.0, alpha=[.25, .5, .75]))
    """,
        fused_reduction=True,  # sigmoid_focal_loss sums (and weights) inside its kernel
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
    """,
        elementwise=False,
    ),
    LossSpec(
        "SparseCategoricalFocalLoss", None, L.sparse_categorical_focal_loss, categorical.sparse_params,
        "sparse_categorical_focal_loss",
        """Softmax focal loss with integer labels; see :func:`fusedfocal.losses.sparse_categorical_focal_loss`.

    Per-example loss. Ignored examples (``ignore_index``) have loss 0 but
    still count in {default}; pass a 0/1 ``sample_weight``
    {weighted_mean} to average over kept ones.
    """,
        elementwise=False,
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
