"""``fusedfocal train``: prepare the data, build the model and loss, train, evaluate, write the run folder.

The stages are modules of their own, shared with ``compare``: :mod:`~fusedfocal.cli.prepare` (data),
:mod:`~fusedfocal.cli.lossargs` (loss), :mod:`~fusedfocal.cli.runtime` (strategy and runtime),
:mod:`~fusedfocal.cli.rundir` and :mod:`~fusedfocal.cli.checkpoints` (the run folder).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fusedfocal.cli import checkpoints as ckpt
from fusedfocal.cli import logs, results, rundir
from fusedfocal.cli.errors import CLIError, log
from fusedfocal.cli.lossargs import build_loss, check_loss_name, loss_label, parse_loss_params
from fusedfocal.cli.prepare import prepare
from fusedfocal.cli.runtime import is_chief, make_strategy, setup_runtime, use_jit

__all__ = ["train_run", "cmd_train", "epoch_order"]


def epoch_order(n, seed, epoch):
    """The order in which epoch ``epoch`` (0-based) reads the ``n`` training documents: a function of
    the seed and the epoch only, so a resumed run reads every epoch as an uninterrupted one does."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


def build(args, prep, loss_name, loss_params, strategy):
    """The build stage: the model (output bias at the fit split's priors) and its loss, compiled in
    ``strategy``'s scope."""
    import keras

    from fusedfocal.cli import models

    pipe = prep.pipeline
    priors = prep.fit_counts / max(prep.fit_docs, 1)
    fit_ids = pipe.tokenize(prep.fit[0]).numpy() if args.model == "ngram" else None  # bigram vocabulary, idf
    with strategy.scope():
        model = models.build_model(args.model, vocab_size=len(pipe.wordpiece_vocab),
                                   num_labels=len(pipe.label_vocab), max_length=args.max_length, priors=priors,
                                   prior_bias=args.prior_bias, embed_dim=args.embed_dim, filters=args.filters,
                                   layers=args.layers, dropout=args.dropout, seed=args.seed, fit_ids=fit_ids,
                                   ngram_hidden=getattr(args, "ngram_hidden", 0) or 0,
                                   ngram_bigrams=getattr(args, "ngram_bigrams", 50000),
                                   ngram_weighting=getattr(args, "ngram_weighting", "tfidf") or "tfidf")
        loss = build_loss(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
        model.compile(optimizer=_optimizer(args), loss=loss, jit_compile=use_jit(args))
    return model


def _optimizer(args):
    """``--optimizer`` at ``--learning-rate`` (SGD with momentum 0.9), with Keras' decoupled
    ``weight_decay`` when ``--weight-decay`` > 0."""
    import keras

    wd = float(getattr(args, "weight_decay", 0.0) or 0.0) or None
    if getattr(args, "optimizer", "adam") == "sgd":
        return keras.optimizers.SGD(args.learning_rate, momentum=0.9, weight_decay=wd)
    return keras.optimizers.Adam(args.learning_rate, weight_decay=wd)


# ----------------------------------------------------------------------------- one run
def train_run(args, prep, loss_name, loss_params, run_dir, *, resume=False, title=None):
    """Trains one model with one loss into ``run_dir``; returns the result dict (scores included)."""
    import warnings

    import keras

    from fusedfocal.cli import models, report

    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    run_dir = Path(run_dir)
    keras.backend.clear_session()
    setup_runtime(args)
    strategy = make_strategy(args.strategy)
    chief, task_id = is_chief(strategy)
    work_dir = rundir.work_dir(run_dir, chief, task_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    pipe = prep.pipeline
    labels = pipe.label_vocab
    if chief:
        rundir.save_vocabularies(pipe, run_dir)
        if not resume or not (run_dir / rundir.CONFIG_FILE).exists():
            rundir.write_train_config(run_dir, args, loss_name, loss_params, pipe, prep.description)
    checkpoints = ckpt.Checkpoints(work_dir)
    if not resume:
        (work_dir / rundir.EPOCHS_FILE).unlink(missing_ok=True)
        import shutil

        checkpoints.remove()
        shutil.rmtree(work_dir / rundir.LOGS_DIR, ignore_errors=True)

    model = build(args, prep, loss_name, loss_params, strategy)

    fit_texts, fit_labels = prep.fit
    # Resume: weights, optimizer state, dropout RNG state and the epoch log of the newest readable
    # checkpoint (the model and its optimizer exist now; fit() starts at that epoch).
    initial_epoch, records = checkpoints.restore(model, log=log) if resume else (0, [])
    if resume:
        ckpt.write_epoch_log(work_dir / rundir.EPOCHS_FILE, records)  # drops lines of epochs not checkpointed
        if initial_epoch:
            log(f"Resuming {work_dir} after epoch {initial_epoch} of {args.epochs}.")

    def epochs_dataset(ctx=None):
        # Epoch e reads the documents in epoch_order(seed, e), whichever process trains it.
        parts = [pipe.dataset(fit_texts, fit_labels, training=True, input_context=ctx,
                              order=epoch_order(len(fit_texts), args.seed, e))
                 for e in range(initial_epoch, args.epochs)]
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        return ds

    drop = pipe.config.drop_remainder if pipe.config.drop_remainder is not None else pipe.config.fixed_shape
    if args.strategy == "default":
        steps = len(fit_texts) // args.batch_size if drop else -(-len(fit_texts) // args.batch_size)
        if steps < 1:
            raise CLIError("--batch-size", f"expected at most {len(fit_texts)} (training documents); "
                                           f"received {args.batch_size}")
        train_ds = epochs_dataset() if initial_epoch < args.epochs else None
        val_ds = pipe.dataset(*prep.val, training=False)
    else:
        steps = len(fit_texts) // args.batch_size
        if steps < 1:
            raise CLIError("--batch-size", f"expected at most {len(fit_texts)} (training documents) with "
                                           f"--strategy {args.strategy}; received {args.batch_size}")
        train_ds = strategy.distribute_datasets_from_function(
            lambda ctx: epochs_dataset(ctx).repeat()) if initial_epoch < args.epochs else None
        # Keras 3.15's fit() under a strategy builds the model from the first batch of the distributed
        # iterator (consuming it) by reducing it across replicas, which fails for a multi-worker
        # strategy. The functional model is built already; build the optimizer here and skip that step
        # (the loss and metrics then build when the train step is traced).
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
        if args.strategy == "multiworker":
            # Keras 3.15 reduces the step's logs across workers with strategy.reduce("MEAN", v, axis=0),
            # which fails for scalars: return them as [1] vectors (the reduction makes them scalars).
            import tensorflow as tf

            step = model.train_step
            model.train_step = lambda data: {k: tf.reshape(v, [1]) for k, v in step(data).items()}
        val_ds = None
    if args.profile:
        logs.check_profiler()
    n_steps = steps
    # Best-epoch selection and early stopping: scores every epoch on validation, before the checkpoint.
    from fusedfocal.cli import select as sel

    val_y_sel, _ = labels.encode(prep.val[1])
    selector = sel.BestEpoch(
        getattr(args, "select", None) or "macro_f1", getattr(args, "patience", 3) or 0,
        lambda m: sel.validation_scores(m, pipe, prep.val[0], val_y_sel, models.predict_scores),
        checkpoints.dir, records, log=log)
    selector.set_model(model)
    callbacks = [
        selector,
        ckpt.epoch_callback(checkpoints, work_dir / rundir.EPOCHS_FILE, records),
        logs.tensorboard_callback(work_dir / rundir.LOGS_DIR, logs.profile_batches(args, n_steps)),
    ]
    if args.profile:  # name each step for the profiler's overview / step-time / input-pipeline tools
        from fusedfocal.profiling import StepMarker

        callbacks.append(StepMarker())
    if title:
        log(title)
    t0 = time.time()
    if train_ds is not None and not selector.exhausted:
        model.fit(train_ds, epochs=args.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  validation_data=val_ds, callbacks=callbacks, verbose=args.verbose)
    train_seconds = time.time() - t0 + sum(r.get("seconds", 0.0) for r in records[:initial_epoch])
    selector.restore_best()  # the weights of the best epoch (already in place if it was the last)
    rundir.fault("before-final")
    # Final files, each written atomically; the checkpoint stays until the last of them is in place,
    # so a kill at any moment here is resumed from it (and rewrites the same files).
    if chief:
        with rundir.atomic_path(run_dir / rundir.MODEL_FILE) as tmp:
            model.save(tmp)
        rundir.fault("after-model")

    # Thresholds on validation only; metrics on the evaluation split.
    thresholds, val_scores, val_y = results.tune_on_validation(model, prep)
    result, test_scores, test_y = results.run_result(
        args, prep, model, loss_name, loss_params, thresholds, val_scores, val_y, records,
        selection=selector.summary(), train_seconds=train_seconds, replicas=strategy.num_replicas_in_sync,
        jit_compile=use_jit(args))
    if chief:
        report.write_json(run_dir / rundir.THRESHOLDS_FILE, thresholds)
        rundir.fault("after-thresholds")
        report.write_json(run_dir / rundir.METRICS_FILE, result)
        rundir.fault("after-metrics")
    checkpoints.remove()  # the run is complete: metrics.json without backup/ marks it finished
    result["_scores"] = (test_scores, test_y)
    return result


def cmd_train(args):
    from fusedfocal.cli import report

    run_dir = Path(args.out)
    params = parse_loss_params(args)
    rundir.check_folder(run_dir)
    if is_chief(make_strategy(args.strategy))[0]:  # only the chief writes (and so refuses) the run folder
        rundir.precheck(run_dir, rundir.RUN_FILES, resume=args.resume,
                        overwrite=getattr(args, "overwrite", False), finished=rundir.METRICS_FILE)
    check_loss_name(args.loss, "--loss")
    prep = prepare(args, run_dir if args.resume else None)  # on --resume: checks the label vocabulary
    build_loss(args.loss, params, prep.fit_counts, prep.fit_docs)  # validate before anything is written
    title = (f"Training {args.model} with loss {loss_label(args.loss, params)} on {prep.description}: "
             f"{prep.fit_docs} documents ({len(prep.val[0])} held out for thresholds), "
             f"{prep.pipeline.num_labels} labels, {args.epochs} epoch(s)"
             + (" [resumed]" if args.resume else ""))
    t0 = time.time()
    chief, task_id = is_chief(make_strategy(args.strategy))
    work_dir = rundir.work_dir(run_dir, chief, task_id)
    with rundir.RunLock(work_dir):
        if chief:
            rundir.guard(run_dir, rundir.RUN_FILES, resume=args.resume,
                         overwrite=getattr(args, "overwrite", False), finished=rundir.METRICS_FILE)
        if args.resume and rundir.is_finished(run_dir):
            log(f"{run_dir} already finished ({rundir.METRICS_FILE} exists, no checkpoint left); "
                "nothing to resume.")
            return
        result = train_run(args, prep, args.loss, params, run_dir, resume=args.resume, title=title)
    for line in report.summary_lines(result):
        print(line)
    chief, task_id = is_chief(make_strategy(args.strategy))
    if not chief:
        print(f"Worker {task_id}: checkpoints and logs in {run_dir}/workers/worker-{task_id}/; worker 0 writes the run.")
        return
    print(f"Wrote {run_dir}/: {rundir.MODEL_FILE}, {rundir.WORDPIECE_FILE}, {rundir.LABEL_VOCAB_FILE}, "
          f"{rundir.THRESHOLDS_FILE}, {rundir.METRICS_FILE}, logs/ (tensorboard --logdir {run_dir}/logs) "
          f"in {time.time() - t0:.0f}s")
