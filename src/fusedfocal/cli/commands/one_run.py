"""One training run, shared by ``train`` and ``compare``: the stages in order, each handed its own config.

runtime (:class:`~fusedfocal.cli.spec.RuntimeConfig`) -> the run folder -> build (model, head,
optim) -> fit (optim, runtime, run) -> select -> ``la``'s correction -> save -> evaluate
(evaluation) -> the result files. The spec is split into its stage configs here and nowhere below.
"""

from __future__ import annotations

import os
from pathlib import Path

from fusedfocal.cli.errors import log
from fusedfocal.cli.stages import encoder, fit, heads, posthoc, runtime, stops
from fusedfocal.cli.stages import select as sel
from fusedfocal.cli.stages.lossargs import loss_label
from fusedfocal.cli.store import checkpoints as ckpt
from fusedfocal.cli.store import report, rundir

__all__ = ["run_one", "settings_record", "optimizer"]


def settings_record(spec, prep, *, replicas, jit_compile):
    """The ``"settings"`` of a run's ``metrics.json``: the values it trained with (the dense and the
    fused head record theirs, in this order)."""
    m, o, h, rt = spec.model, spec.optim, spec.head, spec.runtime
    tail = {"max_length": m.max_length, "truncated_training_documents": prep.truncation or None,
            "patience": o.patience, "vocab_size": m.vocab_size, "vocab_tokens": len(prep.pipeline.wordpiece_vocab),
            "chosen": {k: s.source for k, s in (prep.settings or {}).items()}, "seed": rt.seed,
            "deterministic": rt.deterministic}
    if prep.head == "fused":
        from fusedfocal.cli.stages.fused import K

        out = {"model": m.model, "head": "fused", "top_k": K, "epochs": o.epochs, "batch_size": o.batch_size,
               "optimizer": o.optimizer, "learning_rate": o.learning_rate, "weight_decay": o.weight_decay,
               "head_optimizer": h.head_optimizer or "shared", "head_dtype": h.head_dtype or "float32",
               "head_learning_rate": h.head_learning_rate, "label_shards": h.label_shards, **tail,
               "strategy": rt.strategy, "replicas": replicas, "mixed_precision": rt.mixed_precision,
               "jit_compile": jit_compile}
        if h.label_shards is not None:  # the encoder data-parallel over the shards' devices
            out["encoder_replicas"] = h.label_shards
        if rt.label_shard_workers:  # shard s (and the encoder's block s) on worker s of TF_CONFIG
            out["label_shard_workers"] = list(rt.label_shard_workers)
        return out
    return {"model": m.model, "epochs": o.epochs, "batch_size": o.batch_size, "optimizer": o.optimizer,
            "learning_rate": o.learning_rate, "adam_epsilon": o.adam_epsilon, "weight_decay": o.weight_decay, **tail,
            "strategy": rt.strategy, "replicas": replicas, "mixed_precision": rt.mixed_precision,
            "jit_compile": jit_compile}


def _folder(spec, prep, loss_name, loss_params, run_dir, *, resume):
    """The run folder of this process: the chief writes the vocabularies and ``config.json``;
    returns ``(strategy, chief, work_dir, checkpoints)``."""
    strategy = runtime.make_strategy(spec.runtime.loop_strategy)
    chief, task_id = runtime.is_chief(strategy)
    work_dir = rundir.work_dir(run_dir, chief, task_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        rundir.save_vocabularies(prep.pipeline, run_dir)
        if not resume or not (run_dir / rundir.CONFIG_FILE).exists():
            rundir.write_train_config(run_dir, spec.to_json(), spec.settings, loss_name, loss_params,
                                      prep.pipeline, prep.description, prep.head)
    checkpoints = ckpt.Checkpoints(work_dir)
    if not resume:
        fit.clear(work_dir, checkpoints)
    return strategy, chief, work_dir, checkpoints


def optimizer(spec, jit=None):
    """The run's optimizer (:func:`~fusedfocal.cli.stages.build.make_optimizer`): Adam as the fused
    update only where ``--jit-compile auto`` left the train step without XLA (the n-gram and
    attention models, distributed runs); an XLA step fuses Keras' Adam itself."""
    from fusedfocal.cli.stages.build import make_optimizer

    if jit is None:
        jit = runtime.use_jit(spec.runtime, spec.model.model, spec.head.label_shards)
    return make_optimizer(spec.optim, fused_adam=spec.runtime.jit_compile == "auto" and not jit)


def _build(spec, prep, loss_name, loss_params, strategy, jit, fault_callbacks):
    fused_adam = spec.runtime.jit_compile == "auto" and not jit
    with strategy.scope():
        if spec.model.encoder:  # a KerasHub backbone, fine-tuned with either head (stages/encoder.py)
            return encoder.build_model(spec.model, spec.head, spec.optim, prep, loss_name, loss_params,
                                       jit_compile=jit, fused_adam=fused_adam)
        return heads.HEADS[prep.head].build(
            spec.model, spec.head, spec.optim, prep, loss_name, loss_params, jit_compile=jit,
            optimizer=optimizer(spec, jit), fault=os.environ.get(rundir.FAULT_ENV),
            fault_callbacks=fault_callbacks)


def run_one(spec, prep, loss_name, loss_params, run_dir, *, resume=False, title=None):
    """Trains one model with one loss into ``run_dir``; returns the result dict (scores included).
    With the label shards on worker processes (``--label-shards S --strategy multiworker``; the
    command connected this chief to them), a worker lost at any moment of the run ends it with
    :class:`~fusedfocal.cli.errors.WorkerLost` (exit status 75: restart the workers, ``--resume``)."""
    import warnings

    import keras

    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    keras.backend.clear_session()
    runtime.setup_runtime(spec.runtime)
    with runtime.label_shard_workers(spec.runtime, spec.command):
        return _run(spec, prep, loss_name, loss_params, Path(run_dir), resume=resume, title=title)


def _run(spec, prep, loss_name, loss_params, run_dir, *, resume, title):
    strategy, chief, work_dir, checkpoints = _folder(spec, prep, loss_name, loss_params, run_dir, resume=resume)
    head = heads.HEADS[prep.head]
    jit = runtime.use_jit(spec.runtime, spec.model.model, spec.head.label_shards)
    fault_callbacks = []
    encoder.into_run(spec.model.encoder, prep, run_dir, chief=chief, resume=resume)  # the preset into RUN_DIR/encoder/
    model = _build(spec, prep, loss_name, loss_params, strategy, jit, fault_callbacks)
    optim, rt = spec.optim, spec.runtime
    at = fit.start(model, checkpoints, work_dir, resume=resume, epochs=optim.epochs)
    data = fit.batches(prep.pipeline, prep.fit, optim, strategy, rt.loop_strategy)
    val_ds = head.val_dataset(prep) if rt.loop_strategy == "default" else None
    if rt.loop_strategy != "default":
        fit.prepare_distributed(model, strategy, rt.loop_strategy)
    fit.check_resumed_batches(at, data.steps, checkpoints.restored_steps, optim.batch_size)
    if spec.run.profile:
        from fusedfocal.cli.store import logs

        logs.check_profiler()
    # Best-epoch selection and early stopping: scores every epoch on validation, before the checkpoint.
    from fusedfocal.cli.stages import fused, models

    select = fused.resolve_select(optim.select, prep.head)
    score_fn, la_corr = posthoc.validation_score_fn(prep, loss_name, loss_params, select, models.predict_scores)
    selector = sel.BestEpoch(select, optim.patience or 0, score_fn, checkpoints.dir, at.records, log=log)
    selector.set_model(model)
    context = {"loss": loss_label(loss_name, loss_params), "learning_rate": float(optim.learning_rate),
               "optimizer": optim.optimizer, "mixed_precision": rt.mixed_precision}
    # Signals are handled by this process only under the default strategy: a worker of a
    # multi-worker run that stopped alone would leave the others waiting in a collective.
    stop = stops.SignalStop() if rt.loop_strategy == "default" else None
    callbacks = fit.callbacks(context=context, steps=data.steps, at=at, fault_callbacks=fault_callbacks,
                              selector=selector, checkpoints=checkpoints, work_dir=work_dir, stop=stop,
                              profile=spec.run.profile)
    if title:
        log(title)
    train_seconds, diverged = fit.fit(model, data, at, epochs=optim.epochs, val_ds=val_ds, callbacks=callbacks,
                                      verbose=spec.run.verbose, selector=selector, stop=stop)
    records = at.records
    if diverged is not None:
        kept = fit.keep_finite(model, checkpoints, selector, records)
        if not kept:  # nothing finite to keep: no model, no metrics; diverged.json says why
            return stops.diverged_without_result(run_dir, chief, checkpoints, loss_name, loss_params, diverged)
        diverged["kept_epoch"] = kept
    else:
        selector.restore_best()  # the weights of the best epoch (already in place if it was the last)
    la_info = la_corr.fold(model, records, selector.best_epoch, log) if la_corr else None  # before the model is saved
    rundir.fault("before-final")
    if chief:
        _save_model(model, run_dir)
    settings = settings_record(spec, prep, replicas=strategy.num_replicas_in_sync, jit_compile=jit)
    result, thresholds, scores = head.result(prep, model, loss_name, loss_params, records,
                                             groups=spec.evaluation.groups, settings=settings,
                                             selection=selector.summary(), train_seconds=train_seconds)
    if diverged is not None:
        result["diverged"] = diverged
    if la_info is not None:
        result["la_correction"] = la_info
    if chief:
        _write_results(run_dir, result, thresholds, diverged)
    checkpoints.remove()  # the run is complete: metrics.json without backup/ marks it finished
    result["_scores"] = scores
    return result


def _save_model(model, run_dir):
    """Final files, each written atomically; the checkpoint stays until the last of them is in place,
    so a kill at any moment here is resumed from it (and rewrites the same files)."""
    model_path = run_dir / rundir.MODEL_FILE
    with rundir.writing("the model", model_path, "write-model"):
        rundir.check_space(run_dir, ckpt.needed_bytes(model), "the model")
        with rundir.atomic_path(model_path) as tmp:
            model.save(tmp)
    rundir.fault("after-model")


def _write_results(run_dir, result, thresholds, diverged):
    if thresholds is not None:
        report.write_json(run_dir / rundir.THRESHOLDS_FILE, thresholds)
        rundir.fault("after-thresholds")
    report.write_json(run_dir / rundir.METRICS_FILE, result)
    rundir.fault("after-metrics")
    if diverged is not None:
        rundir.write_json(run_dir / rundir.DIVERGED_FILE, diverged)
