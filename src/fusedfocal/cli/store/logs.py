"""A run's ``logs/``: TensorBoard scalars (with or without the ``tensorboard`` package) and the
profiler trace of ``--profile STEPS``.
"""

from __future__ import annotations

from pathlib import Path

from fusedfocal.cli.errors import CLIError

__all__ = ["profile_batches", "check_profiler", "tensorboard_callback", "ScalarLogger"]

def profile_batches(profile, steps_per_epoch):
    """The batches ``--profile STEPS`` traces: from the second (the first traces the step)."""
    if not profile:
        return 0
    start = 2 if steps_per_epoch is None or steps_per_epoch > profile + 1 else 1
    return (start, start + profile - 1)


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
