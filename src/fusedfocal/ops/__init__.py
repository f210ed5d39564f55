"""Fused loss kernels (XLA path) and their argument checks."""

from fusedfocal.ops.focal import sigmoid_focal_loss
from fusedfocal.ops.linear import linear_focal_loss, linear_top_k

__all__ = ["sigmoid_focal_loss", "linear_focal_loss", "linear_top_k"]
