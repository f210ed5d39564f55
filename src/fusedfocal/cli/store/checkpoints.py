"""Checkpoints of a run (``backup/epoch-NNNN/``, ``backup/epoch-NNNN-batch-BBBBBB/``) and the epoch
log (``epochs.jsonl``).

:class:`Checkpoints`: after every epoch, ``backup/epoch-NNNN/`` (weights and optimizer state, the
dropout seed-generator states, and the epoch log so far) is written under a temporary name and
renamed into place; the previous one is kept as a fallback for a damaged latest. A run stopped by a
signal writes ``backup/epoch-NNNN-batch-BBBBBB/`` after batch B of epoch N (the same files, plus the
position and the running training metrics of the epoch), and ``--resume`` continues after that batch.
The epoch log is rewritten from the checkpoint it belongs to, so every epoch is logged exactly once
whatever moment a run was killed at. File names and the atomic-write helpers are
:mod:`fusedfocal.cli.store.rundir`'s.

Weights are serialised to an in-memory HDF5 image and written with one plain ``write``: a full disk
is then an ``OSError`` at a known place (:func:`fusedfocal.cli.store.rundir.writing`, exit status 4), not
an HDF5 error swallowed in a destructor followed by a crash, and the free space is checked first
(:func:`fusedfocal.cli.store.rundir.check_space`) against the size of that image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from fusedfocal.cli.store.rundir import BACKUP_DIR, _fsync, _fsync_dir, check_space, dumps, fault, write_text, writing

__all__ = ["Checkpoints", "write_epoch_log", "epoch_callback", "save_weights", "weights_image", "needed_bytes"]

_DIR = re.compile(r"^epoch-(\d{4,})(?:-batch-(\d{6,}))?$")
# room for state.json and the file system's own blocks beside a weights image
_SLACK = 64 * 1024


def _seed_variables(model):
    """Keras seed-generator states (dropout): not in ``save_weights``, but part of the RNG state."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


def weights_image(model):
    """The bytes of ``model.save_weights(PATH.weights.h5)`` (weights and optimizer state), built in
    memory; ``None`` where this Keras lacks the in-memory store (then :func:`save_weights` falls
    back to ``model.save_weights``)."""
    import io

    try:
        from keras.src.saving import saving_lib

        bio = io.BytesIO()
        store = saving_lib.H5IOStore(bio, mode="w")
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables=set())
        store.close()
        return bio.getvalue()
    except (ImportError, AttributeError, TypeError):
        return None


def _variables_nbytes(model):
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + (list(optimizer.variables) if optimizer is not None else [])
    return sum(int(v.numpy().nbytes) for v in variables)


def needed_bytes(model):
    """About what a weights file (or ``model.keras``) of ``model`` needs on disk."""
    return int(1.1 * _variables_nbytes(model)) + _SLACK


def save_weights(model, path, operation, point=None, hint=""):
    """Writes ``model``'s ``.weights.h5`` to ``path`` (a temporary name: the caller renames it), after
    checking the free space; a write error is :class:`~fusedfocal.cli.errors.WriteFailed`."""
    path = Path(path)
    data = weights_image(model)
    needed = (len(data) if data is not None else int(1.1 * _variables_nbytes(model))) + _SLACK
    check_space(path.parent, needed, operation)
    with writing(operation, path, point, hint):
        if data is None:
            model.save_weights(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return needed


class Checkpoints:
    """``backup/epoch-NNNN[-batch-BBBBBB]/{model.weights.h5, state.json}``, written atomically."""

    KEEP = 2

    def __init__(self, work_dir):
        self.dir = Path(work_dir) / BACKUP_DIR
        self.needed = None  # bytes the last checkpoint needed (for messages)
        self.restored_steps = None  # batches per epoch of a restored mid-epoch checkpoint

    def _epoch_dirs(self):
        """``[((completed epochs, batches into the next epoch), path)]``, newest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = _DIR.match(p.name)
            if p.is_dir() and m:
                epoch, batch = int(m.group(1)), int(m.group(2) or 0)
                out.append(((epoch - 1, batch) if m.group(2) else (epoch, 0), p))
        return sorted(out, reverse=True)

    def latest(self):
        """The newest checkpoint folder, or ``None``."""
        dirs = self._epoch_dirs()
        return dirs[0][1] if dirs else None

    @staticmethod
    def name(epoch, batch=0):
        """Epoch ``epoch`` (1-based) done (``batch`` 0), or after ``batch`` batches of epoch ``epoch``."""
        return f"epoch-{epoch:04d}" + (f"-batch-{batch:06d}" if batch else "")

    def save(self, model, epoch, records, *, batch=0, metrics_state=None, steps=None):
        """Checkpoint after epoch ``epoch`` (1-based), or after ``batch`` batches of it with the running
        values of the model's metrics (``metrics_state``)."""
        import numpy as np

        self.dir.mkdir(parents=True, exist_ok=True)
        name = self.name(epoch, batch)
        final = self.dir / name
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        what = f"the checkpoint of epoch {epoch}" + (f" after batch {batch}" if batch else "")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with writing(what, tmp):
                tmp.mkdir()
            self.needed = save_weights(model, tmp / "model.weights.h5", what, f"write-checkpoint-{epoch}")
            state = {"epoch": epoch, "records": records,
                     "seed_generators": [np.asarray(v.numpy()).tolist() for v in _seed_variables(model)]}
            if batch:
                state.update({"epoch": epoch - 1, "batch": batch, "steps_per_epoch": steps,
                              "metrics_state": metrics_state or []})
            with writing(what, tmp / "state.json"):
                (tmp / "state.json").write_text(dumps(state), encoding="utf-8")
                for f in tmp.iterdir():
                    _fsync(f)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                _fsync_dir(self.dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed write frees its space
        dirs = self._epoch_dirs()
        whole = [p for (_, b), p in dirs if b == 0][:1]  # the newest whole-epoch one stays too
        for _, old in dirs[self.KEEP:]:
            if old not in whole:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, model, log=print, upto=None):
        """Loads the newest readable checkpoint into ``model`` (with ``upto=(epoch, batch)``, the newest
        at or before that position). Returns ``(epoch, records, batch, metrics_state)``: ``epoch``
        epochs done, ``batch`` batches of the next one (0 after a whole epoch); ``(0, [], 0, [])``
        without a checkpoint."""
        import numpy as np

        for key, d in self._epoch_dirs():
            if upto is not None and key > tuple(upto):
                continue
            try:
                state = json.loads((d / "state.json").read_text(encoding="utf-8"))
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(d / "model.weights.h5")
            except Exception as e:  # a damaged file: fall back to the previous checkpoint
                log(f"checkpoint {d} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                    "falling back to the previous one")
                continue
            seeds = state.get("seed_generators", [])
            for v, value in zip(_seed_variables(model), seeds):
                v.assign(np.asarray(value, dtype=v.dtype))
            self.restored_steps = state.get("steps_per_epoch")
            return (int(state["epoch"]), list(state["records"]), int(state.get("batch", 0)),
                    list(state.get("metrics_state", [])))
        return 0, [], 0, []

    def exists(self):
        return bool(self._epoch_dirs())

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def write_epoch_log(path, records):
    with writing("the epoch log", path, "write-epochs"):
        write_text(path, "".join(dumps(r) + "\n" for r in records))


def metrics_state(model):
    """The running values of the model's metrics (the epoch's mean loss so far): a list of lists."""
    import numpy as np

    return [np.asarray(v.numpy()).tolist() for v in model.metrics_variables]


def set_metrics_state(model, values):
    import numpy as np

    for v, value in zip(model.metrics_variables, values):
        v.assign(np.asarray(value, dtype=v.dtype))


def epoch_callback(checkpoints, log_path, records, *, stop=None, steps=None, resume_at=(0, 0, None)):
    """A Keras callback: after each epoch, its log record, then the checkpoint (with every record so
    far), then ``epochs.jsonl`` rewritten from those records. Also the in-epoch fault points and, when
    ``stop`` (a :class:`fusedfocal.cli.stages.stops.SignalStop`) has caught a signal, the checkpoint after
    the current batch (then :class:`~fusedfocal.cli.errors.Interrupted`); after the last of the
    epoch's ``steps`` batches, the epoch's own checkpoint instead.

    ``resume_at = (epoch, batch, metrics_state)``: the run resumes ``batch`` batches into epoch
    ``epoch + 1`` (0-based ``epoch``): batches are numbered from there and the epoch's running
    metrics are restored when it begins."""
    import keras

    r_epoch, r_batch, r_metrics = resume_at

    class _RunCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.time()
            self._epoch = epoch + 1
            self._offset = r_batch if epoch == r_epoch else 0
            if self._offset and r_metrics:
                set_metrics_state(self.model, r_metrics)  # fit() has just reset them

        def on_train_batch_end(self, batch, logs=None):
            done = batch + 1 + self._offset
            fault(f"epoch-{self._epoch}-batch-{done}")
            # after the last batch of an epoch, the epoch's own checkpoint (on_epoch_end) is the one
            if stop is not None and stop.requested and (steps is None or done < steps):
                path = checkpoints.save(self.model, self._epoch, records, batch=done,
                                        metrics_state=metrics_state(self.model), steps=steps)
                stop.stopped(path, self._epoch, done)

        def on_epoch_end(self, epoch, logs=None):
            rec = {"epoch": epoch + 1, "seconds": round(time.time() - self._t0, 3)}
            rec.update({k: float(v) for k, v in (logs or {}).items()})
            records.append(rec)
            path = checkpoints.save(self.model, epoch + 1, records)
            fault(f"checkpoint-{epoch + 1}")
            write_epoch_log(log_path, records)
            if stop is not None and stop.requested:
                stop.stopped(path, epoch + 1, None)

    return _RunCheckpoint()
