"""fusedfocal: exact, fused focal and imbalance losses on logits for TensorFlow/Keras."""

from fusedfocal._version import __version__
from fusedfocal.ops import sigmoid_focal_loss

__all__ = ["__version__", "sigmoid_focal_loss"]
