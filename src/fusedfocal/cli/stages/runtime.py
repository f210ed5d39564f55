"""The runtime stage: the ``tf.distribute`` strategy (``--strategy``, ``TF_CONFIG``), seeds, op determinism,
mixed precision and XLA (``--jit-compile``); the worker processes that hold label shards
(``--label-shards S --strategy multiworker``): :func:`serve_label_shard` on a worker,
:func:`connect_label_shard_workers` and :func:`label_shard_workers` on their chief.
"""

from __future__ import annotations

import contextlib
import json
import os

from fusedfocal.cli.errors import CLIError, WorkerLost, log

__all__ = ["make_strategy", "check_tf_config", "tf_config_parts", "is_chief", "setup_runtime", "use_jit", "serve_label_shard",
           "connect_label_shard_workers", "label_shard_workers", "WORKER_GRACE_S", "CONNECT_TIMEOUT_S"]

# A step blocked on a dead worker (no error from TensorFlow): the chief exits this long after the
# watchdog saw the worker's port close (TensorFlow's error usually comes first, in seconds).
WORKER_GRACE_S = 30.0
CONNECT_TIMEOUT_S = 60.0  # how long the chief waits for every worker to listen
RESUME = ("Restart the workers (each with its TF_CONFIG: the same command, or python -m fusedfocal.distributed), "
          "then run this command again with --resume: the chief's last checkpoint (every epoch) reloads the "
          "head's shards onto them.")

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


def tf_config_parts(text, expected):
    """``(cluster, task)`` of the JSON ``text`` of ``TF_CONFIG`` (``None`` where absent); malformed JSON
    is a CLI error naming ``--strategy`` with ``expected``."""
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise CLIError("--strategy", f"{expected}; received malformed JSON ({e}): {text[:80]!r}")
    if not isinstance(cfg, dict):
        return None, None
    return cfg.get("cluster"), cfg.get("task")


def check_tf_config(text):
    """TF_CONFIG must be JSON with a cluster (a dict of address lists) and a task in it."""
    expected = ("expected the TF_CONFIG environment variable to be JSON such as "
                '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}')
    cluster, task = tf_config_parts(text, expected)
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


def setup_runtime(runtime):
    """Seeds, op determinism and the mixed-precision policy of a
    :class:`~fusedfocal.cli.spec.RuntimeConfig`, process-wide."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[runtime.mixed_precision]
    keras.mixed_precision.set_global_policy(policy)


def use_jit(runtime, model, label_shards=None):
    """Whether the train step is compiled with XLA: ``--jit-compile on``/``off``, or for ``auto`` the
    measured rule below (``model``: the resolved ``--model``)."""
    if runtime.jit_compile != "auto":
        return runtime.jit_compile == "on"
    # Measured on 2 CPU cores (Keras 3.15, TF 2.21): XLA is 1.1x (cnn) to 2x (fasttext) faster per step;
    # distributed runs and the attention model stay on the plain graph path.
    # Keras turns XLA off itself under op determinism (--deterministic, process-wide once enabled).
    from tensorflow.python.framework.config import is_op_determinism_enabled

    # ngram: tf.unique has no XLA kernel.
    # A label-sharded head (--label-shards) spans devices, and XLA compiles a step for one.
    return (runtime.loop_strategy == "default" and model not in ("transformer", "ngram") and not runtime.deterministic
            and not is_op_determinism_enabled() and not label_shards)


def serve_label_shard(cluster, *, deterministic=False, command="train"):
    """A worker process of ``--label-shards S --strategy multiworker`` (``cluster``: a
    :class:`~fusedfocal.cli.resolve.heads.ShardCluster`): it serves label shard ``cluster.index``
    for the chief until it is stopped; it reads no data and writes no run folder."""
    import tensorflow as tf

    from fusedfocal import distributed

    if deterministic:  # the shard's ops run in this process: the chief's --deterministic holds here too
        tf.config.experimental.enable_op_determinism()
    i, n = cluster.index, len(cluster.workers)
    log(f"fusedfocal {command}: worker {i} of {n} ({cluster.workers[i]}) serves label shard {i} of the chief's "
        f"fused head (--label-shards {n}); it trains nothing, reads no data and writes no run folder. Stop it "
        f"(Ctrl-C, SIGTERM) once the chief's run has ended.")
    try:
        distributed.serve()
    except KeyboardInterrupt:
        return 130
    return 0


def connect_label_shard_workers(workers):
    """The chief of worker processes holding the label shards (``workers``: their addresses, the
    :class:`~fusedfocal.cli.spec.RuntimeConfig`'s ``label_shard_workers``; ``None``: nothing to
    do) connects to them, waiting :data:`CONNECT_TIMEOUT_S` for each to listen. Called by the
    command before the data is read: connecting drops TensorFlow's local lookup tables (the text
    pipeline's, made before it, would be gone). A worker that never answers:
    :class:`~fusedfocal.cli.errors.WorkerLost` naming it."""
    if not workers:
        return
    from fusedfocal import distributed

    try:
        distributed.connect(timeout=CONNECT_TIMEOUT_S)
    except distributed.WorkerLostError as e:  # nothing was written yet: start the workers, then this command again
        raise WorkerLost(f"{e} (or this command with the worker's TF_CONFIG), then run this command again") from e


@contextlib.contextmanager
def label_shard_workers(runtime, command="train"):
    """Around a run of the chief whose label shards live on worker processes
    (``runtime.label_shard_workers``, connected by :func:`connect_label_shard_workers`; else
    nothing): a worker lost meanwhile (TensorFlow's error, or a port that closed under a blocked
    step, :data:`WORKER_GRACE_S` later) becomes :class:`~fusedfocal.cli.errors.WorkerLost` naming
    it, with how to resume. A TensorFlow error while every worker answers and that names none of
    them is raised as it is (a bug, not a lost worker)."""
    if not runtime.label_shard_workers:
        yield
        return
    from fusedfocal import distributed

    workers = list(runtime.label_shard_workers)
    if distributed.connected() != workers:
        raise RuntimeError(f"not connected to the label-shard workers {workers}: the command connects to them "
                           "(connect_label_shard_workers) before it reads the data")
    watchdog = distributed.Watchdog(workers, grace=WORKER_GRACE_S, hint=RESUME, program=f"fusedfocal {command}")
    try:
        with distributed.guard(watchdog.start()):
            yield
    except distributed.WorkerLostError as e:
        if watchdog.lost is None and not str(e).startswith("worker ") and e.__cause__ is not None:
            raise e.__cause__ from None
        raise WorkerLost(str(e) if RESUME in str(e) else f"{e}. {RESUME}") from e
