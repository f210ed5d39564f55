"""The runtime stage: the ``tf.distribute`` strategy (``--strategy``, ``TF_CONFIG``), seeds, op determinism,
mixed precision and XLA (``--jit-compile``).
"""

from __future__ import annotations

import json
import os

from fusedfocal.cli.errors import CLIError

__all__ = ["make_strategy", "check_tf_config", "is_chief", "setup_runtime", "use_jit"]

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
    return (runtime.strategy == "default" and model not in ("transformer", "ngram") and not runtime.deterministic
            and not is_op_determinism_enabled() and not label_shards)
