"""``fusedfocal train``: data, vocabularies, model, loss, checkpoints, thresholds, metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from fusedfocal.cli import rundir
from fusedfocal.cli.errors import CLIError, log

__all__ = ["Prepared", "prepare", "build_loss", "parse_loss_params", "train_run", "cmd_train", "resume_args"]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
THRESHOLDS_FILE = "thresholds.json"
METRICS_FILE = "metrics.json"
EPOCHS_FILE = "epochs.jsonl"
# what a run writes into its folder: any of them means a started (or finished) run
RUN_FILES = (CONFIG_FILE, EPOCHS_FILE, "backup", MODEL_FILE, THRESHOLDS_FILE, METRICS_FILE, "label_vocab.json",
             "wordpiece_vocab.txt", "logs", "evaluation.json")
SYNTHETIC = "the built-in synthetic corpus (synthetic_splits(seed=0): 4000 train / 1000 test documents, 19 labels)"
# train flags stored in config.json and restored by --resume
_STORED = ("data", "eval", "text_field", "labels_field", "label_separator", "split_string_labels", "loss", "gamma",
           "alpha", "gamma_neg", "gamma_pos", "clip", "beta", "label_smoothing", "loss_param", "model", "embed_dim",
           "filters", "layers", "dropout", "prior_bias", "epochs", "batch_size", "learning_rate", "max_length",
           "vocab_size", "val_size", "mixed_precision", "jit_compile", "seed", "deterministic", "strategy", "groups",
           "profile", "verbose", "ngram_hidden", "ngram_bigrams", "ngram_weighting", "select", "patience")


# ----------------------------------------------------------------------------- data
def _read(paths, args, flag):
    from fusedfocal import data

    try:
        texts, labels, stats = data.read_records(
            paths, text_field=args.text_field or "text", labels_field=args.labels_field or "labels",
            label_separator=args.label_separator or "|",
            string_labels="split" if getattr(args, "split_string_labels", False) else "raise")
    except FileNotFoundError as e:
        raise CLIError(flag, f"expected an existing file or glob; received {' '.join(map(str, paths))!r} ({e})")
    except IsADirectoryError as e:
        raise CLIError(flag, f"expected a file or glob; received {' '.join(map(str, paths))!r} ({e})")
    except ValueError as e:
        raise CLIError(flag, f"could not read the data: {_cli_hints(str(e))}")
    if not texts:
        raise CLIError(flag, f"expected at least one document; received an empty data set from {' '.join(map(str, paths))}")
    return texts, labels


def _cli_hints(message):
    """The readers' hints name library arguments; on the command line they are flags."""
    import re

    message = re.sub(r'pass string_labels="split" \(and label_separator=\.\.\.\)',
                     "pass --split-string-labels (and --label-separator SEP)", message)
    message = re.sub(r", or pass format= one of \[[^\]]*\]",
                     " (the command line infers the format from the file name: rename the file)", message)
    return message


def _check_labelled(texts, labels, flag, paths, field):
    if not any(labels):
        raise CLIError(flag, (
            f"expected documents with labels in the field {field!r}; received {len(texts)} documents from "
            f"{' '.join(map(str, paths))}, none of them with a label (use --labels-field to name the field)"))


def split_validation(n, val_size, seed):
    """Indices ``(fit, val)`` of a seeded hold-out of ``val_size`` documents (fraction or count)."""
    if val_size is None:
        count = 1000 if n >= 5000 else max(1, round(0.1 * n))
    elif isinstance(val_size, float) and val_size < 1:
        count = max(1, round(val_size * n))
    else:
        count = int(val_size)
    if count >= n:
        raise CLIError("--val-size", f"expected fewer validation documents than training documents ({n}); "
                                     f"received {val_size} ({count} documents)")
    order = np.random.default_rng([seed, 2]).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


@dataclasses.dataclass
class Prepared:
    """Everything a run needs from the data, shared by every loss of a comparison."""

    fit: tuple
    val: tuple
    test: tuple
    eval_split: str
    pipeline: object
    fit_counts: np.ndarray
    fit_docs: int
    description: str


def prepare(args, run_dir=None):
    """Reads the data, holds out validation, builds (or, from ``run_dir``, loads) the vocabularies."""
    from fusedfocal import data

    if args.data:
        texts, labels = _read(args.data, args, "--data")
        _check_labelled(texts, labels, "--data", args.data, args.labels_field or "labels")
        desc = ", ".join(str(p) for p in args.data)
    else:
        (texts, labels), test_synth = data.synthetic_splits(seed=0)
        desc = SYNTHETIC
    if len(texts) < 2:
        raise CLIError("--data", f"expected at least 2 training documents (1 is held out for validation); received {len(texts)}")
    fit_idx, val_idx = split_validation(len(texts), args.val_size, args.seed)
    fit = ([texts[i] for i in fit_idx], [labels[i] for i in fit_idx])
    val = ([texts[i] for i in val_idx], [labels[i] for i in val_idx])
    if args.eval:
        test = _read(args.eval, args, "--eval")
        eval_split = "test"
    elif not args.data:
        test = test_synth
        eval_split = "test"
    else:
        test = val
        eval_split = "validation"
    # Static shapes: every batch padded to max_length (XLA compiles one program per input shape, and
    # replicas of a distributed run then see the same padding as a single-device run).
    config = data.PipelineConfig(max_length=args.max_length, batch_size=args.batch_size,
                                 vocab_size=args.vocab_size, seed=args.seed, deterministic=args.deterministic,
                                 fixed_shape=True)
    # Label names from every training document (validation included), counts = training documents.
    label_vocab = data.LabelVocab.build(labels)
    if run_dir is not None and (Path(run_dir) / "label_vocab.json").exists():
        pipeline = data.TextPipeline.from_directory(config, run_dir)
        if pipeline.label_vocab.labels != label_vocab.labels:
            stored = pipeline.label_vocab.labels
            missing = sorted(set(stored) - set(label_vocab.labels))
            new = sorted(set(label_vocab.labels) - set(stored))
            raise CLIError("--data", (
                f"the label vocabulary of this data does not match the one {run_dir} was trained with: expected "
                f"{len(stored)} labels as in {Path(run_dir) / 'label_vocab.json'}; received {len(label_vocab)} "
                f"labels (missing: {missing[:8]}, new: {new[:8]}, or a different frequency order)"))
    else:
        t0 = time.time()
        wordpiece = data.build_wordpiece_vocab(fit[0], args.vocab_size, seed=args.seed)
        log(f"WordPiece vocabulary: {len(wordpiece)} tokens learnt from {len(fit[0])} documents "
            f"in {time.time() - t0:.1f}s")
        pipeline = data.TextPipeline(config, wordpiece, label_vocab)
    fit_y, _ = pipeline.label_vocab.encode(fit[1])
    fit_counts = fit_y.sum(0).astype(np.int64)
    if args.eval:
        _check_eval_labels(test[1], pipeline.label_vocab, args.eval)
    unseen = [name for name, n in zip(pipeline.label_vocab.labels, fit_counts) if n == 0]
    if unseen:
        log(f"warning: {len(unseen)} label(s) have no positive document among the {len(fit[0])} training "
            f"documents (all of theirs were held out for validation), so the model cannot learn them: "
            f"{unseen[:8]}{' ...' if len(unseen) > 8 else ''}. Training goes on; a smaller --val-size or "
            "more data avoids this.")
    return Prepared(fit=fit, val=val, test=test, eval_split=eval_split, pipeline=pipeline,
                    fit_counts=fit_counts, fit_docs=len(fit[0]), description=desc)


def _check_eval_labels(label_lists, label_vocab, paths):
    """``--eval`` data must share labels with the training data (as ``evaluate`` requires); checked
    before anything is trained or written."""
    names = {n for ls in label_lists for n in ls}
    known = names & set(label_vocab.labels)
    if known:
        return
    got = (f"{len(names)} label name(s), none of them in the training data, e.g. {sorted(names)[:5]}" if names
           else "documents without any label")
    raise CLIError("--eval", (
        f"expected evaluation data labelled with the training labels, such as {label_vocab.labels[:5]} "
        f"({len(label_vocab)} labels); received {got} in {' '.join(map(str, paths))}"))


# ----------------------------------------------------------------------------- loss
_FLAG_PARAMS = {"gamma": "--gamma", "alpha": "--alpha", "gamma_neg": "--gamma-neg", "gamma_pos": "--gamma-pos",
                "clip": "--clip", "beta": "--beta", "label_smoothing": "--label-smoothing"}


def parse_value(text):
    """``'none'`` -> None, ``'true'/'false'`` -> bool, numbers, ``'a/b/c'`` -> list of floats."""
    t = str(text).strip()
    if t.lower() in ("none", "null"):
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if "/" in t:
        return [float(x) for x in t.split("/")]
    try:
        return int(t) if t.lstrip("-").isdigit() else float(t)
    except ValueError:
        return t


def parse_loss_params(args):
    """Loss parameters from the dedicated flags and ``--loss-param KEY=VALUE``; ``{param: (value, flag)}``."""
    params = {}
    for key, flag in _FLAG_PARAMS.items():
        value = getattr(args, key, None)
        if value is not None:
            try:
                params[key] = (parse_value(value) if key == "alpha" else value, flag)
            except ValueError:
                raise CLIError(flag, f"expected a float, 'none' or floats joined by '/'; received {value!r}")
    for item in args.loss_param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError("--loss-param", f"expected KEY=VALUE; received {item!r}")
        try:
            params[key.strip().replace("-", "_")] = (parse_value(value), "--loss-param")
        except ValueError:
            raise CLIError("--loss-param", f"expected KEY=VALUE with a number, 'none' or floats joined by '/'; "
                                           f"received {item!r}")
    return params


def build_loss(name, params, class_counts, num_docs, flag="--loss"):
    """A Keras 3 loss from the registry; bad names or parameters become CLI errors naming the flag."""
    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    if name not in losses.NAMES:
        raise CLIError(flag, f"invalid loss {name!r}; expected one of {', '.join(losses.NAMES)}")
    import re

    values = {k: v for k, (v, _) in params.items()}
    num_labels = len(class_counts)
    for k, (v, f) in params.items():  # per-label vectors: one value per label, checked before any training
        if isinstance(v, list) and len(v) != num_labels:
            shown = f"--losses {k}=" if f == "--losses" else (f"{f} " if f != "--loss-param" else f"--loss-param {k}=")
            raise CLIError(f, (f"expected one value per label for {k} ({num_labels} labels in the training data, "
                               f"in label_vocab.json order) or a single value; received {len(v)} values "
                               f"({shown}{'/'.join(map(str, v))})"))
    counts = np.maximum(np.asarray(class_counts, np.int64), 1)  # a label seen only in validation

    def culprit(msg):  # the flag of the parameter the message is about, matched as a whole word
        return next((f for k, (_, f) in params.items() if re.search(rf"(`{k}`|'{k}'|\b{k}=)", msg)), None)

    try:
        return losses.get(name, class_counts=counts, num_docs=int(num_docs), **values)
    except TypeError as e:
        raise CLIError(culprit(str(e)) or (flag if flag != "--loss" else "--loss-param"),
                       f"expected parameters that loss {name!r} takes ({', '.join(loss_parameters(name))}); "
                       f"received {', '.join(values)} ({e})")
    except ValueError as e:
        msg = str(e)
        raise CLIError(culprit(msg) or flag, f"invalid parameter of loss {name!r}: {msg}")


def loss_parameters(name):
    """The keyword parameters of a loss class (those the command line can pass)."""
    import inspect

    from fusedfocal import keras as fk
    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    skip = {"self", "reduction", "name", "dtype", "class_counts", "num_docs", "args", "kwargs"}
    sig = inspect.signature(getattr(fk, losses.NAMES[name]).__init__)
    return [k for k in sig.parameters if k not in skip] or ["none"]


def loss_label(name, params):
    vals = {k: v for k, (v, _) in params.items()} if params and isinstance(next(iter(params.values())), tuple) else params
    if not vals:
        return name
    return name + "(" + ",".join(f"{k}={v}" for k, v in vals.items()) + ")"


# ----------------------------------------------------------------------------- runtime
_STRATEGIES: dict = {}


def make_strategy(name):
    """The ``tf.distribute`` strategy, created once per process (multiworker must be created before
    any other TensorFlow op: the CLI calls this first)."""
    if name not in _STRATEGIES:
        _STRATEGIES[name] = _new_strategy(name)
    return _STRATEGIES[name]


def _new_strategy(name):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if "TF_CONFIG" not in os.environ:
        raise CLIError("--strategy", "expected the TF_CONFIG environment variable (cluster and task) with "
                                     "--strategy multiworker; received none")
    check_tf_config(os.environ["TF_CONFIG"])
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text):
    """TF_CONFIG must be JSON with a cluster (a dict of address lists) and a task in it."""
    expected = ("expected the TF_CONFIG environment variable to be JSON such as "
                '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}')
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise CLIError("--strategy", f"{expected}; received malformed JSON ({e}): {text[:80]!r}")
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in cluster.values()):
        raise CLIError("--strategy", f"{expected}; received TF_CONFIG without a valid 'cluster': {text[:80]!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise CLIError("--strategy", (f"{expected} (the task's type a key of the cluster, its index within that "
                                      f"list); received task {task!r}"))


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    return task_type == "chief" or (task_type == "worker" and task_id == 0), task_id


def setup_runtime(args):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[args.mixed_precision]
    keras.mixed_precision.set_global_policy(policy)


def use_jit(args):
    if args.jit_compile != "auto":
        return args.jit_compile == "on"
    # Measured on 2 CPU cores (Keras 3.15, TF 2.21): XLA is 1.1x (cnn) to 2x (fasttext) faster per step;
    # distributed runs and the attention model stay on the plain graph path.
    # Keras turns XLA off itself under op determinism (--deterministic, process-wide once enabled).
    from tensorflow.python.framework.config import is_op_determinism_enabled

    # ngram: tf.unique has no XLA kernel.
    return (args.strategy == "default" and args.model not in ("transformer", "ngram") and not args.deterministic
            and not is_op_determinism_enabled())


def epoch_order(n, seed, epoch):
    """The order in which epoch ``epoch`` (0-based) reads the ``n`` training documents: a function of
    the seed and the epoch only, so a resumed run reads every epoch as an uninterrupted one does."""
    return np.random.default_rng([seed, 3, epoch]).permutation(n)


def history_keys(records):
    keys = []
    for r in records:
        keys += [k for k in r if k not in ("epoch", "seconds") and k not in keys]
    return keys


def save_vocabularies(pipeline, run_dir):
    """The tokenizer and label vocabularies, each file written atomically into ``run_dir``."""
    import tempfile

    run_dir = Path(run_dir)
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".vocab-") as tmp:
        pipeline.save_vocabularies(tmp)
        for f in Path(tmp).iterdir():
            os.replace(f, run_dir / f.name)


def predict_scores(model, pipeline, texts, batch_size=256, return_logits=False):
    """Sigmoid scores ``[N, C]`` of every text (and the logits with ``return_logits``), computed
    locally on this worker.

    The model is called directly rather than through ``model.predict``, which under a multi-worker
    strategy would shard the documents across workers (each would see only its part). It is called
    eagerly: a ``tf.function`` per model would be traced again for every model of a comparison
    (TensorFlow counts the traces of one function's code across closures, and warns about
    retracing after five), and the eager call of a few batches costs about as much as tracing.
    """
    import tensorflow as tf

    out = []
    for i in range(0, len(texts), batch_size):
        ids = pipeline.tokenize(texts[i:i + batch_size])
        out.append(tf.cast(model({"token_ids": ids}, training=False), tf.float32).numpy())
    logits = np.concatenate(out, 0) if out else np.zeros((0, pipeline.num_labels), np.float32)
    scores = tf.math.sigmoid(logits).numpy()
    return (scores, logits) if return_logits else scores


def profile_batches(args, steps_per_epoch):
    if not args.profile:
        return 0
    start = 2 if steps_per_epoch is None or steps_per_epoch > args.profile + 1 else 1
    return (start, start + args.profile - 1)


def check_profiler():
    """The trace needs TF's profiler (always in TF 2.21); TensorBoard is only needed to view it."""
    try:
        from tensorflow.python.profiler import profiler_v2  # noqa: F401
    except ImportError as e:
        raise CLIError("--profile", f"expected TensorFlow's profiler; it could not be imported ({e}). "
                                    "Install the extra: pip install 'fusedfocal[profile]'")


def tensorboard_callback(log_dir, profile_batch):
    """``keras.callbacks.TensorBoard`` when TensorBoard is installed, else :class:`ScalarLogger`."""
    import keras

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return ScalarLogger(log_dir, profile_batch)
    return keras.callbacks.TensorBoard(str(log_dir), profile_batch=profile_batch)


def ScalarLogger(log_dir, profile_batch):
    """Without the ``tensorboard`` package (the optional ``profile`` extra), ``tf.summary.scalar`` is
    missing: this callback writes the epoch scalars with the core op ``tf.summary.write`` in the
    layout TensorBoard reads (``logs/train``, ``logs/validation``, ``epoch_loss``) and captures the
    ``profile_batch`` trace with ``tf.profiler.experimental`` into ``logs/plugins/profile``."""
    import keras
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"

    class _ScalarLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._writers = {}
            self._profiling = False
            self._step = 0

        def _writer(self, name):
            if name not in self._writers:
                self._writers[name] = tf.summary.create_file_writer(str(Path(log_dir) / name))
            return self._writers[name]

        def on_train_batch_begin(self, batch, logs=None):
            self._step += 1
            if profile_batch and self._step == profile_batch[0]:
                tf.profiler.experimental.start(str(log_dir))
                self._profiling = True

        def on_train_batch_end(self, batch, logs=None):
            if self._profiling and self._step >= profile_batch[1]:
                tf.profiler.experimental.stop()
                self._profiling = False

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
                with self._writer(split).as_default():
                    tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=epoch, metadata=meta)
            for w in self._writers.values():
                w.flush()

        def on_train_end(self, logs=None):
            if self._profiling:
                tf.profiler.experimental.stop()
                self._profiling = False
            for w in self._writers.values():
                w.close()

    return _ScalarLogger()


def stored_args(args):
    out = {k: getattr(args, k, None) for k in _STORED}
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


# ----------------------------------------------------------------------------- one run
def train_run(args, prep, loss_name, loss_params, run_dir, *, resume=False, title=None):
    """Trains one model with one loss into ``run_dir``; returns the result dict (scores included)."""
    import warnings

    import keras

    from fusedfocal.cli import metrics as ev
    from fusedfocal.cli import models, report

    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    run_dir = Path(run_dir)
    keras.backend.clear_session()
    setup_runtime(args)
    strategy = make_strategy(args.strategy)
    chief, task_id = is_chief(strategy)
    work_dir = run_dir if chief else run_dir / "workers" / f"worker-{task_id}"
    work_dir.mkdir(parents=True, exist_ok=True)
    pipe = prep.pipeline
    labels = pipe.label_vocab
    if chief:
        save_vocabularies(pipe, run_dir)
        if not resume or not (run_dir / CONFIG_FILE).exists():
            report.write_json(run_dir / CONFIG_FILE, {
                "fusedfocal_cli": 1, "args": stored_args(args),
                "loss": {"name": loss_name, "params": {k: v for k, (v, _) in loss_params.items()}},
                "pipeline": dataclasses.asdict(pipe.config), "data": prep.description})
    checkpoints = rundir.Checkpoints(work_dir)
    if not resume:
        (work_dir / EPOCHS_FILE).unlink(missing_ok=True)
        import shutil

        checkpoints.remove()
        shutil.rmtree(work_dir / "logs", ignore_errors=True)

    priors = prep.fit_counts / max(prep.fit_docs, 1)
    fit_ids = pipe.tokenize(prep.fit[0]).numpy() if args.model == "ngram" else None  # bigram vocabulary, idf
    with strategy.scope():
        model = models.build_model(args.model, vocab_size=len(pipe.wordpiece_vocab), num_labels=len(labels),
                                   max_length=args.max_length, priors=priors, prior_bias=args.prior_bias,
                                   embed_dim=args.embed_dim, filters=args.filters, layers=args.layers,
                                   dropout=args.dropout, seed=args.seed, fit_ids=fit_ids,
                                   ngram_hidden=getattr(args, "ngram_hidden", 0) or 0,
                                   ngram_bigrams=getattr(args, "ngram_bigrams", 50000),
                                   ngram_weighting=getattr(args, "ngram_weighting", "tfidf") or "tfidf")
        loss = build_loss(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss, jit_compile=use_jit(args))

    fit_texts, fit_labels = prep.fit
    # Resume: weights, optimizer state, dropout RNG state and the epoch log of the newest readable
    # checkpoint (the model and its optimizer exist now; fit() starts at that epoch).
    initial_epoch, records = checkpoints.restore(model, log=log) if resume else (0, [])
    if resume:
        rundir.write_epoch_log(work_dir / EPOCHS_FILE, records)  # drops lines of epochs not checkpointed
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
        check_profiler()
    n_steps = steps
    # Best-epoch selection and early stopping: scores every epoch on validation, before the checkpoint.
    from fusedfocal.cli import select as sel

    val_y_sel, _ = labels.encode(prep.val[1])
    selector = sel.BestEpoch(
        getattr(args, "select", None) or "macro_f1", getattr(args, "patience", 3) or 0,
        lambda m: sel.validation_scores(m, pipe, prep.val[0], val_y_sel, predict_scores),
        checkpoints.dir, records, log=log)
    selector.set_model(model)
    callbacks = [
        selector,
        rundir.epoch_callback(checkpoints, work_dir / EPOCHS_FILE, records),
        tensorboard_callback(work_dir / "logs", profile_batches(args, n_steps)),
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
        with rundir.atomic_path(run_dir / MODEL_FILE) as tmp:
            model.save(tmp)
        rundir.fault("after-model")

    # Thresholds on validation only; metrics on the evaluation split.
    val_scores = predict_scores(model, pipe, prep.val[0])
    val_y, _ = labels.encode(prep.val[1])
    g, per, fallback = ev.tune_thresholds(val_scores, val_y)
    thresholds = {
        "global": g, "per_class": {name: float(t) for name, t in zip(labels.labels, per)},
        "per_class_vector": per.tolist(),
        "fallback_to_global": [name for name, f in zip(labels.labels, fallback) if f],
        "tuned_on": f"validation split held out from the training data ({len(prep.val[0])} documents)",
        "objective": "global: micro-F1; per_class: the label's F1 (labels without validation positives "
                     "use the global threshold)"}
    test_scores = val_scores if prep.eval_split == "validation" else predict_scores(model, pipe, prep.test[0])
    test_y, unknown = labels.encode(prep.test[1])
    groups, group_rule = ev.resolve_groups(args.groups, labels.counts)
    kw = dict(train_counts=labels.counts, label_names=labels.labels, boundaries=groups)
    metrics = ev.all_metrics(test_scores, test_y, thresholds, **kw)
    epochs_log = list(records)  # every epoch exactly once, resumed runs included
    result = {
        "name": loss_label(loss_name, loss_params), "loss": loss_name,
        "loss_params": {k: v for k, (v, _) in loss_params.items()},
        "data": prep.description, "eval_split": prep.eval_split,
        "documents": {"fit": len(fit_texts), "validation": len(prep.val[0]), "eval": len(prep.test[0])},
        "labels": len(labels), "groups": {"boundaries": list(groups), "rule": group_rule, **{
            k: int(len(v)) for k, v in ev.label_groups(labels.counts, groups).items()}},
        "unknown_eval_labels": dict(unknown),
        "thresholds": {"global": g, "per_class_fallbacks": len(thresholds["fallback_to_global"])},
        "metrics": metrics,
        "validation_metrics": {"global": ev.metrics_at(val_scores, val_y, g, **kw)["micro"]},
        "history": {k: [float(r[k]) for r in epochs_log if k in r] for k in history_keys(epochs_log)},
        "epochs": epochs_log, "selection": selector.summary(), "train_seconds": round(train_seconds, 2),
        "settings": {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
                     "learning_rate": args.learning_rate, "max_length": args.max_length, "seed": args.seed,
                     "deterministic": args.deterministic, "strategy": args.strategy,
                     "replicas": strategy.num_replicas_in_sync, "mixed_precision": args.mixed_precision,
                     "jit_compile": use_jit(args)},
    }
    if chief:
        report.write_json(run_dir / THRESHOLDS_FILE, thresholds)
        rundir.fault("after-thresholds")
        report.write_json(run_dir / METRICS_FILE, result)
        rundir.fault("after-metrics")
    checkpoints.remove()  # the run is complete: metrics.json without backup/ marks it finished
    result["_scores"] = (test_scores, test_y)
    return result


def summary_lines(result):
    from fusedfocal.cli.report import fmt

    lines = [f"Evaluated on the {result['eval_split']} split ({result['documents']['eval']} documents, "
             f"{result['labels']} labels); thresholds tuned on {result['documents']['validation']} "
             "held-out training documents."]
    lines.append(f"{'thresholds':<22}{'micro P':>8}{'micro R':>8}{'micro F1':>9}{'macro P':>8}{'macro R':>8}{'macro F1':>9}")
    names = {"at_0.5": "0.5", "global": f"global {result['thresholds']['global']:.2f}", "per_class": "per label"}
    for mode, label in names.items():
        m = result["metrics"][mode]
        lines.append(f"{label:<22}" + "".join(f"{fmt(m[a][b]) if m[a] else '-':>{w}}" for a in ("micro", "macro")
                                              for b, w in (("precision", 8), ("recall", 8), ("f1", 9))))
    g = result["metrics"]["global"]["groups"]
    lines.append("label groups (global threshold), macro recall / F1: " + "; ".join(
        f"{k} ({v['labels']}) {fmt(v['macro']['recall']) if v['macro'] else '-'} / "
        f"{fmt(v['macro']['f1']) if v['macro'] else '-'}" for k, v in g.items()))
    if result["unknown_eval_labels"]:
        lines.append(f"{sum(result['unknown_eval_labels'].values())} eval label occurrence(s) not in the label "
                     f"vocabulary were ignored: {sorted(result['unknown_eval_labels'])[:8]}")
    return lines


def is_finished(run_dir):
    """A finished run: ``metrics.json`` (the last final file) and no checkpoint left."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).exists() and not (run_dir / rundir.BACKUP_DIR).exists()


def cmd_train(args):
    run_dir = Path(args.out)
    rundir.check_folder(run_dir)
    params = parse_loss_params(args)
    make_strategy(args.strategy)
    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    if args.loss not in losses.NAMES:
        raise CLIError("--loss", f"invalid loss {args.loss!r}; expected one of {', '.join(losses.NAMES)}")
    prep = prepare(args, run_dir if args.resume else None)  # on --resume: checks the label vocabulary
    build_loss(args.loss, params, prep.fit_counts, prep.fit_docs)  # validate before anything is written
    title = (f"Training {args.model} with loss {loss_label(args.loss, params)} on {prep.description}: "
             f"{prep.fit_docs} documents ({len(prep.val[0])} held out for thresholds), "
             f"{prep.pipeline.num_labels} labels, {args.epochs} epoch(s)"
             + (" [resumed]" if args.resume else ""))
    t0 = time.time()
    chief, task_id = is_chief(make_strategy(args.strategy))
    work_dir = run_dir if chief else run_dir / "workers" / f"worker-{task_id}"
    with rundir.RunLock(work_dir):
        if chief:
            rundir.guard(run_dir, RUN_FILES, resume=args.resume, overwrite=getattr(args, "overwrite", False),
                         finished=METRICS_FILE)
        if args.resume and is_finished(run_dir):
            log(f"{run_dir} already finished ({METRICS_FILE} exists, no checkpoint left); nothing to resume.")
            return
        result = train_run(args, prep, args.loss, params, run_dir, resume=args.resume, title=title)
    for line in summary_lines(result):
        print(line)
    chief, task_id = is_chief(make_strategy(args.strategy))
    if not chief:
        print(f"Worker {task_id}: checkpoints and logs in {run_dir}/workers/worker-{task_id}/; worker 0 writes the run.")
        return
    print(f"Wrote {run_dir}/: {MODEL_FILE}, wordpiece_vocab.txt, label_vocab.json, {THRESHOLDS_FILE}, "
          f"{METRICS_FILE}, logs/ (tensorboard --logdir {run_dir}/logs) in {time.time() - t0:.0f}s")
