"""The imbalance loss family on logits: functions, count helpers, registry.

Every function takes ``(logits, labels, *, ..., reduction="none")``, computes
in float32 (float64 for float64 logits) from logits in log space, and is
finite for every finite logit. Keras 3 classes are in :mod:`fusedfocal.keras`,
tf_keras twins in :mod:`fusedfocal.legacy`; :func:`get` and
:func:`get_legacy` build them from the CLI's short names.
"""

from __future__ import annotations

import numpy as np

from fusedfocal.losses.asymmetric import asymmetric_loss
from fusedfocal.losses.balanced import (
    class_balanced_focal_loss,
    class_balanced_weights,
    class_counts_from_dataset,
    class_counts_from_labels,
    distribution_balanced_loss,
)
from fusedfocal.losses.bce import binary_crossentropy, weighted_binary_crossentropy
from fusedfocal.losses.categorical import categorical_focal_loss, sparse_categorical_focal_loss
from fusedfocal.losses.logit_adjust import (
    logit_adjusted_bce,
    prior_bias_initializer,
    prior_logit_bias,
    priors_from_counts,
)
from fusedfocal.losses.margin import log_cosh_loss, squared_hinge_loss
from fusedfocal.losses.overlap import dice_loss, tversky_loss
from fusedfocal.losses.poly import poly1_focal_loss
from fusedfocal.ops import _validation as _v
from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = [
    "asymmetric_loss",
    "binary_crossentropy",
    "categorical_focal_loss",
    "class_balanced_focal_loss",
    "class_balanced_weights",
    "class_counts_from_dataset",
    "class_counts_from_labels",
    "dice_loss",
    "distribution_balanced_loss",
    "get",
    "get_legacy",
    "log_cosh_loss",
    "logit_adjusted_bce",
    "poly1_focal_loss",
    "prior_bias_initializer",
    "prior_logit_bias",
    "priors_from_counts",
    "sigmoid_focal_loss",
    "sparse_categorical_focal_loss",
    "squared_hinge_loss",
    "tversky_loss",
    "weighted_binary_crossentropy",
    "NAMES",
]

#: short name -> class name (the same in fusedfocal.keras and fusedfocal.legacy)
NAMES = {
    "bce": "BCELoss",
    "wbce": "WeightedBCELoss",
    "focal": "SigmoidFocalLoss",
    "asl": "AsymmetricLoss",
    "cb": "ClassBalancedFocalLoss",
    "db": "DistributionBalancedLoss",
    "la": "LogitAdjustedBCELoss",
    "poly": "Poly1FocalLoss",
    "dice": "DiceLoss",
    "tversky": "TverskyLoss",
    "hinge": "SquaredHingeLoss",
    "logcosh": "LogCoshLoss",
}


def _build(module, name, class_counts, num_docs, params):
    if not isinstance(name, str) or name not in NAMES:
        raise _v.invalid("loss", f"one of {set(NAMES)}", name)
    cls = getattr(module, NAMES[name])
    params = dict(params)
    if name in ("cb", "db"):
        params["class_counts"] = class_counts if class_counts is not None else params.get("class_counts")
        if name == "db":
            params["num_docs"] = num_docs if num_docs is not None else params.get("num_docs")
    elif name == "la" and "priors" not in params:
        params["priors"] = priors_from_counts(class_counts, num_docs)
    elif name == "wbce" and "pos_weight" not in params and class_counts is not None:
        from fusedfocal.losses import _common

        counts, n = _common.check_counts(class_counts, num_docs, required_docs=True)
        pos = np.maximum(counts, 1.0)
        params["pos_weight"] = (n - np.minimum(counts, n)) / pos
    return cls(**params)


def get(name, *, class_counts=None, num_docs=None, **params):
    """A Keras 3 loss instance from a short name.

    Names: ``bce``, ``wbce`` (``pos_weight=`` or, from ``class_counts`` and
    ``num_docs``, ``(N - n_c) / max(n_c, 1)``), ``focal``, ``asl``, ``cb``
    (needs ``class_counts``), ``db`` (needs ``class_counts`` and
    ``num_docs``), ``la`` (``priors=`` or ``class_counts`` + ``num_docs``),
    ``poly``, ``dice``, ``tversky``, ``hinge``, ``logcosh``. Other keyword
    arguments go to the class.

    Raises:
      ValueError: an unknown name (Keras-style message) or bad parameters.
    """
    from fusedfocal import keras as module

    return _build(module, name, class_counts, num_docs, params)


def get_legacy(name, *, class_counts=None, num_docs=None, **params):
    """Like :func:`get`, for tf_keras (:mod:`fusedfocal.legacy`)."""
    from fusedfocal import legacy as module

    return _build(module, name, class_counts, num_docs, params)
