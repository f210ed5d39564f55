"""Run folders that never lose work: the lock, the overwrite guard, atomic writes, checkpoints.

* :class:`RunLock`: an exclusive ``flock`` on ``RUN/.lock`` for the life of a run. A second run
  gets a CLI error naming the folder and the holder's process id. The kernel drops the lock when
  its holder dies (``kill -9`` included), so a lock left by a killed process is taken over, with
  a note naming the dead holder.
* :func:`guard`: a folder that holds a started or finished run is never replaced without
  ``--overwrite``, nor continued without ``--resume``.
* :func:`atomic_path` / :func:`write_text`: temp file in the same folder, ``fsync``, rename.
* File names: every file a run or a comparison writes into its folder is named here, with the
  run's ``config.json`` (the flags ``--resume`` restores), finished-run detection and loading.
  Per-epoch checkpoints are :mod:`fusedfocal.cli.store.checkpoints`'.
* :func:`dumps`: the one JSON writer of every file a run writes: strict JSON, a non-finite number
  (NaN, +-Infinity) is written as ``null``.
* :func:`writing`: every write site of a run goes through it: an ``OSError`` (disk full, quota,
  read-only, permission) becomes :class:`~fusedfocal.cli.errors.WriteFailed` (one message naming the
  operation and the path, exit status 4); :func:`check_space` refuses a write early when the free
  space is below what it needs.
* :func:`fault`: the fault-injection hook of the tests (``FUSEDFOCAL_FAULT=POINT``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fusedfocal.cli.errors import CLIError
from fusedfocal.cli.store.safe import (  # noqa: F401  (the run folder's write primitives, one import)
    FAULT_ACTION_ENV, FAULT_ENV, FAULT_ERRNO_ENV, LOCK_FILE, SKIP_SPACE_CHECK_ENV, InjectedFault, RunLock, _fsync,
    _fsync_dir, armed, atomic_path, check_folder, check_space, dumps, fault, guard, precheck, strict, write_json,
    write_text, writing)

__all__ = ["dumps", "strict", "writing", "check_space", "RunLock", "guard", "atomic_path", "write_text", "fault", "LOCK_FILE", "BACKUP_DIR", "CONFIG_FILE",
           "MODEL_FILE", "THRESHOLDS_FILE", "METRICS_FILE", "EPOCHS_FILE", "RUN_FILES", "COMPARE_FILES",
           "write_train_config", "write_compare_config", "save_vocabularies", "is_finished", "work_dir"]

BACKUP_DIR = "backup"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
THRESHOLDS_FILE = "thresholds.json"
METRICS_FILE = "metrics.json"
EPOCHS_FILE = "epochs.jsonl"
DIVERGED_FILE = "diverged.json"
LOGS_DIR = "logs"
EVALUATION_FILE = "evaluation.json"
WORKERS_DIR = "workers"
# written by data.TextPipeline.save_vocabularies
LABEL_VOCAB_FILE = "label_vocab.json"
WORDPIECE_FILE = "wordpiece_vocab.txt"
# what a run writes into its folder: any of them means a started (or finished) run
RUN_FILES = (CONFIG_FILE, EPOCHS_FILE, BACKUP_DIR, MODEL_FILE, THRESHOLDS_FILE, METRICS_FILE, LABEL_VOCAB_FILE,
             WORDPIECE_FILE, LOGS_DIR, EVALUATION_FILE, DIVERGED_FILE)
# what a comparison writes into --out: any of them means a started (or finished) comparison
COMPARISON_MD, COMPARISON_JSON = "comparison.md", "comparison.json"
RECALL_PNG, PR_PNG = "recall_vs_frequency.png", "pr_curves.png"
RUNS_DIR = "runs"
COMPARE_FILES = (CONFIG_FILE, COMPARISON_MD, COMPARISON_JSON, RECALL_PNG, PR_PNG, RUNS_DIR)
# ----------------------------------------------------------------------------- config, resume, loading
def _settings_json(settings):
    return {k: s.as_dict() for k, s in (settings or {}).items()}


def write_train_config(run_dir, stored_spec, settings, loss_name, loss_params, pipeline, description, head="dense"):
    """``config.json`` of a run (version :data:`~fusedfocal.cli.spec.VERSION`): ``stored_spec``, its
    resolved spec (:meth:`~fusedfocal.cli.spec.Spec.to_json`: every stage's config, each value's
    source), its loss, its pipeline, its data, its head
    (``"dense"`` or ``"fused"``, as ``--head`` resolved on this data; ``evaluate`` and ``predict``
    read it) and ``settings``: each chosen setting with its source and why."""
    import dataclasses

    from fusedfocal.cli.spec import VERSION

    write_json(Path(run_dir) / CONFIG_FILE, {
        "fusedfocal_cli": VERSION, "command": "train", "spec": stored_spec, "head": head,
        "settings": _settings_json(settings),
        "loss": {"name": loss_name, "params": {k: v for k, (v, _) in loss_params.items()}},
        "pipeline": dataclasses.asdict(pipeline.config), "data": description})


def write_compare_config(out, stored_spec, settings):
    """``config.json`` of a comparison: its spec (``--losses``, ``--threshold-mode``, ``--seeds``
    included) and the settings chosen from the data (as in :func:`write_train_config`)."""
    from fusedfocal.cli.spec import VERSION

    write_json(Path(out) / CONFIG_FILE, {"fusedfocal_cli": VERSION, "command": "compare", "spec": stored_spec,
                                         "settings": _settings_json(settings)})


def save_vocabularies(pipeline, run_dir):
    """The tokenizer and label vocabularies, each file written atomically into ``run_dir``."""
    import tempfile

    run_dir = Path(run_dir)
    with writing("the vocabularies", run_dir, "write-vocabularies"):
        with tempfile.TemporaryDirectory(dir=run_dir, prefix=".vocab-") as tmp:
            pipeline.save_vocabularies(tmp)
            for f in Path(tmp).iterdir():
                os.replace(f, run_dir / f.name)


def is_finished(run_dir):
    """A finished run: ``metrics.json`` (the last final file) and no checkpoint left."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).exists() and not (run_dir / BACKUP_DIR).exists()


def work_dir(run_dir, chief, task_id):
    """Where this process writes: the run folder (the chief), else ``workers/worker-ID/``."""
    return Path(run_dir) if chief else Path(run_dir) / WORKERS_DIR / f"worker-{task_id}"


