"""What the non-finite loss check of ``fusedfocal train`` costs per training step (issue 21).

Three ``model.fit`` runs of the same small text CNN, each ``--steps`` steps, median step time over
``--repeats`` epochs (the first epoch, tracing and compilation, left out):

* ``no batch hook``: no callback with ``on_train_batch_end``, so Keras may dispatch batch-end
  callbacks asynchronously and never waits for the step's loss;
* ``batch hook``: the run's checkpoint callback as it was before the check (its fault point reads
  nothing, but a batch hook makes Keras bring ``logs`` to the host after every step);
* ``batch hook + check``: that plus :func:`fusedfocal.cli.stages.stops.NonFiniteCheck` (the per-batch loss
  check and the per-epoch weight check).

It also times the check alone (``on_train_batch_end`` with a float loss) and the per-epoch weight
check. Usage: ``python benchmarks/nonfinite_check_cost.py [--steps 200] [--repeats 5] [--batch 32]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--jit", action="store_true", help="jit_compile=True (XLA)")
    a = p.parse_args()

    import keras
    import tensorflow as tf

    from fusedfocal.cli.stages import stops

    rng = np.random.default_rng(0)
    n = a.steps * a.batch
    x = rng.integers(1, 5000, size=(n, 64)).astype("int32")
    y = (rng.random((n, 20)) < 0.1).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(a.batch, drop_remainder=True).cache().repeat()

    def model():
        keras.utils.set_random_seed(0)
        inp = keras.Input((64,), dtype="int32")
        h = keras.layers.Embedding(5000, 64)(inp)
        h = keras.layers.Conv1D(128, 3, activation="relu")(h)
        h = keras.layers.GlobalMaxPooling1D()(h)
        m = keras.Model(inp, keras.layers.Dense(20)(h))
        m.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=a.jit)
        return m

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    class BatchHook(keras.callbacks.Callback):  # what the run's checkpoint callback does per batch
        def on_train_batch_end(self, batch, logs=None):
            pass

    def run(extra):
        m, timer = model(), EpochTimer()
        m.fit(ds, epochs=a.repeats + 1, steps_per_epoch=a.steps, verbose=0, callbacks=[timer, *extra])
        return statistics.median(timer.times[1:]) / a.steps * 1e3, m  # ms per step

    results = {}
    for name, extra in [("no batch hook", lambda: []), ("batch hook", lambda: [BatchHook()]),
                        ("batch hook + check", lambda: [stops.NonFiniteCheck({}, a.steps, []), BatchHook()])]:
        results[name], m = run(extra())
    check = stops.NonFiniteCheck({}, a.steps, [])
    check.set_model(m)
    check.on_epoch_begin(0)
    per_call = min(timeit.repeat(lambda: check.on_train_batch_end(0, {"loss": 0.1234}), number=10000, repeat=5)) / 1e4
    per_epoch = min(timeit.repeat(lambda: stops.weights_finite(m), number=20, repeat=3)) / 20
    nparams = sum(int(np.prod(v.shape)) for v in m.trainable_variables)

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices "
          f"{[d.device_type for d in tf.config.list_physical_devices()]}, batch {a.batch}, {a.steps} steps, "
          f"median of {a.repeats} epochs, jit_compile={a.jit}")
    for name, ms in results.items():
        print(f"  {name:<20} {ms:8.3f} ms/step")
    base = results["batch hook"]
    print(f"  check vs batch hook: {results['batch hook + check'] - base:+.3f} ms/step "
          f"({100 * (results['batch hook + check'] / base - 1):+.1f}%, within run-to-run noise if small)")
    print(f"  batch hook vs none:  {base - results['no batch hook']:+.3f} ms/step (host sync of the logs)")
    print(f"  the loss check alone: {per_call * 1e6:.2f} us per call (per batch)")
    print(f"  the weight check:     {per_epoch * 1e3:.3f} ms per epoch ({nparams} parameters)")


if __name__ == "__main__":
    main()
