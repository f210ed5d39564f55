"""fusedfocal: exact, fused focal and imbalance losses on logits for TensorFlow/Keras.

Functional losses take ``(logits, labels, *, ...)`` and return per-element
losses; Keras 3 classes live here too (``fusedfocal.SigmoidFocalLoss``), and
their tf_keras twins in :mod:`fusedfocal.legacy`.
"""

from fusedfocal._version import __version__
from fusedfocal.keras import SigmoidFocalLoss
from fusedfocal.ops import sigmoid_focal_loss

__all__ = ["__version__", "sigmoid_focal_loss", "SigmoidFocalLoss"]
