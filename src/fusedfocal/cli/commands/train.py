"""``fusedfocal train``: parse -> resolve -> one run (prepare, build, fit, select, evaluate) -> report.

The flags are read here and in :mod:`fusedfocal.cli.resolve` only; the run itself
(:func:`~fusedfocal.cli.commands.one_run.run_one`) hands each stage its own config.
"""

from __future__ import annotations

import time
from pathlib import Path

from fusedfocal.cli import resolve
from fusedfocal.cli.commands.one_run import run_one
from fusedfocal.cli.errors import Diverged, RunEnded, log
from fusedfocal.cli.stages import heads, runtime, stops
from fusedfocal.cli.stages.lossargs import loss_label
from fusedfocal.cli.store import rundir

__all__ = ["cmd_train", "train", "serve_label_shard"]


def serve_label_shard(args, command="train"):
    """A worker process of ``--label-shards S --strategy multiworker`` (``TF_CONFIG`` task type
    ``worker``, ``train`` or ``compare``) serves its label shard until it is stopped and returns its
    exit status; before any data is read or ``--resume`` looks for the run folder (a worker's
    machine needs neither). Any other process: ``None`` (it runs the command)."""
    cluster = resolve.label_shard_worker(args)
    if cluster is None:
        return None
    return runtime.serve_label_shard(cluster, deterministic=args.deterministic, command=command)


def cmd_train(args, *, given=frozenset(), stored=frozenset()):
    """The command: resolves ``args`` (``given``: the flags on the command line; ``stored``: those
    ``--resume`` restored) into a spec and trains it."""
    run_dir = Path(args.out)
    resolve.check_before_data(args, run_dir, markers=rundir.RUN_FILES, finished=rundir.METRICS_FILE,
                              losses=[args.loss], flag="--loss", refuse_diverged=True)
    runtime.connect_label_shard_workers(args.label_shard_workers)  # before the data: see its docstring
    prep = resolve.prepare(args, run_dir if args.resume else None)  # on --resume: checks the label vocabulary
    if args.resume and not prep.settings:
        from fusedfocal.cli.resolve import settings as st

        prep.settings = st.restored(run_dir)
    resolve.check_after_data(args, prep)
    params = resolve.loss_params(args, head=prep.head)  # the command line's loss defaults are the head's
    heads.HEADS[prep.head].check_loss(args.loss, params, prep, "--loss")  # validate before anything is written
    spec = resolve.spec(args, "train", settings=prep.settings, head=prep.head, given=given, stored=stored)
    train(spec, prep, params)


def train(spec, prep, params):
    """Trains ``spec`` (a resolved :class:`~fusedfocal.cli.spec.Spec`) into its run folder and prints
    the result."""
    run_dir, run, optim = Path(spec.run.out), spec.run, spec.optim
    head = heads.HEADS[prep.head]
    title = (f"Training {spec.model.model} with loss {loss_label(spec.loss.loss, params)} on {prep.description}: "
             f"{prep.fit_docs} documents ({len(prep.val[0])} held out for {head.held_out_for}), "
             f"{prep.pipeline.num_labels} labels ({prep.head} head), {optim.epochs} epoch(s)"
             + (" [resumed]" if run.resume else ""))
    t0 = time.time()
    chief, task_id = runtime.is_chief(runtime.make_strategy(spec.runtime.loop_strategy))
    work_dir = rundir.work_dir(run_dir, chief, task_id)
    with rundir.RunLock(work_dir):
        if chief:
            rundir.guard(run_dir, rundir.RUN_FILES, resume=run.resume, overwrite=run.overwrite,
                         finished=rundir.METRICS_FILE)
        if run.resume and stops.diverged_info(run_dir) is not None:
            raise stops.diverged_again(run_dir)
        if run.resume and rundir.is_finished(run_dir):
            log(f"{run_dir} already finished ({rundir.METRICS_FILE} exists, no checkpoint left); "
                "nothing to resume.")
            return
        try:
            result = run_one(spec, prep, spec.loss.loss, params, run_dir, resume=run.resume, title=title)
        except RunEnded as e:
            raise stops.ended(e, work_dir, f"fusedfocal train --resume --out {run_dir}")
    if result.get("metrics") is not None:
        for line in head.summary_lines(result):
            print(line)
    if result.get("diverged"):
        info = result["diverged"]
        raise Diverged(stops.diverged_message(info, run_dir, info.get("kept_epoch", 0)), info)
    if not chief:
        print(f"Worker {task_id}: checkpoints and logs in {run_dir}/workers/worker-{task_id}/; worker 0 writes the run.")
        return
    vocab = "encoder/" if spec.model.encoder else rundir.WORDPIECE_FILE
    thresholds = f"{rundir.THRESHOLDS_FILE}, " if head.writes_thresholds else ""
    print(f"Wrote {run_dir}/: {rundir.MODEL_FILE}, {vocab}, {rundir.LABEL_VOCAB_FILE}, {thresholds}"
          f"{rundir.METRICS_FILE}, logs/ (tensorboard --logdir {run_dir}/logs) in {time.time() - t0:.0f}s")
