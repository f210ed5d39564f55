"""Fused loss kernels (XLA path) and their argument checks."""

from fusedfocal.ops.focal import sigmoid_focal_loss

__all__ = ["sigmoid_focal_loss"]
