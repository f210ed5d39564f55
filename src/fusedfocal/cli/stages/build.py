"""The build stage: the model and its loss, compiled, and the optimizer of the run.

The two heads share the encoder (:func:`fusedfocal.cli.stages.models.build_model`); the dense head
ends in a ``Dense`` logits layer trained with any loss (:func:`build_dense`), the fused head in
:class:`fusedfocal.keras.FocalHead` (:func:`fusedfocal.cli.stages.fused.build_model`). Both take
the optimizer :func:`make_optimizer` makes; :mod:`fusedfocal.cli.stages.heads` picks between them.
"""

from __future__ import annotations

__all__ = ["make_optimizer", "build_dense", "SGD_MOMENTUM"]

SGD_MOMENTUM = 0.9


def make_optimizer(optim, *, fused_adam=False, rate=None):
    """``--optimizer`` at ``--learning-rate`` (or ``rate``, a schedule) of an
    :class:`~fusedfocal.cli.spec.OptimConfig`: SGD with momentum 0.9; Adam with ``--adam-epsilon``,
    as :class:`~fusedfocal.cli.stages.optim.FusedAdam` when ``fused_adam`` (the train step runs
    without XLA under ``--jit-compile auto``: an XLA step fuses Keras' Adam itself, and
    ``--jit-compile off`` means no XLA at all); Keras' decoupled ``weight_decay`` when
    ``--weight-decay`` > 0."""
    import keras

    from fusedfocal.cli.stages.optim import FusedAdam

    rate = optim.learning_rate if rate is None else rate
    wd = float(optim.weight_decay or 0.0) or None
    if optim.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=SGD_MOMENTUM, weight_decay=wd)
    cls = FusedAdam if fused_adam else keras.optimizers.Adam
    return cls(rate, weight_decay=wd, epsilon=optim.adam_epsilon or 1e-7)


def build_dense(model_cfg, prep, loss_name, loss_params, *, optimizer, jit_compile, fault=None,
                fault_callbacks=None):
    """The compiled dense model (call inside the strategy's scope): the output bias at the fit
    split's priors, the loss of :func:`~fusedfocal.cli.stages.lossargs.build_loss`. ``fault``
    (``FUSEDFOCAL_FAULT=nan-epoch-N-batch-B``): the loss returns NaN at that batch; the callback
    class that arms it is appended to ``fault_callbacks``."""
    from fusedfocal.cli.stages import models, stops
    from fusedfocal.cli.stages.lossargs import build_loss

    pipe = prep.pipeline
    model = models.build_model(**models.encoder_kwargs(model_cfg, prep), priors=prep.fit_counts / max(prep.fit_docs, 1),
                               prior_bias=model_cfg.prior_bias)
    loss = build_loss(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
    loss, poison = stops.nan_fault_loss(loss, fault)
    if poison is not None and fault_callbacks is not None:
        fault_callbacks.append(poison)
    # The training loss is the loss of a document summed over its labels (the negative
    # log-likelihood of its label vector), averaged over documents: the library's losses average
    # over labels too, so the command line weights them by the label count. A label's gradient
    # then does not shrink as labels are added, and an SGD rate does not depend on the label
    # count (Adam's never did, but for its epsilon); the fused head sums the same way. The
    # logged loss and val_loss are this sum.
    model.compile(optimizer=optimizer, loss=loss, loss_weights=float(pipe.num_labels), jit_compile=jit_compile)
    return model
