"""``la``'s prior correction at inference, chosen on the validation split (issue 28).

Logit-adjusted BCE trains ``z = x + tau * logodds(prior)`` and ranks and thresholds the raw logit
``x``. With the output bias started at ``logodds - tau * logodds`` (both heads, so that ``z`` starts
at the prior log-odds like BCE's logit), training ``la`` *is* training BCE: ``dz/dbias = 1`` and
Adam's step does not depend on where a parameter starts, so ``z`` follows BCE's trajectory
(``benchmarks/la_posthoc.py``: the same P@k to four digits at every correction). What ``la`` adds
is the inference-time shift ``x = z - tau * logodds``: a prior correction that lifts rare labels.
Its right strength depends on the data and the metric: the full correction (1) gained 10 points
of macro-F1 on Reuters-21578 (1.2 labels a document) and cost 13 points of P@1 on the synthetic
XMC corpus at 16 labels a document (``docs/results.md``). Menon et al. (ICLR 2021, section 4)
tune the strength of the post-hoc correction on held-out data; so does the command line, when
``tau`` is not given: every epoch's validation scores are those of the best correction ``t`` in
:data:`TAUS` (the run's ``--select`` metric; the head's default metric for ``val_loss`` and
``last``; ties keep the trained ``tau``), ``val_la_tau`` in the epoch record. The kept epoch's
``t`` is then folded into the output bias (``bias += (tau - t) * logodds``), so the saved model,
its thresholds, ``evaluate`` and ``predict`` all use it, and ``metrics.json`` says which.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TAUS", "LaCorrection", "la_correction"]

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


class LaCorrection:
    """The post-hoc correction of one ``la`` run: ``logodds`` [C] and the trained ``tau``."""

    def __init__(self, logodds, tau, head):
        self.logodds, self.tau, self.head = np.asarray(logodds, np.float64), float(tau), head

    def _bias(self, model):
        """The output bias: the fused head's, else the ``logits`` layer's, else the last layer with a
        ``[C]`` bias (a model built around another encoder)."""
        head = getattr(model, "head", None)
        if getattr(head, "bias", None) is not None:
            return head.bias
        names = [layer.name for layer in model.layers]
        if "logits" in names:
            return model.get_layer("logits").bias
        for layer in reversed(model.layers):
            b = getattr(layer, "bias", None)
            if b is not None and tuple(b.shape) == self.logodds.shape:
                return b
        raise ValueError(f"la's prior correction: no output bias of shape {self.logodds.shape} in model "
                         f"{model.name!r}; pass --loss-param tau=T to keep a fixed correction")

    def shifted(self, model, t):
        """A context manager: the bias as if ``t`` were the correction, restored after."""
        import contextlib

        @contextlib.contextmanager
        def ctx():
            bias = self._bias(model)
            base = bias.numpy()
            bias.assign((base + (self.tau - t) * self.logodds).astype(base.dtype))
            try:
                yield
            finally:
                bias.assign(base)

        return ctx()

    def score_fn(self, base_fn, select, scores_at=None):
        """``base_fn(model)`` (the epoch's validation scores) with the correction chosen: the scores
        at the trained ``tau`` (``val_loss`` among them) are kept; the quality metric is the best
        over :data:`TAUS`, and ``val_la_tau`` says at which ``t``. ``scores_at(model)`` returns
        ``t -> scores`` (the dense head shifts its validation logits once predicted); by default
        the bias is shifted and ``base_fn`` called again (the fused head's top-k)."""
        from fusedfocal.cli.stages import select as sel

        key = sel.MONITORS[select][0] if select in ("macro_f1", "micro_f1", "p@1", "ndcg@5") else (
            "val_p@1" if self.head == "fused" else "val_macro_f1")

        def by_bias(model):
            def at(t):
                if t == self.tau:
                    return base_fn(model)
                with self.shifted(model, t):
                    return base_fn(model)
            return at

        def fn(model):
            at = (scores_at or by_bias)(model)
            out = dict(at(self.tau))
            best_t, best = self.tau, out[key]
            for t in TAUS:
                if t == self.tau:
                    continue
                s = at(t)[key]
                if s > best + 1e-12:
                    best_t, best = t, s
            out[key], out["val_la_tau"] = best, best_t
            return out

        return fn

    def fold(self, model, records, best_epoch, log=print):
        """Folds the kept epoch's ``t`` into the bias; returns ``metrics.json``'s ``la_correction``."""
        rec = next((r for r in records if r.get("epoch") == best_epoch), None)
        t = rec.get("val_la_tau") if rec else None
        if t is None:  # no score for that epoch (e.g. a diverged run): the trained tau, unchanged
            t = self.tau
        bias = self._bias(model)
        base = bias.numpy()
        bias.assign((base + (self.tau - t) * self.logodds).astype(base.dtype))
        log(f"la: prior correction t={t:g} chosen on validation (epoch {best_epoch}; trained tau {self.tau:g}), "
            f"folded into the output bias")
        return {"tau": float(t), "trained_tau": self.tau, "candidates": list(TAUS),
                "chosen_on": f"validation, epoch {best_epoch}",
                "rule": "inference ranks by z - t * logodds(prior); t folded into the output bias"}


def la_correction(loss_name, loss_params, fit_counts, fit_docs, head):
    """The run's :class:`LaCorrection`, or None (another loss, or ``tau`` given: then it is kept)."""
    if loss_name != "la" or "tau" in (loss_params or {}):
        return None
    from fusedfocal.losses import priors_from_counts

    p = priors_from_counts(np.maximum(np.asarray(fit_counts, np.int64), 1), int(max(fit_docs, 1)))
    return LaCorrection(np.log(p) - np.log1p(-p), 1.0, head)


def validation_score_fn(prep, loss_name, loss_params, select, predict_scores):
    """``(score_fn, correction)``: the selector's per-epoch validation scores (the head's:
    :meth:`~fusedfocal.cli.stages.heads.DenseHead.validation_fn`) and ``la``'s :class:`LaCorrection`
    (None for the others), whose candidates the head scores as it can (the dense head shifts its
    validation logits once predicted; the fused head shifts its bias and ranks again)."""
    from fusedfocal.cli.stages import heads

    head = heads.HEADS[prep.head]
    fn = head.validation_fn(prep, predict_scores)
    corr = la_correction(loss_name, loss_params, prep.fit_counts, prep.fit_docs, prep.head)
    if corr is None:
        return fn, None
    return corr.score_fn(fn, select, head.la_scores_at(prep, corr, predict_scores)), corr
