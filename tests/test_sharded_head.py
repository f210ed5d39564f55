"""The label-sharded FocalHead (issue 27): parity with the unsharded op and head on S = 1, 2, 4
logical CPU devices, fit, the fused update and bfloat16 options, save/load with re-split, errors.

The module asks for 4 logical CPU devices before TensorFlow starts; in a process where TensorFlow
started already (the whole suite) the shards share CPU:0, and the placement check is skipped (the
arithmetic under test is the same; the cross-process test places shards in other processes).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

try:
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 4)
except RuntimeError:  # TensorFlow is initialised already
    pass

import fusedfocal.keras as k3  # noqa: E402
import fusedfocal.legacy as tk  # noqa: E402
from fusedfocal import _head_shards, ops  # noqa: E402

FLAVOURS = {"keras3": (keras, k3), "tf_keras": (tf_keras, tk)}
LOGICAL = len(tf.config.list_logical_devices("CPU")) >= 4
C, H, B = 37, 8, 12  # C is not a multiple of 2 or 4


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request):
    return FLAVOURS[request.param]


def _close(a, b, rtol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1e-30, float(np.abs(b).max())))


def _problem(kind, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(B, H)).astype("float32"))
    kernel = rng.normal(size=(C, H)).astype("float32") * 0.5
    bias = rng.normal(size=(C,)).astype("float32")
    if kind == "one_shard":  # every label in the first shard of 4 (its labels are [0, 10))
        ids = [sorted(rng.choice(10, size=int(rng.integers(0, 4)), replace=False).tolist()) for _ in range(B)]
    else:
        ids = [sorted(rng.choice(C, size=int(rng.integers(0, 5)), replace=False).tolist()) for _ in range(B)]
    ids[0], ids[3] = [], []  # empty rows
    if kind == "padded":
        y = tf.constant([r + [-1] * (5 - len(r)) for r in ids], tf.int32)
    elif kind == "dense":
        y = tf.constant(np.stack([np.isin(np.arange(C), r) for r in ids]).astype("float32"))
    else:
        y = tf.ragged.constant(ids, dtype=tf.int64, inner_shape=())
    vectors = dict(alpha=rng.uniform(0.1, 0.9, C), class_weights=rng.uniform(0.5, 2.0, C),
                   logit_offsets=rng.normal(size=C) * 0.1)
    return x, kernel, bias, y, vectors


def _head(mod, label_shards, kernel, bias, **kw):
    head = mod.FocalHead(C, label_shards=label_shards, top_k=6, chunk_size=4, **kw)
    head.build((None, H))
    head.set_kernel(kernel)
    for sh in head.shards:
        sh.bias.assign(bias[sh.start:sh.start + sh.size])
    return head


def test_shard_bounds_are_contiguous_and_as_equal_as_possible():
    assert _head_shards.shard_bounds(10, 4) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    assert _head_shards.shard_bounds(7, 1) == [(0, 7)]
    assert _head_shards.shard_bounds(4, 4) == [(0, 1), (1, 1), (2, 1), (3, 1)]


@pytest.mark.parametrize("kind", ["ragged", "padded", "dense", "one_shard"])
@pytest.mark.parametrize("shards", [1, 2, 4])
def test_loss_gradients_and_top_k_equal_the_unsharded_op(shards, kind):
    x, kernel, bias, y, vectors = _problem(kind)
    head = _head(k3, shards, kernel, bias, **vectors)
    if LOGICAL:
        assert [sh.kernel.value.device[-5:] for sh in head.shards] == [f"CPU:{s}" for s in range(shards)]
    variables = [v for sh in head.shards for v in (sh.kernel, sh.bias)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = head.loss(x, y)
    grads = tape.gradient(loss, [x, *variables])
    kt, bt = tf.constant(kernel), tf.constant(bias)
    with tf.GradientTape() as tape:
        tape.watch([x, kt, bt])
        want = ops.linear_focal_loss(x, kt, bt, y, kernel_layout="ch", chunk_size=4, **vectors)
    gx, gk, gb = tape.gradient(want, [x, kt, bt])
    _close(loss, want, 1e-6)
    _close(grads[0], gx, 1e-6)
    for s, sh in enumerate(head.shards):
        _close(grads[1 + 2 * s], gk[sh.start:sh.start + sh.size], 1e-6)
        _close(grads[2 + 2 * s], gb[sh.start:sh.start + sh.size], 1e-6)
    out = head(x)
    scores, ids = ops.linear_top_k(x, kt, bt, 6, kernel_layout="ch", chunk_size=4)
    np.testing.assert_array_equal(out["ids"], ids)
    _close(out["scores"], scores, 1e-6)  # (the shards' matmuls may round a logit's last bit otherwise)


@pytest.mark.parametrize("shards", [2, 4])
def test_top_k_ties_go_to_the_lower_id_across_shards(shards):
    x, kernel, bias, _, _ = _problem("ragged", seed=1)
    kernel[36], kernel[20], kernel[2] = kernel[1], kernel[1], kernel[1]  # 1, 2, 20, 36 tie (other shards)
    bias[[2, 20, 36]] = bias[1]
    out = _head(k3, shards, kernel, bias)(x)
    _, ids = ops.linear_top_k(x, tf.constant(kernel), tf.constant(bias), 6, kernel_layout="ch")
    np.testing.assert_array_equal(out["ids"], ids)
    row = out["ids"].numpy()[0].tolist()
    ties = [i for i in row if i in (1, 2, 20, 36)]
    assert ties == sorted(ties)


def _fit_pair(lib, mod, shards, head_optimizer=None, encoder_devices=None, batch=B // 2, **head_kw):
    x, kernel, bias, y, vectors = _problem("ragged", seed=2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    models, start = [], None
    for s in (None, shards):
        lib.utils.set_random_seed(0)
        encoder = lib.Sequential([lib.Input((H,)), lib.layers.Dense(H, activation="tanh")])
        head = mod.FocalHead(C, label_shards=s, top_k=3, chunk_size=8, alpha=vectors["alpha"], **head_kw)
        model = mod.FocalHeadModel(encoder, head, head_optimizer=head_optimizer,
                                   encoder_devices=None if s is None else encoder_devices)
        model.compile(optimizer=lib.optimizers.SGD(0.5))
        model.predict(x[:2], verbose=0)
        head.set_kernel(kernel)
        start = start or model.encoder.get_weights()
        model.encoder.set_weights(start)
        model.fit(ds, epochs=1, verbose=0)  # B / batch steps
        models.append(model)
    return models, x


@pytest.mark.parametrize("name,shards", [("keras3", 4), ("tf_keras", 2)])
def test_fit_two_steps_gives_the_unsharded_weights(name, shards):
    lib, mod = FLAVOURS[name]
    (plain, sharded), x = _fit_pair(lib, mod, shards)
    if LOGICAL:  # built inside predict (Keras 3 defers the variables' creation there): still placed
        devices = [(v.value if hasattr(v, "path") else v).device for v in (sh.kernel for sh in sharded.head.shards)]
        assert [d[-5:] for d in devices] == [f"CPU:{s}" for s in range(shards)], devices
    k0, b0 = plain.head.float_weights()
    k1, b1 = sharded.head.float_weights()
    assert np.abs(k0.numpy() - np.asarray(plain.head.kernel)).max() == 0  # (read back the same way)
    _close(k1, k0, 1e-5)
    _close(b1, b0, 1e-5)
    for a, b in zip(sharded.encoder.get_weights(), plain.encoder.get_weights()):
        _close(a, b, 1e-5)
    np.testing.assert_array_equal(sharded.predict(x, verbose=0)["ids"], plain.predict(x, verbose=0)["ids"])


@pytest.mark.parametrize("name,opt,weight_dtype,rtol", [
    ("keras3", {"optimizer": "adam", "learning_rate": 0.05}, "float32", 1e-5),
    ("tf_keras", {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.5, "moment_dtype": "bfloat16",
                  "rounding": "nearest"}, "bfloat16", 1e-2),
])
def test_fused_update_and_bfloat16_sharded(name, opt, weight_dtype, rtol):
    lib, mod = FLAVOURS[name]
    (plain, sharded), _ = _fit_pair(lib, mod, 2, head_optimizer=opt, weight_dtype=weight_dtype)
    assert int(sharded.head.head_iterations.numpy()) == 2 == int(plain.head.head_iterations.numpy())
    assert all(int(sh.state.iterations.numpy()) == 2 for sh in sharded.head.shards)
    k0, b0 = plain.head.float_weights()
    k1, b1 = sharded.head.float_weights()
    k0, k1 = np.asarray(k0, np.float32), np.asarray(k1, np.float32)
    if weight_dtype == "float32":
        _close(k1, k0, rtol)
    else:  # round-to-nearest: equal but where a float32 rounding difference crosses a bfloat16 midpoint
        diff = np.abs(k1 - k0)
        assert diff.max() <= rtol * np.abs(k0).max() and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))
    _close(b1, b0, 1e-5)
    slot = "m" if opt["optimizer"] == "adam" else "momentum"
    got = np.concatenate([np.asarray(sh.state.slots[slot][1]) for sh in sharded.head.shards])
    _close(got, np.asarray(plain.head._head_state.slots[slot][1]), 1e-5)


def test_stochastic_rounding_seed_is_salted_by_shard():
    x, kernel, bias, y, _ = _problem("ragged", seed=3)
    kernel[:] = 0.0  # every row the same, so equal seeds would round the shards' rows alike
    opt = {"optimizer": "sgd", "learning_rate": 1e-3, "seed": 5}
    head = k3.FocalHead(C, label_shards=2, weight_dtype="bfloat16", chunk_size=32, head_optimizer=opt)
    head.build((None, H))
    head.set_kernel(kernel)
    head.loss_and_update(x, tf.ragged.constant([[]] * B, dtype=tf.int64))  # the same gradient in every row
    k, _ = head.float_weights()
    k = np.asarray(k, np.float32)
    assert not np.array_equal(k[:18], k[19:37]), "both shards drew the same rounding bits"


def _adam_model(lib, mod, shards, x):
    opt = {"optimizer": "adam", "learning_rate": 0.05}
    lib.utils.set_random_seed(1)
    encoder = lib.Sequential([lib.Input((H,)), lib.layers.Dense(H, activation="tanh")])
    head = mod.FocalHead(C, label_shards=shards, top_k=3, chunk_size=8, alpha=np.full(C, 0.5),
                         class_weights=np.linspace(0.5, 2.0, C))
    model = mod.FocalHeadModel(encoder, head, head_optimizer=opt)
    model.compile(optimizer=lib.optimizers.SGD(0.5))
    model.predict(x[:2], verbose=0)
    return model, head


def _slot(head):
    if head.label_shards is None:
        return np.asarray(head._head_state.slots["m"][0])
    return np.concatenate([np.asarray(sh.state.slots["m"][0]) for sh in head.shards])


def test_save_and_load_re_split(flavour, tmp_path):
    lib, mod = flavour
    x, kernel, bias, y, _ = _problem("ragged", seed=2)
    model, head = _adam_model(lib, mod, 2, x)
    for _ in range(2):  # two fused Adam steps: slots and step counts that are not their initial values
        head.loss_and_update(x, y)
    path = str(tmp_path / "s2.weights.h5")
    model.save_weights(path)
    want_k, want_b = head.float_weights()
    want_ids, want_m = model.predict(x, verbose=0)["ids"], _slot(head)
    assert np.abs(want_m).max() > 0
    for shards in (None, 1, 4):
        model, head = _adam_model(lib, mod, shards, x)
        model.load_weights(path)
        k, b = head.float_weights()
        np.testing.assert_array_equal(k, want_k)
        np.testing.assert_array_equal(b, want_b)
        np.testing.assert_array_equal(_slot(head), want_m)
        assert int(head.head_iterations.numpy()) == 2
        np.testing.assert_array_equal(model.predict(x, verbose=0)["ids"], want_ids)
        if shards is None:  # and back: the unsharded (Keras-numbered) file into 3 shards
            path1 = str(tmp_path / "s1.weights.h5")
            model.save_weights(path1)
    model, head = _adam_model(lib, mod, 3, x)
    model.load_weights(path1)
    np.testing.assert_array_equal(head.float_weights()[0], want_k)
    np.testing.assert_array_equal(_slot(head), want_m)


def test_bad_arguments_name_themselves(flavour, tmp_path):
    lib, mod = flavour
    for bad in (0, C + 1, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"argument `label_shards`.*Received: label_shards="):
            mod.FocalHead(C, label_shards=bad)
    with pytest.raises(ValueError, match=r"argument `devices`.*one per shard"):
        mod.FocalHead(C, label_shards=2, devices=["/cpu:0"])
    with pytest.raises(ValueError, match=r"argument `devices`"):
        mod.FocalHead(C, devices=["/cpu:0"])
    x, kernel, bias, y, _ = _problem("padded")
    head = _head(mod, 2, kernel, bias)
    with pytest.raises(ValueError, match=r"argument `labels`.*out of range"):
        head.loss(x, tf.constant([[C]] * B))
    model = mod.FocalHeadModel(lib.Sequential([lib.Input((H,)), lib.layers.Dense(H)]), head)
    model.predict(np.zeros((1, H), "float32"), verbose=0)
    path = str(tmp_path / "h.weights.h5")
    model.save_weights(path)
    other = mod.FocalHeadModel(lib.Sequential([lib.Input((H,)), lib.layers.Dense(H)]),
                               mod.FocalHead(C + 1, label_shards=2))
    other.predict(np.zeros((1, H), "float32"), verbose=0)
    with pytest.raises(ValueError, match=rf"argument `num_labels`.*\({C}\).*num_labels={C + 1}"):
        other.load_weights(path)
    assert mod.FocalHead.from_config(head.get_config()).label_shards == 2
    if LOGICAL:  # XLA compiles for one device: refused, naming jit_compile
        with pytest.raises(ValueError, match=r"argument `jit_compile`"):
            tf.function(head.loss, jit_compile=True)(x, y)


def test_initial_kernel_is_the_same_for_every_shard_count():
    kernels = []
    for shards in (1, 2, 4):
        head = k3.FocalHead(C, label_shards=shards, kernel_initializer=keras.initializers.GlorotUniform(seed=3))
        head.build((None, H))
        kernels.append(head.float_weights()[0].numpy())
    np.testing.assert_array_equal(kernels[1], kernels[0])
    np.testing.assert_array_equal(kernels[2], kernels[0])
    limit = np.sqrt(6.0 / (C + H))  # Glorot's fans from the whole [C, H], not a shard's
    assert np.abs(kernels[0]).max() <= limit and np.abs(kernels[0]).max() > 0.9 * limit


@pytest.mark.parametrize("fused", [False, True])
def test_features_reach_each_shard_loop_from_its_own_device(fused):
    """A chunk loop that captures a tensor of another device receives it in every iteration (the
    bytes per step then grow with C, measured across processes): each shard's loop must read the
    features from a copy on its own device."""
    x, kernel, bias, y, _ = _problem("padded")
    opt = {"optimizer": "sgd", "learning_rate": 0.1} if fused else None
    head = k3.FocalHead(C, label_shards=2, chunk_size=4, head_optimizer=opt)
    head.build((None, H))
    dense = tf.Variable(tf.eye(H))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            features = tf.matmul(x, dense)  # on the caller's device, as an encoder's output
            loss = head.loss_and_update(features, y) if fused else head.loss(features, y)
        return tape.gradient(loss, dense)

    graph = step.get_concrete_function(x, y).graph
    loops = []

    def walk(g):
        for op in g.get_operations():
            if op.type in ("While", "StatelessWhile"):
                loops.append(op)
        for fn in g._functions.values():
            if hasattr(fn, "graph"):
                walk(fn.graph)
    walk(graph)
    assert len(loops) >= 2
    for loop in loops:
        feats = [t for t in loop.inputs if t.dtype == tf.float32 and t.shape.as_list() == [B, H]]
        assert any(t.op.type == "Identity" for t in feats), [t.op.type for t in feats]  # (and the dx accumulator)
        for t in feats:
            assert t.op.device == loop.device, (t.op.type, t.op.device, loop.device)


@pytest.mark.parametrize("name,shards,opt,batch", [
    ("keras3", 2, None, B // 2),
    ("keras3", 4, {"optimizer": "adam", "learning_rate": 0.05}, 3),  # blocks of 0 or 1 row
    ("tf_keras", 2, {"optimizer": "sgd", "learning_rate": 0.5}, B // 2),
])
def test_data_parallel_encoder_trains_as_one_device(name, shards, opt, batch):
    """encoder_devices="shards": each batch's row blocks encoded on the shards' devices, forward and
    backward; fit equals the unsharded model on one device (rtol 1e-5), predict's ids too."""
    lib, mod = FLAVOURS[name]
    (plain, sharded), x = _fit_pair(lib, mod, shards, head_optimizer=opt, encoder_devices="shards", batch=batch)
    assert sharded.encoder_devices == [sh.device for sh in sharded.head.shards]
    for a, b in zip(sharded.encoder.get_weights(), plain.encoder.get_weights()):
        _close(a, b, 1e-5)
    _close(sharded.head.float_weights()[0], plain.head.float_weights()[0], 1e-5)
    np.testing.assert_array_equal(sharded.predict(x, verbose=0)["ids"], plain.predict(x, verbose=0)["ids"])
    np.testing.assert_array_equal(sharded.predict(x[:1], verbose=0)["ids"], plain.predict(x[:1], verbose=0)["ids"])
    y = tf.ragged.constant([[1, 2]] * B, dtype=tf.int64, inner_shape=())
    assert sharded.evaluate(x, y, verbose=0) == pytest.approx(plain.evaluate(x, y, verbose=0), rel=1e-5)


@pytest.mark.skipif(not LOGICAL, reason="needs 4 logical CPU devices: TensorFlow started before this module")
def test_data_parallel_encoder_runs_its_backward_on_each_replica_device():
    """The placer would put a tape's unplaced backward ops on the caller's device: every MatMul of
    the encoder (forward and its gradients) must be on a replica's device, and the ragged and
    sparse inputs split by rows."""
    from fusedfocal import _head_replicas

    encoder = keras.Sequential([keras.Input((H,)), keras.layers.Dense(H, activation="tanh"), keras.layers.Dense(H)])
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[1:3]]
    x = tf.constant(np.random.default_rng(0).normal(size=(5, H)), tf.float32)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(_head_replicas.encode(encoder, x, devices, training=True) ** 2)
        return loss, tape.gradient(loss, encoder.trainable_variables)

    loss, grads = step(x)
    with tf.GradientTape() as tape:
        want = tf.reduce_sum(encoder(x) ** 2)
    for g, w in zip(grads, tape.gradient(want, encoder.trainable_variables)):
        _close(g, w, 1e-5)
    matmuls = []

    def walk(g):
        for op in g.get_operations():
            if op.type == "MatMul":
                matmuls.append(op.device)
        for fn in g._functions.values():
            if hasattr(fn, "graph"):
                walk(fn.graph)
    walk(step.get_concrete_function(x).graph)
    # 2 replicas x (2 forward + the first layer's kernel gradient + the second's kernel and input gradients)
    assert len(matmuls) == 2 * 5, matmuls
    assert {d.split("device:")[-1] for d in matmuls} == {"CPU:1", "CPU:2"}, matmuls
    ragged = tf.ragged.constant([[1], [2, 3], [], [4, 5, 6], [7]])
    sparse = tf.sparse.from_dense(tf.constant([[1, 0], [0, 2], [3, 0]]))
    assert [b.to_list() for b in _head_replicas.split_rows(ragged, 2)] == [[[1], [2, 3]], [[], [4, 5, 6], [7]]]
    blocks = _head_replicas.split_rows({"s": sparse, "d": tf.range(3)}, 2)
    assert [tf.sparse.to_dense(b["s"]).numpy().tolist() for b in blocks] == [[[1, 0]], [[0, 2], [3, 0]]]
    assert [b["d"].numpy().tolist() for b in blocks] == [[0], [1, 2]]


def test_encoder_devices_bad_values_name_the_argument(flavour):
    lib, mod = flavour
    enc = lib.Sequential([lib.Input((H,)), lib.layers.Dense(H)])
    for bad in ("gpus", [], [3], "/cpu:0"):
        with pytest.raises(ValueError, match=r"argument `encoder_devices`.*Received: encoder_devices="):
            mod.FocalHeadModel(enc, mod.FocalHead(C, label_shards=2), encoder_devices=bad)
    with pytest.raises(ValueError, match=r"argument `encoder_devices`.*unsharded head"):
        mod.FocalHeadModel(enc, mod.FocalHead(C), encoder_devices="shards")
    model = mod.FocalHeadModel(enc, mod.FocalHead(C), encoder_devices=["/cpu:0", "/cpu:0"])
    model.predict(np.zeros((3, H), "float32"), verbose=0)
    assert "encoder_devices" not in model.get_config()
    if LOGICAL:
        from fusedfocal import _head_replicas

        with pytest.raises(ValueError, match=r"argument `jit_compile`.*encoder_devices="):
            tf.function(lambda x: _head_replicas.encode(enc, x, ["/cpu:0", "/cpu:1"]), jit_compile=True)(
                tf.zeros([2, H]))
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            with pytest.raises(ValueError, match=r"argument `encoder_devices`.*MirroredStrategy with 2 replicas"):
                _head_replicas.encode(enc, tf.zeros([2, H]), ["/cpu:0", "/cpu:1"])
