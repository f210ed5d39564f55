"""``fusedfocal train``: prepare the data, build the model and loss, train, evaluate, write the run folder.

The stages are modules of their own, shared with ``compare``: :mod:`~fusedfocal.cli.stages.prepare` (data),
:mod:`~fusedfocal.cli.stages.lossargs` (loss), :mod:`~fusedfocal.cli.stages.runtime` (strategy and runtime),
:mod:`~fusedfocal.cli.store.rundir` and :mod:`~fusedfocal.cli.store.checkpoints` (the run folder).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from fusedfocal.cli.store import checkpoints as ckpt
from fusedfocal.cli.store import logs, rundir
from fusedfocal.cli.stages import results, stops
from fusedfocal.cli.errors import CLIError, Diverged, RunEnded, log
from fusedfocal.cli.stages.lossargs import build_loss, check_loss_name, loss_label, parse_loss_params
from fusedfocal.cli.stages.prepare import prepare
from fusedfocal.cli.stages.runtime import is_chief, make_strategy, setup_runtime, use_jit

__all__ = ["train_run", "cmd_train", "epoch_order", "check_head_early"]


def epoch_order(n, seed, epoch):
    """The order in which epoch ``epoch`` (0-based) reads the ``n`` training documents: a function of
    the seed and the epoch only, so a resumed run reads every epoch as an uninterrupted one does."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


def build(args, prep, loss_name, loss_params, strategy, fault_callbacks=None):
    """The build stage: the model (output bias at the fit split's priors) and its loss, compiled in
    ``strategy``'s scope. With ``FUSEDFOCAL_FAULT=nan-epoch-N-batch-B`` the loss is wrapped so that
    it returns NaN at that batch; the callback class that arms it is appended to ``fault_callbacks``."""
    import os

    from fusedfocal.cli.stages import encoder, models

    if getattr(args, "encoder", None):  # a KerasHub backbone, fine-tuned with either head (cli/encoder.py)
        with strategy.scope():
            return encoder.build_model(args, prep, loss_name, loss_params, use_jit(args))
    if prep.head == "fused":  # the encoder + FocalHead; its loss is the head's (no fault loss to wrap)
        from fusedfocal.cli.stages import fused

        with strategy.scope():
            return fused.build_model(args, prep, loss_name, loss_params, _optimizer(args), use_jit(args))
    pipe = prep.pipeline
    priors = prep.fit_counts / max(prep.fit_docs, 1)
    fit_ids = prep.fit_ids() if args.model == "ngram" else None  # bigram vocabulary, idf
    with strategy.scope():
        model = models.build_model(args.model, vocab_size=len(pipe.wordpiece_vocab),
                                   num_labels=len(pipe.label_vocab), max_length=args.max_length, priors=priors,
                                   prior_bias=args.prior_bias, embed_dim=args.embed_dim, filters=args.filters,
                                   layers=args.layers, dropout=args.dropout, seed=args.seed, fit_ids=fit_ids,
                                   ngram_hidden=getattr(args, "ngram_hidden", 0) or 0,
                                   ngram_bigrams=getattr(args, "ngram_bigrams", 50000),
                                   ngram_weighting=getattr(args, "ngram_weighting", "tfidf") or "tfidf")
        loss = build_loss(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
        loss, poison = stops.nan_fault_loss(loss, os.environ.get(rundir.FAULT_ENV))
        if poison is not None and fault_callbacks is not None:
            fault_callbacks.append(poison)
        # The training loss is the loss of a document summed over its labels (the negative
        # log-likelihood of its label vector), averaged over documents: the library's losses average
        # over labels too, so the command line weights them by the label count. A label's gradient
        # then does not shrink as labels are added, and an SGD rate does not depend on the label
        # count (Adam's never did, but for its epsilon); the fused head sums the same way. The
        # logged loss and val_loss are this sum.
        model.compile(optimizer=_optimizer(args), loss=loss, loss_weights=float(pipe.num_labels),
                      jit_compile=use_jit(args))
    return model


def _optimizer(args):
    """``--optimizer`` at ``--learning-rate`` (SGD with momentum 0.9; Adam with ``--adam-epsilon``,
    as :class:`~fusedfocal.cli.stages.optim.FusedAdam` where the train step runs without XLA), with
    Keras' decoupled ``weight_decay`` when ``--weight-decay`` > 0."""
    import keras

    from fusedfocal.cli.stages.optim import FusedAdam

    wd = float(getattr(args, "weight_decay", 0.0) or 0.0) or None
    if getattr(args, "optimizer", "adam") == "sgd":
        return keras.optimizers.SGD(args.learning_rate, momentum=0.9, weight_decay=wd)
    eps = getattr(args, "adam_epsilon", None) or 1e-7
    # The fused update is XLA: only where --jit-compile auto left the train step without XLA (the
    # n-gram and attention models, distributed runs); an XLA step fuses Keras' Adam itself, and
    # --jit-compile off means no XLA at all.
    if getattr(args, "jit_compile", None) == "auto" and not use_jit(args):
        return FusedAdam(args.learning_rate, weight_decay=wd, epsilon=eps)
    return keras.optimizers.Adam(args.learning_rate, weight_decay=wd, epsilon=eps)


# ----------------------------------------------------------------------------- one run
def train_run(args, prep, loss_name, loss_params, run_dir, *, resume=False, title=None):
    """Trains one model with one loss into ``run_dir``; returns the result dict (scores included)."""
    import warnings

    import keras

    from fusedfocal.cli.stages import models

    from fusedfocal.cli.store import report

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
            rundir.write_train_config(run_dir, args, loss_name, loss_params, pipe, prep.description, prep.head,
                                      prep.settings)
    checkpoints = ckpt.Checkpoints(work_dir)
    if not resume:
        (work_dir / rundir.EPOCHS_FILE).unlink(missing_ok=True)
        import shutil

        checkpoints.remove()
        shutil.rmtree(work_dir / rundir.LOGS_DIR, ignore_errors=True)

    fault_callbacks = []
    from fusedfocal.cli.stages import encoder

    encoder.into_run(args, prep, run_dir, chief=chief, resume=resume)  # --encoder: the preset into RUN_DIR/encoder/
    model = build(args, prep, loss_name, loss_params, strategy, fault_callbacks)

    fit_texts, fit_labels = prep.fit
    # Resume: weights, optimizer state, dropout RNG state and the epoch log of the newest readable
    # checkpoint (the model and its optimizer exist now; fit() starts at that epoch). A checkpoint
    # written after a signal is mid-epoch: ``initial_batch`` batches of epoch ``initial_epoch + 1``
    # are done, and the epoch's running metrics are restored when it begins.
    initial_epoch, records, initial_batch, metric_values = (
        checkpoints.restore(model, log=log) if resume else (0, [], 0, []))
    if resume:
        ckpt.write_epoch_log(work_dir / rundir.EPOCHS_FILE, records)  # drops lines of epochs not checkpointed
        if initial_batch:
            log(f"Resuming {work_dir} after batch {initial_batch} of epoch {initial_epoch + 1} of {args.epochs}.")
        elif initial_epoch:
            log(f"Resuming {work_dir} after epoch {initial_epoch} of {args.epochs}.")

    def epochs_dataset(first, ctx=None, skip=0):
        # Epoch e reads the documents in epoch_order(seed, e), whichever process trains it; a resumed
        # epoch skips the batches done before its checkpoint.
        parts = [pipe.dataset(fit_texts, fit_labels, training=True, input_context=ctx,
                              order=epoch_order(len(fit_texts), args.seed, e))
                 for e in range(first, args.epochs)]
        if skip:
            parts[0] = parts[0].skip(skip)
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

        def train_data(first, skip=0):
            return epochs_dataset(first, skip=skip)

        # The dense head's validation scores, val_loss included, come from the selector's one pass
        # over the validation split (select.validation_scores); Keras' own validation pass would be
        # a second one (and a traced test step per run). The fused head's selector scores top-k
        # only, so Keras gives its val_loss.
        val_ds = pipe.dataset(*prep.val, training=False) if prep.head == "fused" else None
    else:
        steps = len(fit_texts) // args.batch_size
        if steps < 1:
            raise CLIError("--batch-size", f"expected at most {len(fit_texts)} (training documents) with "
                                           f"--strategy {args.strategy}; received {args.batch_size}")

        def train_data(first, skip=0):
            return strategy.distribute_datasets_from_function(
                lambda ctx: epochs_dataset(first, ctx, skip).repeat())

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
    if initial_batch and (initial_batch >= steps or checkpoints.restored_steps not in (None, steps)):
        # the batches to skip count in the epoch's batches: they must be the same batches
        raise CLIError("--resume", f"expected the batches per epoch of the interrupted run "
                                   f"({checkpoints.restored_steps}) to resume inside its epoch; received "
                                   f"{steps} (--batch-size {args.batch_size}). Resume with the stored --batch-size")
    if args.profile:
        logs.check_profiler()
    n_steps = steps
    # Best-epoch selection and early stopping: scores every epoch on validation, before the checkpoint.
    from fusedfocal.cli.stages import select as sel

    from fusedfocal.cli.stages import fused, posthoc

    select = fused.resolve_select(getattr(args, "select", None), prep.head)
    score_fn, la_corr = posthoc.validation_score_fn(prep, loss_name, loss_params, select, models.predict_scores)
    selector = sel.BestEpoch(select, getattr(args, "patience", 3) or 0, score_fn, checkpoints.dir, records, log=log)
    selector.set_model(model)
    context = {"loss": loss_label(loss_name, loss_params), "learning_rate": float(args.learning_rate),
               "optimizer": getattr(args, "optimizer", "adam"), "mixed_precision": args.mixed_precision}
    resume_at = (initial_epoch, initial_batch)
    # Signals are handled by this process only under the default strategy: a worker of a
    # multi-worker run that stopped alone would leave the others waiting in a collective.
    stop = stops.SignalStop() if args.strategy == "default" else None
    callbacks = [
        stops.NonFiniteCheck(context, steps, records, resume_at),  # first: a non-finite epoch is not kept
        *[cls(resume_at) for cls in fault_callbacks],
        selector,
        ckpt.epoch_callback(checkpoints, work_dir / rundir.EPOCHS_FILE, records, stop=stop, steps=steps,
                            resume_at=(initial_epoch, initial_batch, metric_values)),
        logs.tensorboard_callback(work_dir / rundir.LOGS_DIR, logs.profile_batches(args, n_steps)),
    ]
    if args.profile:  # name each step for the profiler's overview / step-time / input-pipeline tools
        from fusedfocal.profiling import StepMarker

        callbacks.append(StepMarker())
    if title:
        log(title)
    t0 = time.time()
    diverged = None
    try:
        with stop or contextlib.nullcontext():
            if initial_batch and initial_epoch < args.epochs and not selector.exhausted:
                # the rest of the interrupted epoch, then (below) the epochs after it
                model.fit(train_data(initial_epoch, initial_batch), epochs=initial_epoch + 1,
                          initial_epoch=initial_epoch, steps_per_epoch=steps - initial_batch,
                          validation_data=val_ds, callbacks=callbacks, verbose=args.verbose)
                initial_epoch += 1
            if initial_epoch < args.epochs and not selector.exhausted:
                model.fit(train_data(initial_epoch), epochs=args.epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                          verbose=args.verbose)
    except Diverged as e:
        diverged = e.info
    train_seconds = time.time() - t0 + sum(r.get("seconds", 0.0) for r in records[:initial_epoch])
    if diverged is not None:
        kept = _keep_finite(model, checkpoints, selector, records)
        if not kept:  # nothing finite to keep: no model, no metrics; diverged.json says why
            return _diverged_without_result(run_dir, chief, checkpoints, loss_name, loss_params, diverged)
        diverged["kept_epoch"] = kept
    else:
        selector.restore_best()  # the weights of the best epoch (already in place if it was the last)
    la_info = la_corr.fold(model, records, selector.best_epoch, log) if la_corr else None  # before the model is saved
    rundir.fault("before-final")
    # Final files, each written atomically; the checkpoint stays until the last of them is in place,
    # so a kill at any moment here is resumed from it (and rewrites the same files).
    if chief:
        model_path = run_dir / rundir.MODEL_FILE
        with rundir.writing("the model", model_path, "write-model"):
            rundir.check_space(run_dir, ckpt.needed_bytes(model), "the model")
            with rundir.atomic_path(model_path) as tmp:
                model.save(tmp)
        rundir.fault("after-model")

    kw = dict(selection=selector.summary(), train_seconds=train_seconds,
              replicas=strategy.num_replicas_in_sync, jit_compile=use_jit(args))
    thresholds, scores = None, None
    if prep.head == "fused":  # top-k metrics, no thresholds (so no thresholds.json)
        result = fused.run_result(args, prep, model, loss_name, loss_params, records, **kw)
    else:  # thresholds on validation only; metrics on the evaluation split
        thresholds, val_scores, val_y = results.tune_on_validation(model, prep)
        result, test_scores, test_y = results.run_result(
            args, prep, model, loss_name, loss_params, thresholds, val_scores, val_y, records, **kw)
        scores = (test_scores, test_y)
    if diverged is not None:
        result["diverged"] = diverged
    if la_info is not None:
        result["la_correction"] = la_info
    if chief:
        if thresholds is not None:
            report.write_json(run_dir / rundir.THRESHOLDS_FILE, thresholds)
            rundir.fault("after-thresholds")
        report.write_json(run_dir / rundir.METRICS_FILE, result)
        rundir.fault("after-metrics")
        if diverged is not None:
            rundir.write_json(run_dir / rundir.DIVERGED_FILE, diverged)
    checkpoints.remove()  # the run is complete: metrics.json without backup/ marks it finished
    result["_scores"] = scores
    return result


def _keep_finite(model, checkpoints, selector, records):
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


def _diverged_without_result(run_dir, chief, checkpoints, loss_name, loss_params, info):
    info["kept_epoch"] = 0
    if chief:
        rundir.write_json(Path(run_dir) / rundir.DIVERGED_FILE, info)
    checkpoints.remove()
    return {"name": loss_label(loss_name, loss_params), "loss": loss_name, "diverged": info, "metrics": None}


def diverged_info(run_dir):
    """The ``diverged.json`` of a run folder, or ``None``."""
    import json

    path = Path(run_dir) / rundir.DIVERGED_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"epoch": "?", "batch": "?", "steps_per_epoch": "?", "last_finite_epoch": 0, "kept_epoch": 0}


def cmd_train(args):
    from fusedfocal.cli.store import report

    run_dir = Path(args.out)
    params = parse_loss_params(args)
    rundir.check_folder(run_dir)
    if args.resume and diverged_info(run_dir) is not None:  # before minutes of data preparation
        raise _diverged_again(run_dir)
    if is_chief(make_strategy(args.strategy))[0]:  # only the chief writes (and so refuses) the run folder
        rundir.precheck(run_dir, rundir.RUN_FILES, resume=args.resume,
                        overwrite=getattr(args, "overwrite", False), finished=rundir.METRICS_FILE)
    check_loss_name(args.loss, "--loss")
    from fusedfocal.cli.stages import fused

    if getattr(args, "head", None) == "fused":  # before minutes of data preparation
        fused.check_loss(args.loss, "--loss")
    if getattr(args, "head", None) in ("dense", "fused"):
        fused.resolve_select(getattr(args, "select", None), args.head)
    check_head_early(args, run_dir)
    prep = prepare(args, run_dir if args.resume else None)  # on --resume: checks the label vocabulary
    if args.resume and not prep.settings:
        from fusedfocal.cli.resolve import settings as st

        prep.settings = st.restored(run_dir)
    # validate before anything is written
    fused.resolve_select(getattr(args, "select", None), prep.head)
    if prep.head == "fused":  # a fused update (given, or chosen for bfloat16) needs one replica
        fused.check_head_flags(args, "fused", replicas=make_strategy(args.strategy).num_replicas_in_sync)
    if prep.head == "fused":
        fused.head_kwargs(args.loss, params, prep.fit_counts, prep.fit_docs, "--loss")
    else:
        build_loss(args.loss, params, prep.fit_counts, prep.fit_docs)
    title = (f"Training {args.model} with loss {loss_label(args.loss, params)} on {prep.description}: "
             f"{prep.fit_docs} documents ({len(prep.val[0])} held out for "
             + ("epoch selection" if prep.head == "fused" else "thresholds") + "), "
             f"{prep.pipeline.num_labels} labels ({prep.head} head), {args.epochs} epoch(s)"
             + (" [resumed]" if args.resume else ""))
    t0 = time.time()
    chief, task_id = is_chief(make_strategy(args.strategy))
    work_dir = rundir.work_dir(run_dir, chief, task_id)
    with rundir.RunLock(work_dir):
        if chief:
            rundir.guard(run_dir, rundir.RUN_FILES, resume=args.resume,
                         overwrite=getattr(args, "overwrite", False), finished=rundir.METRICS_FILE)
        if args.resume and diverged_info(run_dir) is not None:
            raise _diverged_again(run_dir)
        if args.resume and rundir.is_finished(run_dir):
            log(f"{run_dir} already finished ({rundir.METRICS_FILE} exists, no checkpoint left); "
                "nothing to resume.")
            return
        try:
            result = train_run(args, prep, args.loss, params, run_dir, resume=args.resume, title=title)
        except RunEnded as e:
            raise ended(e, work_dir, f"fusedfocal train --resume --out {run_dir}")
    if result.get("metrics") is not None:
        for line in (report.xmc_summary_lines(result) if prep.head == "fused" else report.summary_lines(result)):
            print(line)
    if result.get("diverged"):
        info = result["diverged"]
        raise Diverged(stops.diverged_message(info, run_dir, info.get("kept_epoch", 0)), info)
    chief, task_id = is_chief(make_strategy(args.strategy))
    if not chief:
        print(f"Worker {task_id}: checkpoints and logs in {run_dir}/workers/worker-{task_id}/; worker 0 writes the run.")
        return
    print(f"Wrote {run_dir}/: {rundir.MODEL_FILE}, {'encoder/' if getattr(args, 'encoder', None) else rundir.WORDPIECE_FILE}, {rundir.LABEL_VOCAB_FILE}, "
          + ("" if prep.head == "fused" else f"{rundir.THRESHOLDS_FILE}, ") + f"{rundir.METRICS_FILE}, logs/ (tensorboard --logdir {run_dir}/logs) "
          f"in {time.time() - t0:.0f}s")


def check_head_early(args, folder):
    """The head flags that are wrong whatever the data, before minutes of data preparation:
    ``--head dense`` with the fused head's flags, a fused update given under several replicas,
    and, on ``--resume``, another head than the stored one (``folder``: the run's or the
    comparison's, holding ``config.json``)."""
    import json

    from fusedfocal.cli.stages import fused

    head = getattr(args, "head", None)
    fused.check_head_flags(args, "dense" if head == "dense" else "fused",
                           replicas=make_strategy(args.strategy).num_replicas_in_sync)
    if args.resume and (Path(folder) / rundir.CONFIG_FILE).exists():
        try:
            stored = json.loads((Path(folder) / rundir.CONFIG_FILE).read_text()).get("args") or {}
        except ValueError:
            stored = {}
        fused.check_resumed_head(stored, args)


def _diverged_again(run_dir):
    info = diverged_info(run_dir)
    kept = info.get("kept_epoch", 0)
    return Diverged(f"{run_dir} diverged (epoch {info.get('epoch')}, batch {info.get('batch')}: "
                    f"{info.get('what', 'the training loss')} became {info.get('value', 'non-finite')} at learning "
                    f"rate {info.get('learning_rate')}); " + (
                        f"its result is epoch {kept}'s weights (model.keras, metrics.json). " if kept else
                        "no epoch finished with a finite loss, so it has no model. ")
                    + "A diverged run is not resumed: it would diverge again. " + stops.DIVERGED_HELP
                    + f"; then start again with --overwrite.", info)


def ended(e, work_dir, resume_command):
    """``e`` (a :class:`RunEnded`) with what to do next: for a write error, the newest checkpoint
    (intact) and the resume command; for a signal, the resume command."""
    from fusedfocal.cli.errors import Interrupted, WriteFailed

    if isinstance(e, WriteFailed):
        latest = ckpt.Checkpoints(work_dir).latest()
        e.message += (f". The newest checkpoint, {latest}, is intact" if latest else
                      ". No checkpoint was written yet") + ". Free some space (or fix the permission), then "
        if (Path(work_dir) / rundir.CONFIG_FILE).exists() or latest:
            e.message += f"continue with: {resume_command}"
        else:  # without config.json there is nothing to resume
            e.message += "start the run again: the same command with --overwrite"
    elif isinstance(e, Interrupted):
        e.message += f". Continue with: {resume_command}"
    return e
