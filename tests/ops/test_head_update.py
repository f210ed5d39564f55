"""The fused head update (fusedfocal.ops.linear_focal_loss_update) against "the full gradient,
then the Keras optimizer": SGD, SGD with momentum (and Nesterov), Adam, weight decay and
clipvalue, in eager, graph and XLA, on small heads (C not a multiple of the chunk, empty label
rows, duplicate ids); stochastic rounding's unbiasedness; no kernel-sized float32 tensor in the
optimized HLO of a bfloat16 fused step; bad arguments.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from fusedfocal.ops import head_update as hu
from fusedfocal.ops import linear_focal_loss

B, H, C, CHUNK = 5, 8, 37, 16
IDS = [[0, 3, 3], [], [36, 1], [5], []]  # empty rows, a duplicate id, the last id
RULES = {
    "sgd": (dict(optimizer="sgd"), lambda: keras.optimizers.SGD(0.5)),
    "momentum": (dict(optimizer="sgd", momentum=0.9), lambda: keras.optimizers.SGD(0.5, momentum=0.9)),
    "nesterov": (dict(optimizer="sgd", momentum=0.9, nesterov=True),
                 lambda: keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True)),
    "adam": (dict(optimizer="adam"), lambda: keras.optimizers.Adam(0.5)),
    "adam_wd_clip": (dict(optimizer="adam", weight_decay=0.1, clipvalue=0.002),
                     lambda: keras.optimizers.Adam(0.5, weight_decay=0.1, clipvalue=0.002)),
}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (B, H)).astype(np.float32)
    w = rng.normal(0, 0.5, (C, H)).astype(np.float32)
    b = rng.normal(0, 0.5, C).astype(np.float32)
    return x, w, b


def _labels():
    return tf.ragged.constant(IDS, dtype=tf.int64, ragged_rank=1, row_splits_dtype=tf.int64)


def _state(w, b, update, dtype=tf.float32, moment_dtype=tf.float32):
    slots = {}
    for name in update.slot_names:
        slots[name] = (tf.Variable(tf.zeros(w.shape, moment_dtype)), tf.Variable(tf.zeros(b.shape, tf.float32)))
    return hu.HeadState(kernel=tf.Variable(tf.cast(w, dtype)), bias=tf.Variable(tf.cast(b, dtype)), slots=slots,
                        iterations=tf.Variable(0, dtype=tf.int64))


def _wrap(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"))


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_fused_update_equals_gradient_then_keras_optimizer(rule, mode):
    kwargs, make_opt = RULES[rule]
    update = hu.HeadUpdate(**kwargs)
    x, w, b = _data()
    labels = _labels()
    state = _state(w, b, update)
    kv, bv = tf.Variable(w), tf.Variable(b)
    opt = make_opt()
    xs = tf.constant(x)
    gamma, alpha = 2.0, 0.25

    def fused():
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = hu.linear_focal_loss_update(xs, state, labels, update=update, learning_rate=0.5, gamma=gamma,
                                               alpha=alpha, chunk_size=CHUNK)
        return loss, tape.gradient(loss, xs)

    def reference():
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = linear_focal_loss(xs, kv, bv, labels, gamma=gamma, alpha=alpha, kernel_layout="ch",
                                     chunk_size=CHUNK)
        gx, gk, gb = tape.gradient(loss, [xs, kv, bv])
        opt.apply_gradients([(gk, kv), (gb, bv)])
        return loss, gx

    fused_fn, ref_fn = _wrap(fused, mode), _wrap(reference, mode)
    for step in range(3):
        loss, gx = fused_fn()
        loss_ref, gx_ref = ref_fn()
        np.testing.assert_allclose(loss.numpy(), loss_ref.numpy(), rtol=1e-6, err_msg=f"loss, step {step}")
        np.testing.assert_allclose(gx.numpy(), gx_ref.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"dx, step {step}")
        np.testing.assert_allclose(state.kernel.numpy(), kv.numpy(), rtol=1e-6, atol=1e-7,
                                   err_msg=f"kernel after step {step + 1}")
        np.testing.assert_allclose(state.bias.numpy(), bv.numpy(), rtol=1e-6, atol=1e-7,
                                   err_msg=f"bias after step {step + 1}")
    assert int(state.iterations.numpy()) == 3
    assert not np.allclose(state.kernel.numpy(), w)  # it did move


@pytest.mark.parametrize("labels_as", ["padded", "dense"])
def test_label_formats_and_no_bias(labels_as):
    """Padded ids and dense multi-hot give the ragged result; a head without bias works."""
    update = hu.HeadUpdate(optimizer="sgd", momentum=0.5)
    x, w, b = _data(1)
    y = np.zeros((B, C), np.float32)
    for r, ids in enumerate(IDS):
        y[r, ids] = 1.0
    padded = tf.constant([ids + [-1] * (3 - len(ids)) for ids in IDS], tf.int32)
    labels = padded if labels_as == "padded" else tf.constant(y)
    results = []
    for lab in (_labels(), labels):
        state = _state(w, b, update)
        state = hu.HeadState(state.kernel, None, {"momentum": (state.slots["momentum"][0], None)},
                             state.iterations)
        for _ in range(2):
            hu.linear_focal_loss_update(tf.constant(x), state, lab, update=update, learning_rate=0.3,
                                        chunk_size=CHUNK)
        results.append(state.kernel.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_stochastic_rounding_is_unbiased_and_nearest_stalls():
    """A bfloat16 weight of 1.0 (spacing 2**-7) moved 200 times by -1e-4 (1/78 of the spacing):
    float32 reaches 0.98; stochastic rounding's mean over 4096 copies matches it within 3 standard
    errors of the mean; round-to-nearest never moves (every step rounds back to 1.0)."""
    n, steps, delta = 4096, 200, -1e-4
    exact = 1.0 + steps * delta
    sr = tf.ones([n], tf.bfloat16)
    rn = tf.ones([n], tf.bfloat16)
    for s in range(steps):
        sr = hu.stochastic_round(tf.cast(sr, tf.float32) + delta, tf.bfloat16, tf.constant([7, s], tf.int64))
        rn = tf.cast(tf.cast(rn, tf.float32) + delta, tf.bfloat16)
    values = tf.cast(sr, tf.float64).numpy()
    # each copy is a sum of 200 independent roundings, each with variance <= spacing**2 / 4
    se = np.sqrt(steps * (2.0 ** -8) ** 2 / 4 / n)
    assert abs(values.mean() - exact) < 3 * se, (values.mean(), exact, se)
    assert np.all(tf.cast(rn, tf.float32).numpy() == 1.0)
    # the same seed reproduces; another seed does not
    a = hu.stochastic_round(tf.fill([1000], 1.001), tf.bfloat16, tf.constant([1, 2], tf.int64))
    b = hu.stochastic_round(tf.fill([1000], 1.001), tf.bfloat16, tf.constant([1, 2], tf.int64))
    c = hu.stochastic_round(tf.fill([1000], 1.001), tf.bfloat16, tf.constant([1, 3], tf.int64))
    assert np.array_equal(a.numpy(), b.numpy()) and not np.array_equal(a.numpy(), c.numpy())
    special = tf.constant([np.inf, -np.inf, np.nan, 0.0], tf.float32)
    out = tf.cast(hu.stochastic_round(special, tf.bfloat16, tf.constant([0, 0], tf.int64)), tf.float32).numpy()
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2]) and out[3] == 0.0


def test_bfloat16_head_trains_where_nearest_stalls():
    """A bfloat16 head with a small SGD rate: stochastic rounding follows the float32 run's
    weights (mean absolute gap below half of bfloat16's spacing at the weights' scale);
    round-to-nearest loses the steps below half of bfloat16's spacing and moves less."""
    x, w, b = _data(2)
    x = x * 0.1
    labels = _labels()
    runs = {}
    for name, dtype, rounding in (("f32", tf.float32, "stochastic"), ("sr", tf.bfloat16, "stochastic"),
                                  ("rn", tf.bfloat16, "nearest")):
        update = hu.HeadUpdate(optimizer="sgd", rounding=rounding, seed=3)
        w0 = tf.cast(tf.cast(w, tf.bfloat16), tf.float32).numpy()  # all runs start from the same values
        state = _state(w0, b, update, dtype=dtype)
        fn = tf.function(lambda: hu.linear_focal_loss_update(tf.constant(x), state, labels, update=update,
                                                              learning_rate=0.01, reduction="sum",
                                                              chunk_size=CHUNK), jit_compile=True)
        for _ in range(60):
            fn()
        runs[name] = (w0, tf.cast(state.kernel, tf.float32).numpy())
    w0, f32 = runs["f32"]
    moved = np.abs(f32 - w0)
    assert moved.mean() > 0
    gap_sr = np.abs(runs["sr"][1] - f32).mean()
    gap_rn = np.abs(runs["rn"][1] - f32).mean()
    assert gap_sr < 0.5 * gap_rn, (gap_sr, gap_rn)
    # nearest loses the steps below half of bfloat16's spacing: its weights moved less than float32's
    print("moved f32 %.3g sr %.3g rn %.3g; gap sr %.3g rn %.3g" % (
        moved.mean(), np.abs(runs["sr"][1] - w0).mean(), np.abs(runs["rn"][1] - w0).mean(), gap_sr, gap_rn))
    assert np.abs(runs["rn"][1] - w0).mean() < 0.7 * moved.mean()


def _bits(values):
    return tf.Variable(tf.bitcast(tf.cast(values, tf.bfloat16), tf.uint16))


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adam"])
def test_fused_xla_step_has_no_kernel_sized_buffer_but_the_kernel(rule):
    """The optimized HLO of a bfloat16 fused step (kernel and slots as bfloat16 bits in uint16, as
    FocalHead stores them): no f32 tensor with C*H elements anywhere (the gradient never exists),
    and no instruction outside a fusion that makes a kernel-sized buffer by copy, convert or
    bitcast-convert (the traps: a dynamic-update-slice that XLA copies every chunk, a bfloat16 one
    that XLA's CPU float normalisation turns into whole-buffer converts, a whole-variable bitcast
    that breaks the aliasing with the variable); the variables alias the outputs."""
    c, h, b = 4096, 32, 16
    update = hu.HeadUpdate(**RULES[rule][0], moment_dtype="bfloat16")
    rng = np.random.default_rng(0)
    slots = {n: (_bits(tf.zeros([c, h])), tf.Variable(tf.zeros([c]))) for n in update.slot_names}
    state = hu.HeadState(kernel=_bits(rng.normal(0, 0.1, (c, h))), bias=tf.Variable(tf.zeros([c])), slots=slots,
                         iterations=tf.Variable(0, dtype=tf.int64))
    x = tf.constant(rng.normal(0, 1, (b, h)), tf.float32)
    labels = tf.constant(rng.integers(-1, c, (b, 4)), tf.int32)

    @tf.function(jit_compile=True)
    def step(x, labels):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = hu.linear_focal_loss_update(x, state, labels, update=update, learning_rate=0.1, chunk_size=512)
        return loss, tape.gradient(loss, x)

    hlo = step.experimental_get_compiler_ir(x, labels)(stage="optimized_hlo")
    big = [m.group(0) for m in re.finditer(r"f32\[(\d+),(\d+)\]", hlo) if int(m.group(1)) * int(m.group(2)) >= c * h]
    assert not big, f"kernel-sized float32 tensors in the fused step: {sorted(set(big))}"
    unfused = "\n".join(block for block in hlo.split("\n\n") if not block.lstrip().startswith("%fused"))
    made = re.findall(rf"= \w+\[{c},{h}\]\S* (?:copy|convert|bitcast-convert)\(", unfused)
    assert not made, f"kernel-sized buffers made in the fused step: {made}"
    assert f"u16[{c},{h}]" in hlo
    assert "input_output_alias" in hlo
    before = state.kernel.numpy().copy()
    step(x, labels)
    assert not np.array_equal(before, state.kernel.numpy())
    assert int(state.iterations.numpy()) == 1


def test_uint16_bits_storage_equals_bfloat16_storage():
    """The same fused Adam steps on a bfloat16 variable and on its bits in a uint16 variable
    store the same bit patterns (graph and XLA)."""
    x, w, b = _data(4)
    update = hu.HeadUpdate(optimizer="adam", moment_dtype="bfloat16", seed=5)
    out = {}
    for storage in ("bfloat16", "uint16"):
        for mode in ("graph", "xla"):
            if storage == "bfloat16":
                k = tf.Variable(tf.cast(w, tf.bfloat16))
                slots = {n: (tf.Variable(tf.zeros(w.shape, tf.bfloat16)), tf.Variable(tf.zeros(b.shape)))
                         for n in update.slot_names}
            else:
                k = _bits(w)
                slots = {n: (_bits(tf.zeros(w.shape)), tf.Variable(tf.zeros(b.shape))) for n in update.slot_names}
            state = hu.HeadState(k, tf.Variable(b), slots, tf.Variable(0, dtype=tf.int64))
            fn = _wrap(lambda: hu.linear_focal_loss_update(tf.constant(x), state, _labels(), update=update,
                                                            learning_rate=0.05, chunk_size=CHUNK), mode)
            for _ in range(3):
                fn()
            kernel = state.kernel if storage == "bfloat16" else tf.bitcast(state.kernel, tf.bfloat16)
            out[storage, mode] = tf.cast(kernel, tf.float32).numpy()
    ref = out["bfloat16", "graph"]
    for key, value in out.items():
        np.testing.assert_array_equal(value, ref, err_msg=str(key))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="`optimizer`.*Received: optimizer='lamb'"):
        hu.HeadUpdate(optimizer="lamb")
    with pytest.raises(ValueError, match="`momentum`"):
        hu.HeadUpdate(momentum=1.0)
    with pytest.raises(ValueError, match="`moment_dtype`"):
        hu.HeadUpdate(moment_dtype="float16")
    with pytest.raises(ValueError, match="`rounding`"):
        hu.HeadUpdate(rounding="up")
    with pytest.raises(ValueError, match="`clipvalue`"):
        hu.HeadUpdate(clipvalue=0.0)
    x, w, b = _data()
    update = hu.HeadUpdate(optimizer="adam")
    state = _state(w, b, hu.HeadUpdate())  # no slots for Adam
    with pytest.raises(ValueError, match="`state`.*slots"):
        hu.linear_focal_loss_update(tf.constant(x), state, _labels(), update=update, learning_rate=0.1)
    with pytest.raises(ValueError, match="`features`"):
        hu.linear_focal_loss_update(tf.zeros([B, H + 1]), _state(w, b, update), _labels(), update=update,
                                    learning_rate=0.1)
    with pytest.raises(TypeError, match="`update`"):
        hu.linear_focal_loss_update(tf.constant(x), state, _labels(), update="sgd", learning_rate=0.1)
