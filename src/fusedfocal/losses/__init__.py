"""The imbalance loss family on logits: functions and count helpers.

Every function takes ``(logits, labels, *, ..., reduction="none")``, computes
in float32 (float64 for float64 logits) from logits in log space, and is
finite for every finite logit. This package knows nothing of Keras: Keras 3
classes are in :mod:`fusedfocal.keras`, tf_keras twins in
:mod:`fusedfocal.legacy`, and ``fusedfocal.keras.get`` /
``fusedfocal.legacy.get`` build them from the CLI's short names.
"""

from __future__ import annotations

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
]
