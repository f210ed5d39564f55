"""Per-epoch checkpoints of a run (``backup/epoch-NNNN/``) and the epoch log (``epochs.jsonl``).

:class:`Checkpoints`: after every epoch, ``backup/epoch-NNNN/`` (weights and optimizer state, the
dropout seed-generator states, and the epoch log so far) is written under a temporary name and
renamed into place; the previous one is kept as a fallback for a damaged latest. The epoch log is
rewritten from the checkpoint it belongs to, so every epoch is logged exactly once whatever moment a
run was killed at. File names and the atomic-write helpers are :mod:`fusedfocal.cli.rundir`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from fusedfocal.cli.rundir import BACKUP_DIR, _fsync, _fsync_dir, fault, write_text

__all__ = ["Checkpoints", "write_epoch_log", "epoch_callback"]


def _seed_variables(model):
    """Keras seed-generator states (dropout): not in ``save_weights``, but part of the RNG state."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


class Checkpoints:
    """``backup/epoch-NNNN/{model.weights.h5, state.json}`` written atomically after every epoch."""

    KEEP = 2

    def __init__(self, work_dir):
        self.dir = Path(work_dir) / BACKUP_DIR

    def _epoch_dirs(self):
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit():
                out.append((int(p.name[6:]), p))
        return sorted(out, reverse=True)

    def save(self, model, epoch, records):
        import numpy as np

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"epoch-{epoch:04d}"
        tmp = self.dir / f".epoch-{epoch:04d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_weights(tmp / "model.weights.h5")
        state = {"epoch": epoch, "records": records,
                 "seed_generators": [np.asarray(v.numpy()).tolist() for v in _seed_variables(model)]}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        for _, old in self._epoch_dirs()[self.KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, model, log=print):
        """Loads the newest readable checkpoint into ``model``; ``(epoch, records)``, ``(0, [])`` if none."""
        import numpy as np

        for epoch, d in self._epoch_dirs():
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
            return int(state["epoch"]), list(state["records"])
        return 0, []

    def exists(self):
        return bool(self._epoch_dirs())

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def write_epoch_log(path, records):
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def epoch_callback(checkpoints, log_path, records, model_ref=None):
    """A Keras callback: after each epoch, its log record, then the checkpoint (with every record so
    far), then ``epochs.jsonl`` rewritten from those records. Also the in-epoch fault points."""
    import keras

    class _RunCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.time()
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            fault(f"epoch-{self._epoch}-batch-{batch + 1}")

        def on_epoch_end(self, epoch, logs=None):
            rec = {"epoch": epoch + 1, "seconds": round(time.time() - self._t0, 3)}
            rec.update({k: float(v) for k, v in (logs or {}).items()})
            records.append(rec)
            checkpoints.save(self.model, epoch + 1, records)
            fault(f"checkpoint-{epoch + 1}")
            write_epoch_log(log_path, records)

    return _RunCheckpoint()
