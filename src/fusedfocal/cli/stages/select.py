"""Best-epoch selection and early stopping for ``train`` and ``compare``.

After every epoch :class:`BestEpoch` scores the model on the validation split held out from the
training data: the global threshold is tuned there for micro-F1 (as the final thresholds are) and
the epoch's ``val_macro_f1`` and ``val_micro_f1`` at that threshold, and its ``val_loss``, go into
the epoch's log record (``epochs.jsonl``, ``metrics.json`` ``history``, TensorBoard). The epoch
with the best ``--select`` score (ties: the earlier epoch) is the one whose weights the run keeps;
after ``--patience`` epochs without a better score, training stops.

Resume: the best score and epoch are recomputed from the epoch records stored in every checkpoint,
and the best weights live beside the checkpoints as ``backup/best-epoch-NNNN.weights.h5``, written
(atomically) before that epoch's checkpoint, so a run killed at any moment resumes with the same
best epoch and weights. With ``--deterministic`` a resumed run selects what an uninterrupted one
selects. Under ``tf.distribute`` every worker scores the full validation split with its own copy of
the (identical) weights, so all of them stop at the same epoch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

__all__ = ["MONITORS", "BestEpoch", "validation_scores"]

# --select -> (epoch-record key, higher is better)
MONITORS = {"macro_f1": ("val_macro_f1", True), "micro_f1": ("val_micro_f1", True),
            "val_loss": ("val_loss", False), "last": (None, True),
            "p@1": ("val_p@1", True), "ndcg@5": ("val_ndcg@5", True)}  # the fused head's (cli/fused.py)
_BEST = re.compile(r"^best-epoch-(\d{4,})\.weights\.h5$")


def validation_scores(model, pipeline, texts, y, predict_scores):
    """``{"val_macro_f1", "val_micro_f1", "val_threshold", "val_loss"}`` of ``model`` on ``(texts, y)``."""
    from fusedfocal.cli import metrics as ev

    scores, logits = predict_scores(model, pipeline, texts, return_logits=True)
    g, _, _ = ev.tune_thresholds(scores, y)
    tp, fp, fn = ev._counts(scores, y, g)
    present = (tp + fn) > 0
    _, _, f = ev.prf(tp[present], fp[present], fn[present])
    _, _, micro = ev.prf(tp.sum(), fp.sum(), fn.sum())
    out = {"val_macro_f1": float(f.mean()) if f.size else 0.0, "val_micro_f1": float(micro), "val_threshold": g}
    if model.loss is not None:
        import tensorflow as tf

        # the training loss's scale: summed over labels (train.build compiles with loss_weights = C)
        out["val_loss"] = float(model.loss(tf.constant(y, tf.float32), tf.constant(logits, tf.float32))) * y.shape[-1]
    return out


def _better(a, b, higher):
    import math

    if a is None or not math.isfinite(a):  # a non-finite score (null in the epoch log) is never better
        return False
    return a > b + 1e-12 if higher else a < b - 1e-12


def best_of(records, select):
    """``(epoch, score)`` of the best record under ``select`` (``(0, None)`` without records)."""
    key, higher = MONITORS[select]
    best, score = 0, None
    for r in records:
        if key is None:
            best, score = r["epoch"], None
        elif key in r and r[key] is not None and (score is None or _better(r[key], score, higher)):
            best, score = r["epoch"], r[key]
    return best, score


class BestEpoch(keras.callbacks.Callback):
    """A Keras callback (see the module docstring). ``score_fn(model)`` returns the validation
    scores; ``records`` are the epoch records so far (non-empty on resume). Put it before the
    checkpoint callback, so the scores are in the record that is checkpointed."""

    def __init__(self, select, patience, score_fn, backup_dir, records, log=print):
        super().__init__()
        self.select, self.patience = select, int(patience)
        self.key, self.higher = MONITORS[select]
        self.score_fn, self.backup_dir, self.log = score_fn, Path(backup_dir), log
        self.best_epoch, self.best_score = best_of(records, select)
        self.last_epoch = records[-1]["epoch"] if records else 0

    @property
    def waited(self):
        return self.last_epoch - self.best_epoch

    @property
    def exhausted(self):
        """Early stopping's condition: ``patience`` epochs without a better score."""
        return bool(self.key and self.patience and self.last_epoch and self.waited >= self.patience)

    def _path(self, epoch):
        return self.backup_dir / f"best-epoch-{epoch:04d}.weights.h5"

    def _clean(self):
        if not self.backup_dir.is_dir():
            return
        for p in self.backup_dir.iterdir():
            m = _BEST.match(p.name)
            if m and int(m.group(1)) != self.best_epoch:
                p.unlink(missing_ok=True)

    def on_train_begin(self, logs=None):
        self._clean()  # stale files of an epoch re-run after a resume

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        for k, v in self.score_fn(self.model).items():
            logs.setdefault(k, v)
        self.last_epoch = epoch + 1
        key, higher = self.key, self.higher
        if key is None:
            self.best_epoch = epoch + 1
            return
        if _better(logs[key], self.best_score, higher) if self.best_score is not None else \
                _better(logs[key], float("-inf") if higher else float("inf"), higher):
            self._save_best(epoch + 1)
            self.best_epoch, self.best_score = epoch + 1, float(logs[key])
            self._clean()
        if self.exhausted:
            self.log(f"Early stop after epoch {epoch + 1}: no better {key} for {self.patience} epoch(s); "
                     f"keeping epoch {self.best_epoch} ({key} {self.best_score:.4f}).")
            self.model.stop_training = True

    def _save_best(self, epoch):
        """The weights of ``epoch`` (1-based) beside the checkpoints, renamed into place whole."""
        from fusedfocal.cli.store import checkpoints, rundir

        self.backup_dir.mkdir(parents=True, exist_ok=True)
        final = self._path(epoch)
        tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")  # Keras wants *.weights.h5
        try:
            checkpoints.save_weights(self.model, tmp, f"the best weights of epoch {epoch}", f"write-best-{epoch}")
            with rundir.writing(f"the best weights of epoch {epoch}", final):
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def restore_best(self):
        """Loads the best epoch's weights (a no-op when the last epoch is the best)."""
        if not self.best_epoch or self.best_epoch == self.last_epoch:
            return
        path = self._path(self.best_epoch)
        if not path.exists():
            self.log(f"warning: the weights of the best epoch {self.best_epoch} ({path}) are missing; "
                     f"keeping epoch {self.last_epoch}'s")
            self.best_epoch, self.best_score = self.last_epoch, None
            return
        self.model.load_weights(path)

    def summary(self):
        return {"select": self.select, "monitor": self.key, "patience": self.patience,
                "best_epoch": self.best_epoch, "best_score": self.best_score,
                "epochs_trained": self.last_epoch, "stopped_early": self.exhausted}
