"""Sigmoid focal loss against what users run today (issue 6).

Providers (alpha 0.25, gamma 2 throughout):

* ``fusedfocal``       -- ``fusedfocal.sigmoid_focal_loss`` (default path:
  the native op, under XLA its custom call, when the library is built),
  ``reduction="sum"`` (what a training step needs);
* ``fusedfocal_none``  -- the same with ``reduction="none"`` + ``tf.reduce_sum``;
* ``fusedfocal_tf``    -- ``implementation="xla"``: the pure-TF path (what
  XLA ran before the custom call, and the fallback without a library);
* ``native``           -- ``implementation="native"`` (skipped unless built;
  under XLA, the custom call; skipped there for a library without it);
* ``keras_class``      -- ``fusedfocal.SigmoidFocalLoss(reduction="sum")``,
  the Keras 3 drop-in (reduces inside the kernel);
* ``legacy_class``     -- ``fusedfocal.legacy.SigmoidFocalLoss`` (tf_keras, SUM);
* ``clipped``          -- sigmoid, clip at 1e-7, log (the common recipe);
* ``keras3``           -- ``keras.losses.BinaryFocalCrossentropy(from_logits=True,
  apply_class_balancing=True)``, reduction ``"sum"``;
* ``tf_keras``         -- the tf_keras class with the same settings;
* ``bce``              -- ``tf.nn.sigmoid_cross_entropy_with_logits`` + sum:
  the cost floor for any loss of this kind;
* ``empty``            -- a compiled function returning its input: the fixed
  cost of calling TF (``tf.function`` / XLA modes only).

Modes: ``eager``, ``function`` (``tf.function``), ``xla`` (``jit_compile``);
passes: ``fwd`` (loss only) and ``fwdbwd`` (loss and its gradient with
respect to the logits inside the same function).

The full matrix (``pytest benchmarks/bench_focal.py --benchmark``), sized to
run in about 10 minutes on a shared 2-core machine:

* float32, shapes [256,19], [4096,90], [65536,19], [8192,1000]: every
  provider x mode x pass;
* float32, [32768,1024] and [32768,4096] (134M elements, 512 MiB per
  tensor): ``fwdbwd`` under XLA and ``tf.function`` only (eager at this size
  is many seconds a call);
* float16 and bfloat16: [65536,19] and [8192,1000], ``fwdbwd``, XLA and
  ``tf.function``, providers fusedfocal, native, clipped, keras3, bce.

Rounds are capped by a time budget per row (``ROW_BUDGET_S``; at least 3).
The first call is timed on its own and reported as ``first_call_ms`` /
``compile_ms`` (first call minus the median), so compile time is excluded
from the statistics.

``extra_info`` of every row: provider, mode, pass, shape, dtype, elements,
``floor_ms`` and ``x_floor`` (bytes moved -- logits read + labels read +
gradient written for fwdbwd, logits + labels read for fwd -- over the copy
bandwidth measured once per session with a NumPy copy of a 256 MiB array),
``max_rel_err`` (gradient for fwdbwd, loss for fwd; vs the float64 reference
in ``tests/reference.py`` on up to 65536 elements) and, in full mode for the
two big shapes, float32, fwdbwd, tf.function and XLA, ``peak_mem_x`` (peak RSS increase of a fresh
subprocess, ``benchmarks/_peak_mem.py``, in units of one logits-sized tensor).

Smoke mode (plain ``pytest``): the smallest shape, float32, every provider x
mode x pass, one round; no memory subprocesses.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import reference as ref  # noqa: E402
from _testing import clipped_focal_recipe  # noqa: E402

ALPHA, GAMMA = 0.25, 2.0
ROW_BUDGET_S = float(os.environ.get("FUSEDFOCAL_BENCH_BUDGET_S", "0.8"))
DEVICE = os.environ.get("FUSEDFOCAL_BENCH_DEVICE", "CPU:0")
SMALL, SMALL2, MID1, MID, BIG = (256, 19), (4096, 90), (65536, 19), (8192, 1000), (32768, 4096)
LARGE = (32768, 1024)  # the issue-10 target shape
MEM_SHAPES = (MID, BIG)
ACC_ELEMENTS = 65536

PROVIDERS = ("fusedfocal", "fusedfocal_none", "fusedfocal_tf", "native", "keras_class",
             "legacy_class", "clipped", "keras3", "tf_keras", "bce", "empty")
MODES = ("eager", "function", "xla")
PASSES = ("fwd", "fwdbwd")
DTYPES = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}


# --------------------------------------------------------------------------
# providers: loss(x, y) -> scalar; ``scale`` maps their gradient to the
# element-wise-sum gradient (the Keras classes average over the last axis).


def _native_skip_reason():
    try:
        from fusedfocal.ops import native
    except ImportError as e:
        return f"fusedfocal.ops.native missing ({e})"
    import inspect

    import fusedfocal

    if "implementation" not in inspect.signature(fusedfocal.sigmoid_focal_loss).parameters:
        return "sigmoid_focal_loss has no implementation= kwarg yet"
    available = getattr(native, "available", None)
    try:
        ok = available() if callable(available) else native.load() is not None
    except Exception as e:  # noqa: BLE001 - any load failure means "not built"
        return f"native library not loadable: {e}"
    return None if ok else "native library not installed (pip install -e . builds it; fusedfocal info says why)"


def make_loss(provider: str, num_classes: int):
    """``(loss_fn, grad_scale, reference_kind)`` for a provider."""
    if provider in ("fusedfocal", "fusedfocal_none", "fusedfocal_tf", "native"):
        import fusedfocal

        kw = dict(gamma=GAMMA, alpha=ALPHA)
        if provider == "native":
            kw["implementation"] = "native"
        if provider == "fusedfocal_tf":
            kw["implementation"] = "xla"
        if provider == "fusedfocal_none":
            return (lambda x, y: tf.reduce_sum(fusedfocal.sigmoid_focal_loss(x, y, **kw))), 1.0, "focal"
        return (lambda x, y: fusedfocal.sigmoid_focal_loss(x, y, reduction="sum", **kw)), 1.0, "focal"
    if provider == "keras_class":
        import fusedfocal

        obj = fusedfocal.SigmoidFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction="sum")
        return (lambda x, y: obj(y, x)), 1.0, "focal"
    if provider == "legacy_class":
        import tf_keras

        from fusedfocal import legacy

        obj = legacy.SigmoidFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction=tf_keras.losses.Reduction.SUM)
        return (lambda x, y: obj(y, x)), 1.0, "focal"
    if provider == "clipped":
        def clipped(x, y):
            return tf.reduce_sum(clipped_focal_recipe(x, y, alpha=ALPHA, gamma=GAMMA))
        return clipped, 1.0, "focal"
    if provider == "keras3":
        import keras

        obj = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA, from_logits=True, reduction="sum")
        return (lambda x, y: obj(y, x)), float(num_classes), "focal"
    if provider == "tf_keras":
        import tf_keras

        obj = tf_keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA, from_logits=True,
            reduction=tf_keras.losses.Reduction.SUM)
        return (lambda x, y: obj(y, x)), float(num_classes), "focal"
    if provider == "bce":
        return (lambda x, y: tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x))), 1.0, "bce"
    if provider == "empty":
        return (lambda x, y: x), 1.0, None
    raise ValueError(provider)


def make_step(provider: str, mode: str, pass_: str, num_classes: int):
    loss_fn, scale, kind = make_loss(provider, num_classes)
    if provider == "empty" or pass_ == "fwd":
        fn = loss_fn
    else:
        def fn(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(x, y)
            return loss, tape.gradient(loss, x)
    if mode == "function":
        fn = tf.function(fn)
    elif mode == "xla":
        fn = tf.function(fn, jit_compile=True)
    return fn, scale, kind


def make_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 4.0, shape).astype(np.float32)
    y = (rng.random(shape) < 0.1).astype(np.float32)
    with tf.device(DEVICE):
        return tf.cast(tf.constant(x), dtype), tf.cast(tf.constant(y), dtype)


def skip_reason(provider, mode, pass_):
    if provider == "native":
        why = _native_skip_reason()
        if why:
            return why
        if mode == "xla":
            from fusedfocal.ops import native

            if not native.has_xla_kernel():
                return "the library was built without its XLA custom call (--xla off)"
    if provider == "empty" and (mode == "eager" or pass_ == "fwdbwd"):
        return "empty call: tf.function / XLA, one pass"
    if provider == "fusedfocal_none" and pass_ == "fwd":
        return "reduction='none' is recorded for fwdbwd only"
    return None


# --------------------------------------------------------------------------
# the matrix


def _cases(full: bool):
    out = []
    if not full:
        for p in PROVIDERS:
            for m in MODES:
                for ps in PASSES:
                    out.append((p, m, ps, SMALL, "float32"))
        return out
    for shape in (SMALL, SMALL2, MID1, MID):
        for p in PROVIDERS:
            for m in MODES:
                for ps in PASSES:
                    out.append((p, m, ps, shape, "float32"))
    for p in ("fusedfocal", "fusedfocal_none", "fusedfocal_tf", "keras_class", "legacy_class",
              "clipped", "keras3", "tf_keras", "bce"):
        for m in ("function", "xla"):
            for shape in (LARGE, BIG):
                out.append((p, m, "fwdbwd", shape, "float32"))
    for dt in ("float16", "bfloat16"):
        for shape in (MID1, MID):
            for p in ("fusedfocal", "fusedfocal_tf", "keras_class", "clipped", "keras3", "bce"):
                for m in ("function", "xla"):
                    out.append((p, m, "fwdbwd", shape, dt))
    return out


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        full = bool(metafunc.config.getoption("--benchmark"))
        cases = _cases(full)
        ids = [f"{p}-{m}-{ps}-{'x'.join(map(str, s))}-{d}" for p, m, ps, s, d in cases]
        metafunc.parametrize("case", cases, ids=ids)
    if "interleaved_shape" in metafunc.fixturenames:  # smoke run: the smallest shape only
        shapes = INTERLEAVED_SHAPES if metafunc.config.getoption("--benchmark") else (SMALL,)
        metafunc.parametrize("interleaved_shape", shapes, ids=["x".join(map(str, s)) for s in shapes])


_REF_CACHE: dict = {}


def _reference(kind, x_np, y_np, key):
    if (kind, key) not in _REF_CACHE:
        x64, y64 = x_np.astype(np.float64), y_np.astype(np.float64)
        if kind == "focal":
            kw = dict(gamma=GAMMA, alpha=ALPHA)
            val = ref.sigmoid_focal(x64, y64, **kw)
            grad = ref.sigmoid_focal_grad(x64, y64, **kw)
        else:
            val = ref.bce(x64, y64)
            grad = ref.complex_step_grad(lambda z: ref.bce(z, y64), x64)
        _REF_CACHE[(kind, key)] = (val, grad)
    return _REF_CACHE[(kind, key)]


def _max_rel_err(actual, want):
    actual = np.asarray(actual, np.float64)
    nz = np.abs(want) > 1e-30
    if not nz.any():
        return 0.0
    return float(np.max(np.abs(actual[nz] - want[nz]) / np.abs(want[nz])))


def accuracy(provider, pass_, shape, dtype, scale, kind):
    """Max relative error vs the float64 reference on <= ACC_ELEMENTS elements.

    fwdbwd: the element-wise gradient (times ``scale``); fwd: the summed loss.
    Both run eagerly-compiled as ``tf.function`` on a row slice of the inputs.
    """
    if kind is None:
        return None
    rows = max(1, min(shape[0], ACC_ELEMENTS // shape[1]))
    x, y = make_inputs((rows, shape[1]), DTYPES[dtype], seed=1)
    fn, _, _ = make_step(provider, "function", "fwdbwd", shape[1])
    loss, grad = fn(x, y)
    x_np = tf.cast(x, tf.float32).numpy()
    y_np = tf.cast(y, tf.float32).numpy()
    val, g = _reference(kind, x_np, y_np, (rows, shape[1], dtype))
    if pass_ == "fwd":
        total = float(np.sum(val)) / scale
        return abs(float(tf.cast(loss, tf.float64)) - total) / abs(total)
    return _max_rel_err(tf.cast(grad, tf.float64).numpy() * scale, g)


def bytes_moved(pass_, shape, dtype):
    n = int(np.prod(shape)) * DTYPES[dtype].size
    return 3 * n if pass_ == "fwdbwd" else 2 * n


def test_focal(case, benchmark, run_benchmark, full_benchmark, copy_bandwidth, peak_memory):
    provider, mode, pass_, shape, dtype = case
    why = skip_reason(provider, mode, pass_)
    if why:
        pytest.skip(why)
    x, y = make_inputs(shape, DTYPES[dtype])
    fn, scale, kind = make_step(provider, mode, pass_, shape[1])

    def call(a, b):
        with tf.device(DEVICE):
            out = fn(a, b)
        # scalars: .numpy() waits for the step; tensors are ready on return
        tf.nest.map_structure(lambda t: t.numpy() if t.shape.rank == 0 else t, out)
        return out

    t0 = time.perf_counter()
    call(x, y)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    call(x, y)
    warm = time.perf_counter() - t0
    rounds = int(min(50, max(3, ROW_BUDGET_S // max(warm, 1e-6))))
    extra = dict(
        provider=provider, mode=mode, pass_=pass_, shape=list(shape), dtype=dtype,
        elements=int(np.prod(shape)), first_call_ms=first * 1e3, device=DEVICE,
        tf_version=tf.__version__,
    )
    if full_benchmark:
        bw = copy_bandwidth()
        extra["copy_gbps"] = bw / 1e9
        extra["floor_ms"] = bytes_moved(pass_, shape, dtype) / bw * 1e3
        extra["max_rel_err"] = accuracy(provider, pass_, shape, dtype, scale, kind)
        if pass_ == "fwdbwd" and shape in MEM_SHAPES and dtype == "float32" and mode != "eager":
            extra["peak_mem_x"] = peak_memory(provider, mode, pass_, shape, dtype)
    run_benchmark(call, x, y, rounds=rounds, warmup_rounds=1, **extra)
    med = benchmark.stats.stats.median
    benchmark.extra_info["median_ms"] = med * 1e3
    benchmark.extra_info["compile_ms"] = max(0.0, first - med) * 1e3
    if "floor_ms" in extra:
        benchmark.extra_info["x_floor"] = med * 1e3 / extra["floor_ms"]


# --------------------------------------------------------------------------
# Interleaved rounds: ratios that survive a noisy, shared machine.
#
# test_focal measures rows one after another, so a load spike on the shared
# machine lands on whichever row runs then. The interleaved test builds every
# provider x mode of one shape, then times them round-robin (one call each a
# round, the order rotated every round) and reports each one's median over
# the same rounds: that is what the README's ratios and issue 10's targets
# use. One pytest-benchmark row per shape (its stats: the whole round), the
# per-provider medians, p20 and p80 in extra_info["interleaved"].

INTERLEAVED = [(p, m) for p in ("fusedfocal", "keras_class", "legacy_class", "native", "fusedfocal_tf",
                                "clipped", "keras3", "tf_keras", "bce")
               for m in ("function", "xla")]
INTERLEAVED_SHAPES = (MID1, MID, LARGE)
INTERLEAVED_ROUNDS = int(os.environ.get("FUSEDFOCAL_BENCH_ROUNDS", "15"))


def test_focal_interleaved(interleaved_shape, benchmark, run_benchmark, interleaved):
    shape = interleaved_shape
    x, y = make_inputs(shape, tf.float32)
    steps = {}
    for provider, mode in INTERLEAVED:
        if skip_reason(provider, mode, "fwdbwd"):
            continue
        if provider == "fusedfocal_tf" and mode == "function" and shape[0] * shape[1] > 2**22:
            continue  # 20x slower than the rest: it would dominate every round
        fn, _, _ = make_step(provider, mode, "fwdbwd", shape[1])
        for _ in range(2):  # trace + compile, then one warm call
            tf.nest.map_structure(lambda t: t.numpy(), fn(x, y))
        # a tf.function returns once every output is computed; .numpy() waits for it
        steps[f"{provider}/{mode}"] = lambda fn=fn: fn(x, y)[0].numpy()
    rounds = interleaved(steps)
    run_benchmark(rounds.round, rounds=INTERLEAVED_ROUNDS, warmup_rounds=1, shape=list(shape),
                  dtype="float32", pass_="fwdbwd", interleaved_providers=rounds.order, device=DEVICE,
                  tf_version=tf.__version__)
    stats = rounds.stats()
    benchmark.extra_info["interleaved"] = stats
    assert all(s["median_ms"] > 0 for s in stats.values())
