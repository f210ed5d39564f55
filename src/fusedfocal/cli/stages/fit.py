"""The fit stage: the epochs' data, resuming from a checkpoint, the callbacks and ``model.fit``.

Reads an :class:`~fusedfocal.cli.spec.OptimConfig` (batches, epochs, seed of the epoch order),
the :class:`~fusedfocal.cli.spec.RuntimeConfig` (the strategy) and the
:class:`~fusedfocal.cli.spec.RunConfig` (``--verbose``, ``--profile``).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from fusedfocal.cli.errors import CLIError, Diverged, log
from fusedfocal.cli.stages import stops
from fusedfocal.cli.store import checkpoints as ckpt
from fusedfocal.cli.store import logs, rundir

__all__ = ["epoch_order", "Resumed", "start", "Batches", "batches", "fit", "keep_finite"]


def epoch_order(n, seed, epoch):
    """The order in which epoch ``epoch`` (0-based) reads the ``n`` training documents: a function of
    the seed and the epoch only, so a resumed run reads every epoch as an uninterrupted one does."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


@dataclass
class Resumed:
    """Where training starts: after ``epoch`` epochs and ``batch`` batches of the next, with the
    epoch log ``records`` and the interrupted epoch's running ``metric_values``."""

    epoch: int = 0
    records: list = field(default_factory=list)
    batch: int = 0
    metric_values: list = field(default_factory=list)


def start(model, checkpoints, work_dir, *, resume, epochs):
    """A new run's folder cleared of an older one's epoch log, checkpoints and logs; a resumed run's
    weights, optimizer state, dropout RNG state and epoch log restored from the newest readable
    checkpoint. A checkpoint written after a signal is mid-epoch: ``batch`` batches of epoch
    ``epoch + 1`` are done, and the epoch's running metrics are restored when it begins."""
    if not resume:
        return Resumed()
    initial_epoch, records, initial_batch, metric_values = checkpoints.restore(model, log=log)
    ckpt.write_epoch_log(work_dir / rundir.EPOCHS_FILE, records)  # drops lines of epochs not checkpointed
    if initial_batch:
        log(f"Resuming {work_dir} after batch {initial_batch} of epoch {initial_epoch + 1} of {epochs}.")
    elif initial_epoch:
        log(f"Resuming {work_dir} after epoch {initial_epoch} of {epochs}.")
    return Resumed(initial_epoch, records, initial_batch, metric_values)


def clear(work_dir, checkpoints):
    """A new run: no epoch log, checkpoint or logs of an older run in ``work_dir``."""
    (work_dir / rundir.EPOCHS_FILE).unlink(missing_ok=True)
    checkpoints.remove()
    shutil.rmtree(work_dir / rundir.LOGS_DIR, ignore_errors=True)


@dataclass
class Batches:
    """The training data of the epochs from ``first`` on (``data(first, skip)``), ``steps`` an epoch."""

    data: object
    steps: int


def batches(pipe, fit_split, optim, strategy, strategy_name):
    """The epochs' batches: epoch ``e`` reads the documents in :func:`epoch_order` (seed, e), whichever
    process trains it; a resumed epoch skips the batches done before its checkpoint. Under a
    distribution strategy every epoch has the same whole number of batches on every worker."""
    fit_texts, fit_labels = fit_split
    batch_size = optim.batch_size

    def epochs_dataset(first, ctx=None, skip=0):
        parts = [pipe.dataset(fit_texts, fit_labels, training=True, input_context=ctx,
                              order=epoch_order(len(fit_texts), optim.seed, e))
                 for e in range(first, optim.epochs)]
        if skip:
            parts[0] = parts[0].skip(skip)
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        return ds

    drop = pipe.config.drop_remainder if pipe.config.drop_remainder is not None else pipe.config.fixed_shape
    if strategy_name == "default":
        steps = len(fit_texts) // batch_size if drop else -(-len(fit_texts) // batch_size)
        if steps < 1:
            raise CLIError("--batch-size", f"expected at most {len(fit_texts)} (training documents); "
                                           f"received {batch_size}")
        return Batches(lambda first, skip=0: epochs_dataset(first, skip=skip), steps)
    steps = len(fit_texts) // batch_size
    if steps < 1:
        raise CLIError("--batch-size", f"expected at most {len(fit_texts)} (training documents) with "
                                       f"--strategy {strategy_name}; received {batch_size}")
    return Batches(lambda first, skip=0: strategy.distribute_datasets_from_function(
        lambda ctx: epochs_dataset(first, ctx, skip).repeat()), steps)


def prepare_distributed(model, strategy, strategy_name):
    """Keras 3.15's fit() under a strategy builds the model from the first batch of the distributed
    iterator (consuming it) by reducing it across replicas, which fails for a multi-worker
    strategy. The functional model is built already; build the optimizer here and skip that step
    (the loss and metrics then build when the train step is traced)."""
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if strategy_name == "multiworker":
        # Keras 3.15 reduces the step's logs across workers with strategy.reduce("MEAN", v, axis=0),
        # which fails for scalars: return them as [1] vectors (the reduction makes them scalars).
        import tensorflow as tf

        step = model.train_step
        model.train_step = lambda data: {k: tf.reshape(v, [1]) for k, v in step(data).items()}


def check_resumed_batches(at, steps, restored_steps, batch_size):
    """A run resumed inside an epoch skips the batches done: they must be the same batches."""
    if at.batch and (at.batch >= steps or restored_steps not in (None, steps)):
        raise CLIError("--resume", f"expected the batches per epoch of the interrupted run "
                                   f"({restored_steps}) to resume inside its epoch; received "
                                   f"{steps} (--batch-size {batch_size}). Resume with the stored --batch-size")


def callbacks(*, context, steps, at, fault_callbacks, selector, checkpoints, work_dir, stop, profile):
    """The callbacks in their order: the non-finite check first (a non-finite epoch is not kept),
    the fault injection, best-epoch selection (before the checkpoint), the checkpoint, TensorBoard,
    the profiler's step marker."""
    resume_at = (at.epoch, at.batch)
    out = [
        stops.NonFiniteCheck(context, steps, at.records, resume_at),
        *[cls(resume_at) for cls in fault_callbacks],
        selector,
        ckpt.epoch_callback(checkpoints, work_dir / rundir.EPOCHS_FILE, at.records, stop=stop, steps=steps,
                            resume_at=(at.epoch, at.batch, at.metric_values)),
        logs.tensorboard_callback(work_dir / rundir.LOGS_DIR, logs.profile_batches(profile, steps)),
    ]
    if profile:  # name each step for the profiler's overview / step-time / input-pipeline tools
        from fusedfocal.profiling import StepMarker

        out.append(StepMarker())
    return out


def fit(model, data, at, *, epochs, val_ds, callbacks, verbose, selector, stop):
    """Trains from ``at`` (a :class:`Resumed`) to ``epochs``: the rest of an interrupted epoch first.
    Returns ``(train_seconds, diverged)`` (``diverged``: the :class:`Diverged` info, or ``None``)."""
    t0 = time.time()
    first = at.epoch
    diverged = None
    try:
        with stop or contextlib.nullcontext():
            if at.batch and first < epochs and not selector.exhausted:
                model.fit(data.data(first, at.batch), epochs=first + 1, initial_epoch=first,
                          steps_per_epoch=data.steps - at.batch, validation_data=val_ds, callbacks=callbacks,
                          verbose=verbose)
                first += 1
            if first < epochs and not selector.exhausted:
                model.fit(data.data(first), epochs=epochs, initial_epoch=first, steps_per_epoch=data.steps,
                          validation_data=val_ds, callbacks=callbacks, verbose=verbose)
    except Diverged as e:
        diverged = e.info
    return time.time() - t0 + sum(r.get("seconds", 0.0) for r in at.records[:first]), diverged


def keep_finite(model, checkpoints, selector, records):
    """After a divergence: the weights of the best finite epoch into ``model``; returns its number
    (0 when no epoch finished finite). The last finite epoch's checkpoint comes first (the weights in
    ``model`` are non-finite), then the best epoch's weights if it is an earlier one."""
    if not records:
        return 0
    last = records[-1]["epoch"]
    epoch, _, _, _ = checkpoints.restore(model, log=log, upto=(last, 0))
    if epoch != last:
        return 0
    selector.restore_best()
    return selector.best_epoch or last
