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
  Per-epoch checkpoints are :mod:`fusedfocal.cli.checkpoints`'.
* :func:`dumps`: the one JSON writer of every file a run writes: strict JSON, a non-finite number
  (NaN, +-Infinity) is written as ``null``.
* :func:`writing`: every write site of a run goes through it: an ``OSError`` (disk full, quota,
  read-only, permission) becomes :class:`~fusedfocal.cli.errors.WriteFailed` (one message naming the
  operation and the path, exit status 4); :func:`check_space` refuses a write early when the free
  space is below what it needs.
* :func:`fault`: the fault-injection hook of the tests (``FUSEDFOCAL_FAULT=POINT``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from fusedfocal.cli.errors import CLIError, WriteFailed

__all__ = ["dumps", "strict", "writing", "check_space", "RunLock", "guard", "atomic_path", "write_text", "fault", "LOCK_FILE", "BACKUP_DIR", "CONFIG_FILE",
           "MODEL_FILE", "THRESHOLDS_FILE", "METRICS_FILE", "EPOCHS_FILE", "RUN_FILES", "COMPARE_FILES",
           "stored_args", "write_config", "resume_args", "save_vocabularies", "is_finished", "load_run"]

LOCK_FILE = ".lock"
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
# train flags stored in config.json and restored by --resume
_STORED = ("data", "eval", "text_field", "labels_field", "label_separator", "split_string_labels", "loss", "gamma",
           "alpha", "gamma_neg", "gamma_pos", "clip", "beta", "label_smoothing", "loss_param", "model", "embed_dim",
           "filters", "layers", "dropout", "prior_bias", "epochs", "batch_size", "learning_rate", "max_length",
           "vocab_size", "val_size", "mixed_precision", "jit_compile", "seed", "deterministic", "strategy", "groups",
           "profile", "verbose", "ngram_hidden", "ngram_bigrams", "ngram_weighting", "select", "patience", "optimizer",
           "weight_decay", "head", "fused_head_above", "adam_epsilon", "head_optimizer", "head_dtype",
           "head_learning_rate")
FAULT_ENV = "FUSEDFOCAL_FAULT"
FAULT_ACTION_ENV = "FUSEDFOCAL_FAULT_ACTION"
FAULT_ERRNO_ENV = "FUSEDFOCAL_FAULT_ERRNO"
SKIP_SPACE_CHECK_ENV = "FUSEDFOCAL_SKIP_SPACE_CHECK"


_FAULT_HITS: dict = {}


class InjectedFault(BaseException):
    """Raised at a fault point with ``FUSEDFOCAL_FAULT_ACTION=raise`` (in-process tests); a
    ``BaseException`` so that nothing on the way catches it."""


def armed(point):
    """Whether ``FUSEDFOCAL_FAULT`` names ``point`` and this is its K-th hit (``POINT#K``, default 1)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.partition("#")[0] != point:
        return False
    _FAULT_HITS[point] = _FAULT_HITS.get(point, 0) + 1
    return _FAULT_HITS[point] == int(spec.partition("#")[2] or 1)


def fault(point):
    """Dies at ``point`` when ``FUSEDFOCAL_FAULT`` names it: ``SIGKILL`` of this process (the
    default), or :class:`InjectedFault` with ``FUSEDFOCAL_FAULT_ACTION=raise``, or a SIGTERM (SIGINT)
    of this process with ``FUSEDFOCAL_FAULT_ACTION=sigterm`` (``sigint``; ``sigterm-twice``: two). Points:
    ``epoch-N-batch-B`` (inside epoch N after batch B, 1-based), ``checkpoint-N`` (epoch N's
    checkpoint written, its log line not yet), ``before-final`` (last epoch done, no final file
    written), ``after-model`` / ``after-thresholds`` / ``after-metrics`` (that final file
    written, the checkpoint not yet removed). ``POINT#K`` dies the K-th time this process reaches
    it (e.g. in the second loss of a comparison). Other kinds of points: ``write-...`` (an
    ``OSError``, :func:`writing`) and ``nan-epoch-N-batch-B`` (:mod:`fusedfocal.cli.stops`)."""
    if not armed(point):
        return
    action = os.environ.get(FAULT_ACTION_ENV)
    if action == "raise":
        raise InjectedFault(point)
    if action in ("sigterm", "sigint", "sigterm-twice"):  # a real signal, handled as a scheduler's would be
        signum = signal.SIGINT if action == "sigint" else signal.SIGTERM
        for _ in range(2 if action == "sigterm-twice" else 1):
            os.kill(os.getpid(), signum)
        return
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- strict JSON, write errors
def strict(obj):
    """``obj`` with every non-finite float (NaN, +-Infinity) replaced by ``None`` (JSON ``null``), NumPy
    scalars and arrays as Python numbers and lists, paths as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # NumPy scalars and arrays
        return strict(obj.tolist())
    return obj


def dumps(obj, *, indent=None):
    """Strict JSON (RFC 8259): what every JSON file of a run is written with. A non-finite number is
    written as ``null``, which in a number field means "not a finite number" (a diverged loss)."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path, payload, *, operation=None, point=None):
    """``payload`` as strict JSON (``indent=1``) in ``path``, atomically (see :func:`writing`)."""
    path = Path(path)
    with writing(operation or path.name, path, point or f"write-{path.stem}"):
        write_text(path, dumps(payload, indent=1) + "\n")
    return path


@contextlib.contextmanager
def writing(operation, path, point=None, hint=""):
    """A write site: an ``OSError`` inside becomes :class:`WriteFailed` naming ``operation`` and
    ``path`` (exit status 4). ``point``: the fault point (``FUSEDFOCAL_FAULT=write-...``) that raises
    ``OSError(FUSEDFOCAL_FAULT_ERRNO, default ENOSPC)`` here, as a full disk would."""
    try:
        if point and armed(point):
            code = getattr(errno, os.environ.get(FAULT_ERRNO_ENV, "ENOSPC"))
            raise OSError(code, os.strerror(code), str(path))
        yield
    except OSError as e:
        raise WriteFailed(operation, getattr(e, "filename", None) or path, e, hint) from e


def check_space(directory, needed, operation):
    """Refuses (:class:`WriteFailed`, ENOSPC) a write of about ``needed`` bytes into ``directory``
    when the file system has less free space than that (``shutil.disk_usage``: one ``statvfs``)."""
    if os.environ.get(SKIP_SPACE_CHECK_ENV):  # tests: let the write itself hit the full disk
        return
    directory = Path(directory)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < needed:
        raise WriteFailed(operation, directory, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                          f"It needs about {_mib(needed)}; {_mib(free)} is free")


def _mib(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path`` (same suffix, so writers that check it accept it);
    on success it is renamed over ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink() if tmp.is_file() else shutil.rmtree(tmp, ignore_errors=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync(path):
    if Path(path).is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- lock and guard
def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock of a run folder (``with RunLock(path, "--out"):``); see the module doc."""

    def __init__(self, path, flag="--out"):
        self.path, self.flag, self._fd = Path(path), flag, None

    def __enter__(self):
        import fcntl

        check_folder(self.path, self.flag)
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CLIError(self.flag, f"could not lock the run folder {str(self.path)!r}: {e}")
            who = f"process {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")
            since = f" since {holder['started']}" if holder.get("started") else ""
            raise CLIError(self.flag, (
                f"expected a run folder that no other run is using; received {str(self.path)!r}, which is "
                f"locked by {who}{since} ({lock}). Wait for that run to finish, or choose another --out"))
        stale = _read_holder(fd)
        if stale.get("pid") and stale.get("pid") != os.getpid():
            alive = "no longer running" if not _pid_alive(int(stale["pid"])) else "no longer holding it"
            print(f"{self.path}: took over the lock left by process {stale['pid']} ({alive}: killed or crashed).",
                  file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        import fcntl

        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False


def _read_holder(fd):
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {}


def check_folder(path, flag="--out"):
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(flag, f"expected a run folder (a directory, new or existing); received {str(path)!r}, "
                             "which is a file")


def precheck(path, markers, *, resume, overwrite, flag="--out", finished=None):
    """:func:`guard`'s refusal, early and read-only: a folder that would be refused is refused
    before minutes of data preparation, not after. :func:`guard` checks again under the lock."""
    check_folder(path, flag)
    if not overwrite:
        guard(path, markers, resume=resume, overwrite=False, flag=flag, finished=finished)


def guard(path, markers, *, resume, overwrite, flag="--out", finished=None):
    """Refuses to replace a started or finished run without ``--overwrite`` (and removes its
    ``markers`` with it). Call while holding the folder's :class:`RunLock`."""
    path = Path(path)
    check_folder(path, flag)
    present = [m for m in markers if (path / m).exists()]
    if resume or not present:
        return
    state = "a finished" if finished and (path / finished).exists() else "a started"
    if not overwrite:
        raise CLIError(flag, (
            f"expected a new or empty run folder; received {str(path)!r}, which holds {state} run "
            f"({', '.join(present)}). Pass --resume to continue it, --overwrite to replace it, or another --out"))
    for m in present:
        p = path / m
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ----------------------------------------------------------------------------- config, resume, loading
def stored_args(args):
    out = {k: getattr(args, k, None) for k in _STORED}
    out.update({k: getattr(args, k) for k in ("encoder", "warmup") if getattr(args, k, None) is not None})
    out["groups"] = list(out["groups"]) if isinstance(out["groups"], (list, tuple)) else out["groups"]
    return out


def resume_args(subparser, argv, args):
    """``--resume``: the run's stored settings become the defaults; flags given now override them."""
    cfg_path = Path(args.out) / CONFIG_FILE
    if not cfg_path.exists():
        raise CLIError("--resume", f"expected a run folder with {CONFIG_FILE} in --out; received {args.out!r}, "
                                   "which has none (start the run without --resume)")
    stored = json.loads(cfg_path.read_text())["args"]
    if isinstance(stored.get("groups"), list):
        stored["groups"] = tuple(stored["groups"])
    subparser.set_defaults(**stored)
    return subparser.parse_args(argv)


def _settings_json(settings):
    return {k: s.as_dict() for k, s in (settings or {}).items()}


def write_train_config(run_dir, args, loss_name, loss_params, pipeline, description, head="dense", settings=None):
    """``config.json`` of a run: its flags (the chosen settings' values included), its loss, its
    pipeline, its data, its head (``"dense"`` or ``"fused"``, as ``--head`` resolved on this data;
    ``evaluate`` and ``predict`` read it) and ``settings``: each chosen setting with its source and
    why (:mod:`fusedfocal.cli.settings`)."""
    import dataclasses

    write_json(Path(run_dir) / CONFIG_FILE, {
        "fusedfocal_cli": 1, "args": stored_args(args), "head": head, "settings": _settings_json(settings),
        "loss": {"name": loss_name, "params": {k: v for k, (v, _) in loss_params.items()}},
        "pipeline": dataclasses.asdict(pipeline.config), "data": description})


def write_compare_config(out, args, settings=None):
    """``config.json`` of a comparison: the train flags and ``--losses``, ``--threshold-mode``,
    ``--seeds``, and the settings chosen from the data (as in :func:`write_train_config`)."""
    write_json(Path(out) / CONFIG_FILE, {"fusedfocal_cli": 1, "command": "compare", "args": {
        **stored_args(args), "losses": args.losses, "threshold_mode": args.threshold_mode, "seeds": args.seeds},
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


def load_run(run_dir):
    """``(model, pipeline, thresholds, config)`` of a finished run; CLI errors if it is incomplete.
    A fused-head run (``config["head"] == "fused"``) has no thresholds: ``thresholds`` is ``None``."""
    run_dir = Path(run_dir)
    fused, hub = False, False
    if (run_dir / CONFIG_FILE).exists():
        try:
            cfg = json.loads((run_dir / CONFIG_FILE).read_text())
            fused, hub = cfg.get("head") == "fused", bool((cfg.get("args") or {}).get("encoder"))
        except ValueError:
            fused = False
    needed = ((CONFIG_FILE, MODEL_FILE, LABEL_VOCAB_FILE) + (() if hub else (WORDPIECE_FILE,))
              + (() if fused else (THRESHOLDS_FILE,)))
    missing = [f for f in needed if not (run_dir / f).exists()]
    if missing:
        raise CLIError("RUN_DIR", f"expected a finished run folder (written by fusedfocal train); received "
                                  f"{str(run_dir)!r}, which lacks {', '.join(missing)}")
    import keras

    from fusedfocal import data
    from fusedfocal import keras as _fk  # noqa: F401  (registers FocalHead, FocalHeadModel)
    from fusedfocal.cli import models  # noqa: F401  (registers the custom layers)

    cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    pcfg = data.PipelineConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg["pipeline"].items()})
    # --encoder: the tokenizer from RUN_DIR/encoder/ (and KerasHub's classes, which model.keras names)
    pipeline = data.TextPipeline.from_directory(pcfg, run_dir, tokenizer=_encoder_tokenizer(run_dir, cfg) if hub else None)
    model = keras.saving.load_model(run_dir / MODEL_FILE, compile=False)
    if fused:
        if model.head.num_labels != len(pipeline.label_vocab):
            raise CLIError("RUN_DIR", f"the label vocabulary does not match the model: expected "
                                      f"{model.head.num_labels} labels (the fused head's); received "
                                      f"{len(pipeline.label_vocab)} in label_vocab.json")
        # model.keras rebuilds the head it was trained with (weight dtype, head optimizer and its
        # slots); it must be the head config.json records (absent: a run older than those flags)
        stored = cfg.get("args") or {}
        opt = model.head.head_optimizer
        found = {"head_dtype": model.head.weight_dtype, "head_optimizer": "shared" if opt is None else opt.update.optimizer}
        for name, default in (("head_dtype", "float32"), ("head_optimizer", "shared")):
            if (stored.get(name) or default) != found[name]:
                raise CLIError("RUN_DIR", f"the fused head of {MODEL_FILE} does not match {CONFIG_FILE}: expected "
                                          f"{name.replace('_', '-')} {stored.get(name) or default}; received "
                                          f"{found[name]} in {run_dir / MODEL_FILE}")
        return model, pipeline, None, cfg
    thresholds = json.loads((run_dir / THRESHOLDS_FILE).read_text())
    out_dim = model.output_shape[-1]
    if out_dim != len(pipeline.label_vocab) or len(thresholds["per_class_vector"]) != out_dim:
        raise CLIError("RUN_DIR", f"the label vocabulary does not match the model: expected {out_dim} labels "
                                  f"(model outputs); received {len(pipeline.label_vocab)} in label_vocab.json and "
                                  f"{len(thresholds['per_class_vector'])} thresholds")
    return model, pipeline, thresholds, cfg


def _encoder_tokenizer(run_dir, cfg):
    """The tokenizer of an ``--encoder`` run, from ``RUN_DIR/encoder/`` (without a network)."""
    from fusedfocal import hub

    try:
        return hub.load_tokenizer(Path(run_dir) / "encoder")
    except (ImportError, ValueError) as e:
        raise CLIError("RUN_DIR", f"expected a run folder whose --encoder {cfg['args']['encoder']} can be read from "
                                  f"{Path(run_dir) / 'encoder'} (pip install fusedfocal[hub] for KerasHub); received: {e}")


def finished_result(run_dir, prep):
    """The result of a finished run of an interrupted comparison: its metrics.json, with the
    evaluation scores recomputed from its model.keras (for the precision-recall curves)."""
    import keras

    from fusedfocal.cli import models  # registers the custom layers

    result = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    if result.get("head") == "fused":  # no [N, C] scores, no precision-recall curves
        return result
    model = keras.saving.load_model(Path(run_dir) / MODEL_FILE, compile=False)
    scores = models.predict_scores(model, prep.pipeline, prep.test[0])
    result["_scores"] = (scores, prep.pipeline.label_vocab.encode(prep.test[1])[0])
    return result
