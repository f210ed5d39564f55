"""Ending a run early and cleanly: a non-finite loss (:func:`NonFiniteCheck`), SIGTERM and SIGINT
(:class:`SignalStop`), and the messages that say what happened and what to do next.

* **Non-finite loss.** After every training batch the running training loss of the epoch (Keras'
  ``logs["loss"]``, already on the host: the checkpoint callback has a batch hook) is checked; the
  first NaN or +-Inf stops the run at that batch (a running mean stays non-finite once one batch
  is). After every epoch the weights are checked too (the last batch's update can overflow them
  with a finite loss). The weights kept are those of the best finite epoch (``fit.keep_finite``).
* **Signals.** The first SIGTERM or SIGINT is noted; the run finishes the batch in progress, writes
  a checkpoint after it (``backup/epoch-NNNN-batch-BBBBBB/``) and stops with exit status 128 + the
  signal number. A second signal restores the default action and re-sends itself: the process
  dies at once, and the checkpoints already written (renamed into place whole) are intact.
* Fault point ``nan-epoch-N-batch-B``: the loss returns NaN at batch B of epoch N (it is multiplied
  by a variable set to NaN for that batch, so the gradient and the weights are NaN too, as in a real
  divergence).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading

from fusedfocal.cli.errors import Diverged, Interrupted, log

__all__ = ["NonFiniteCheck", "SignalStop", "nan_fault_loss", "diverged_message", "DIVERGED_HELP", "diverged_info",
           "diverged_again", "diverged_without_result", "ended"]

_NAN_POINT = re.compile(r"^nan-epoch-(\d+)-batch-(\d+)$")


def _finite(value):
    import numpy as np

    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return True


def weights_finite(model):
    """Every trainable weight finite, and a fused head's kernel and bias (its head optimizer trains
    them: not trainable variables; bfloat16 checked as float32, read as floats where the head
    stores them as bit patterns)."""
    import numpy as np

    variables = list(model.trainable_variables)
    head = getattr(model, "head", None)
    if getattr(head, "head_optimizer", None) is not None:
        weights = head.float_weights() if hasattr(head, "float_weights") else (head.kernel, head.bias)
        variables += [w for w in weights if w is not None]
    return all(np.isfinite(np.asarray(v.numpy(), np.float32)).all() for v in variables)


def NonFiniteCheck(context, steps, records, resume_at=(0, 0)):
    """A Keras callback raising :class:`Diverged` at the first non-finite training loss. ``context``:
    what the message reports (``learning_rate``, ``optimizer``, ``mixed_precision``, ``loss``);
    ``steps``: batches per epoch; ``records``: the epoch records so far (the finite epochs).
    Put it first, so that a non-finite epoch is neither scored, checkpointed nor kept."""
    import keras

    r_epoch, r_batch = resume_at

    class _NonFiniteCheck(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1
            self._offset = r_batch if epoch == r_epoch else 0

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not _finite(loss):
                self._diverged(batch + 1 + self._offset, loss, "the training loss")

        def on_epoch_end(self, epoch, logs=None):
            if not weights_finite(self.model):
                self._diverged(steps, (logs or {}).get("loss"), "the weights after the last batch")

        def _diverged(self, batch, loss, what):
            value = _value_text(loss)
            info = {**context, "epoch": self._epoch, "batch": batch, "steps_per_epoch": steps,
                    "what": what, "value": value, "last_finite_epoch": records[-1]["epoch"] if records else 0}
            raise Diverged(f"{what} became {value} in epoch {self._epoch}, batch {batch} of {steps}", info)

    return _NonFiniteCheck()


def _value_text(loss):
    import numpy as np

    try:
        v = float(np.asarray(loss, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return "non-finite"
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf") if math.isinf(v) else f"{v:g}"


DIVERGED_HELP = ("What to try: a lower --learning-rate (a tenth of it first); with --mixed-precision float16, "
                 "bfloat16 or off; with --optimizer sgd, adam; for focal and ASL losses, a lower --gamma")


def diverged_message(info, run_dir, kept_epoch):
    """One message: where it diverged, with what settings, what was kept, what to try."""
    prec = info.get("mixed_precision", "off")
    what = (f"{run_dir}: {info.get('what', 'the training loss')} became {info.get('value', 'non-finite')} in "
            f"epoch {info['epoch']}, batch {info['batch']} of {info['steps_per_epoch']} (loss {info.get('loss')}, "
            f"{info.get('optimizer', 'adam')} at learning rate {info.get('learning_rate'):g}, precision "
            f"{'float32' if prec == 'off' else 'mixed ' + prec}). ")
    if kept_epoch:
        kept = (f"Kept: the weights of epoch {kept_epoch}, the best of the {info['last_finite_epoch']} finite "
                f"epoch(s) (model.keras, thresholds.json and metrics.json, with a \"diverged\" entry). ")
    else:
        kept = "No epoch finished with a finite loss, so no model was written. "
    return (what + kept + DIVERGED_HELP + f"; then start again with --overwrite (see {run_dir}/diverged.json).")


class SignalStop:
    """``with SignalStop() as stop:`` around training: see the module docstring. A no-op outside the
    main thread (Python delivers signals to the main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested is not None:  # the second signal: die at once, as without a handler
            self.restore()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = signum
        log(f"Received {signal.Signals(signum).name}: finishing the current batch, then writing a checkpoint "
            f"(send it again to stop at once; the checkpoints already written stay).")

    def stopped(self, checkpoint, epoch, batch):
        """Raises :class:`Interrupted` once the checkpoint after the current batch is written."""
        name = signal.Signals(self.requested).name
        where = f"after batch {batch} of epoch {epoch}" if batch else f"after epoch {epoch}"
        raise Interrupted(self.requested, f"stopped by {name} {where}; checkpoint {checkpoint}")


def nan_fault_loss(loss, points_env):
    """``(loss, callback)``: with ``FUSEDFOCAL_FAULT=nan-epoch-N-batch-B``, ``loss`` multiplied by a
    variable that a callback sets to NaN for batch B of epoch N; else ``(loss, None)``."""
    m = _NAN_POINT.match((points_env or "").partition("#")[0])
    if not m:
        return loss, None
    import keras
    import tensorflow as tf

    from fusedfocal.cli.store import rundir

    poison = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="fault_poison")

    def poisoned(y_true, y_pred):
        return loss(y_true, y_pred) * tf.cast(poison, tf.float32)

    poisoned.__name__ = getattr(loss, "name", "loss")

    class _Poison(keras.callbacks.Callback):
        def __init__(self, resume_at=(0, 0)):
            super().__init__()
            self.r_epoch, self.r_batch = resume_at

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._offset = epoch + 1, (self.r_batch if epoch == self.r_epoch else 0)

        def on_train_batch_begin(self, batch, logs=None):
            point = f"nan-epoch-{self._epoch}-batch-{batch + 1 + self._offset}"
            poison.assign(float("nan") if rundir.armed(point) else 1.0)

    return poisoned, _Poison


def diverged_info(run_dir):
    """The ``diverged.json`` of a run folder, or ``None``."""
    import json
    from pathlib import Path

    from fusedfocal.cli.store import rundir

    path = Path(run_dir) / rundir.DIVERGED_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"epoch": "?", "batch": "?", "steps_per_epoch": "?", "last_finite_epoch": 0, "kept_epoch": 0}


def diverged_without_result(run_dir, chief, checkpoints, loss_name, loss_params, info):
    """The result of a run that diverged before any epoch finished finite: ``diverged.json``, no model."""
    from pathlib import Path

    from fusedfocal.cli.stages.lossargs import loss_label
    from fusedfocal.cli.store import rundir

    info["kept_epoch"] = 0
    if chief:
        rundir.write_json(Path(run_dir) / rundir.DIVERGED_FILE, info)
    checkpoints.remove()
    return {"name": loss_label(loss_name, loss_params), "loss": loss_name, "diverged": info, "metrics": None}


def diverged_again(run_dir):
    """The error of ``--resume`` on a run that diverged: it would diverge again."""
    info = diverged_info(run_dir)
    kept = info.get("kept_epoch", 0)
    return Diverged(f"{run_dir} diverged (epoch {info.get('epoch')}, batch {info.get('batch')}: "
                    f"{info.get('what', 'the training loss')} became {info.get('value', 'non-finite')} at learning "
                    f"rate {info.get('learning_rate')}); " + (
                        f"its result is epoch {kept}'s weights (model.keras, metrics.json). " if kept else
                        "no epoch finished with a finite loss, so it has no model. ")
                    + "A diverged run is not resumed: it would diverge again. " + DIVERGED_HELP
                    + "; then start again with --overwrite.", info)


def ended(e, work_dir, resume_command):
    """``e`` (a :class:`RunEnded`) with what to do next: for a write error, the newest checkpoint
    (intact) and the resume command; for a signal, the resume command."""
    from pathlib import Path

    from fusedfocal.cli.errors import WriteFailed
    from fusedfocal.cli.store import checkpoints as ckpt
    from fusedfocal.cli.store import rundir

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
