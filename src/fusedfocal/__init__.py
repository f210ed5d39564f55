"""fusedfocal: exact, fused focal and imbalance losses on logits for TensorFlow/Keras.

Functional losses take ``(logits, labels, *, ...)`` and return per-element
losses; Keras 3 classes live here too (``fusedfocal.SigmoidFocalLoss``), and
their tf_keras twins in :mod:`fusedfocal.legacy`.
"""

from fusedfocal._version import __version__
from fusedfocal.keras import SigmoidFocalLoss
from fusedfocal.ops import linear_focal_loss, linear_top_k, sigmoid_focal_loss

__all__ = ["__version__", "sigmoid_focal_loss", "SigmoidFocalLoss", "linear_focal_loss", "linear_top_k"]

# The imbalance loss family (functions in fusedfocal.losses, Keras 3 classes).
from fusedfocal import losses  # noqa: E402
from fusedfocal.keras import (  # noqa: E402
    AsymmetricLoss,
    BCELoss,
    CategoricalFocalLoss,
    ClassBalancedFocalLoss,
    DiceLoss,
    DistributionBalancedLoss,
    LogCoshLoss,
    LogitAdjustedBCELoss,
    Poly1FocalLoss,
    SparseCategoricalFocalLoss,
    SquaredHingeLoss,
    TverskyLoss,
    WeightedBCELoss,
)
from fusedfocal.losses import (  # noqa: E402
    asymmetric_loss,
    binary_crossentropy,
    categorical_focal_loss,
    class_balanced_focal_loss,
    class_balanced_weights,
    class_counts_from_dataset,
    class_counts_from_labels,
    dice_loss,
    distribution_balanced_loss,
    log_cosh_loss,
    logit_adjusted_bce,
    poly1_focal_loss,
    prior_bias_initializer,
    prior_logit_bias,
    priors_from_counts,
    sparse_categorical_focal_loss,
    squared_hinge_loss,
    tversky_loss,
    weighted_binary_crossentropy,
)

__all__ += [
    "losses",
    "asymmetric_loss", "binary_crossentropy", "categorical_focal_loss", "class_balanced_focal_loss",
    "class_balanced_weights", "class_counts_from_dataset", "class_counts_from_labels", "dice_loss",
    "distribution_balanced_loss", "log_cosh_loss", "logit_adjusted_bce", "poly1_focal_loss",
    "prior_bias_initializer", "prior_logit_bias", "priors_from_counts", "sparse_categorical_focal_loss",
    "squared_hinge_loss", "tversky_loss", "weighted_binary_crossentropy",
    "AsymmetricLoss", "BCELoss", "CategoricalFocalLoss", "ClassBalancedFocalLoss", "DiceLoss",
    "DistributionBalancedLoss", "LogCoshLoss", "LogitAdjustedBCELoss", "Poly1FocalLoss",
    "SparseCategoricalFocalLoss", "SquaredHingeLoss", "TverskyLoss", "WeightedBCELoss",
]

# Profiling helpers (step markers for model.fit, trace summaries: fusedfocal.profiling).
from fusedfocal import profiling  # noqa: E402
from fusedfocal.profiling import StepMarker  # noqa: E402

__all__ += ["profiling", "StepMarker"]
