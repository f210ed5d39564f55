"""The CLI's one rule for the output bias of every model: prior log-odds."""

from __future__ import annotations

import numpy as np

__all__ = ["PRIOR_EPS", "prior_initializer"]

PRIOR_EPS = 1e-4  # priors are clipped to [PRIOR_EPS, 1 - PRIOR_EPS] before the log-odds


def prior_initializer(priors, eps=PRIOR_EPS):
    """The library's :func:`fusedfocal.losses.prior_bias_initializer`
    (``log(p / (1 - p))``) of the fit split's label priors
    (``LabelVocab.priors``), clipped to ``[eps, 1 - eps]`` so a label with no
    (or every) training document gets a finite bias."""
    from fusedfocal.losses import prior_bias_initializer

    return prior_bias_initializer(np.clip(np.asarray(priors, np.float64), eps, 1 - eps))
