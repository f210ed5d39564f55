"""No tensor of B x C elements in a fused training step: not in the traced
graph (while bodies and gradient functions included), not in XLA's optimized
HLO. B x C = 7 x 1013 = 7091 is a number no other shape here produces; the
unfused step is checked too, so the search is not vacuous."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import fusedfocal

B, H, C = 7, 16, 1013  # 1013 is prime: no chunk divides it
BC = B * C


def _step(fused, layout="ch", jit=False, grad_mode="forward", implementation="auto"):
    def step(x, w, b, ids):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            if fused:
                loss = fusedfocal.linear_focal_loss(x, w, b, ids, kernel_layout=layout, chunk_size=128,
                                                    grad_mode=grad_mode, implementation=implementation)
            else:
                z = tf.matmul(x, w, transpose_b=layout == "ch") + b
                loss = fusedfocal.sigmoid_focal_loss(z, ids, reduction="mean")  # ids: dense [B, C] here
        gx, gw, gb = tape.gradient(loss, [x, w, b])
        return loss, x - 0.1 * gx, w - 0.1 * gw, b - 0.1 * gb  # an SGD update

    return tf.function(step, jit_compile=jit)


def _args(layout="ch"):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(B, H)), tf.float32)
    w = tf.constant(rng.normal(size=(C, H) if layout == "ch" else (H, C)), tf.float32)
    ids = tf.ragged.constant([[1, 2], [], [5], [1012], [0], [3, 3], [7]], tf.int32)
    return x, w, tf.zeros([C]), ids


def _dense_args(layout="ch"):
    x, w, b, ids = _args(layout)
    return x, w, b, tf.reduce_max(tf.one_hot(ids.to_tensor(-1), C), axis=1)


def _graphs(graph, seen=None):
    """The graph and every function graph it calls (while/cond bodies, gradients)."""
    seen = set() if seen is None else seen
    yield graph
    for op in graph.get_operations():
        for attr in op.node_def.attr.values():
            names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
            for name in names:
                if name and name not in seen:
                    seen.add(name)
                    fn = graph._get_function(name)  # noqa: SLF001 - no public accessor
                    if fn is not None:
                        yield from _graphs(fn.graph, seen)


def _big_graph_tensors(concrete):
    found, count = [], 0
    for g in _graphs(concrete.graph):
        for op in g.get_operations():
            for t in op.outputs:
                count += 1
                shape = t.shape
                if shape.rank and shape.is_fully_defined() and shape.num_elements() == BC:
                    found.append(f"{op.type} {op.name} {shape}")
                elif shape.rank and B in shape.as_list() and C in shape.as_list():
                    found.append(f"{op.type} {op.name} {shape}")
    return found, count


def _big_hlo_shapes(hlo):
    found = []
    for dims in re.findall(r"[a-z]\w*\[([\d,]+)\]", hlo):
        n = int(np.prod([int(d) for d in dims.split(",") if d]))
        if n == BC:
            found.append(dims)
    return found


@pytest.mark.parametrize("layout, grad_mode", [("ch", "forward"), ("hc", "recompute")])
def test_traced_graph_has_no_batch_by_labels_tensor(layout, grad_mode):
    concrete = _step(True, layout, grad_mode=grad_mode).get_concrete_function(*_args(layout))
    found, count = _big_graph_tensors(concrete)
    assert count > 100, count  # the walk reached the while bodies and gradients
    assert not found, found
    unfused, _ = _big_graph_tensors(_step(False, layout).get_concrete_function(*_dense_args(layout)))
    assert unfused  # the check can see one


@pytest.mark.parametrize("layout, implementation", [("ch", "native"), ("hc", "xla")])
def test_optimized_hlo_has_no_batch_by_labels_tensor(layout, implementation):
    args = _args(layout)
    step = _step(True, layout, jit=True, implementation=implementation)
    hlo = step.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
    assert "while" in hlo
    assert not _big_hlo_shapes(hlo)
    unfused = _step(False, layout, jit=True).experimental_get_compiler_ir(*_dense_args(layout))(
        stage="optimized_hlo")
    assert _big_hlo_shapes(unfused)
    loss = step(*args)[0]
    assert np.isfinite(loss.numpy())


def test_native_op_runs_inside_the_xla_loop():
    from fusedfocal.ops import native

    if not native.has_xla_kernel():
        pytest.skip("native library without its XLA kernel")
    hlo = _step(True, jit=True, implementation="native").experimental_get_compiler_ir(*_args())(
        stage="optimized_hlo")
    assert 'custom_call_target="fusedfocal_focal_loss"' in hlo
