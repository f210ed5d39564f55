r"""The fused head's gradient fused into its update: no kernel-sized gradient, ever.

:func:`linear_focal_loss_update` runs the chunk loop of
:func:`fusedfocal.ops.linear_focal_loss` on a label-major head held in
variables (kernel ``[C, H]``, bias ``[C]``), and applies each label chunk's
kernel and bias gradient to that chunk as soon as it exists, then drops it:
the optimizer's rule (:class:`HeadUpdate`: SGD with optional momentum, or
Adam) reads and writes only the chunk's rows of the weights and of the
optimizer's slots. Only ``dL/dfeatures`` (``[B, H]``) leaves the op, as its
gradient, so the encoder trains through Keras as before. This is ELMO's
"gradient fusion" (Zhang et al., 2025) in TensorFlow.

Storage may be bfloat16 (weights and slots); each chunk is read into float32,
updated in float32 and written back with seeded stochastic rounding (add
uniform noise below bfloat16's last kept bit, then truncate: unbiased, so
updates far below bfloat16's spacing still move the weights on average) or
with round-to-nearest (``rounding="nearest"``, which stalls on small steps:
the ablation).

In place: under XLA the variables are updated with a dynamic-update-slice of
their own value inside the loop (XLA aliases the buffer: no copy, checked in
the optimized HLO by the tests); in graph and eager mode with a row gather
and a row scatter (``ResourceGather``/``ResourceScatterUpdate``, in place).
The formulas are Keras 3's ``SGD`` and ``Adam`` (``update_step``), with
Keras' decoupled ``weight_decay`` and ``clipvalue``, so a fused step equals
"the full gradient, then the Keras optimizer" (tested to rtol 1e-6).
"""

from __future__ import annotations

import dataclasses
import numbers
import types

import tensorflow as tf

from fusedfocal.ops import _validation as v
from fusedfocal.ops import native
from fusedfocal.ops._head_rows import Rows as _Rows
from fusedfocal.ops._head_rows import tf_variable
from fusedfocal.ops._rounding import stochastic_round
from fusedfocal.ops._linear_chunks import Elementwise, Head, Spec, could_record, plan, slice_
from fusedfocal.ops.linear import default_chunk_size
from fusedfocal.ops._linear_inputs import (check_choice, check_chunk_size, class_params,
                                           convert_float, convert_labels)

__all__ = ["HeadUpdate", "HeadState", "linear_focal_loss_update", "stochastic_round", "OPTIMIZERS",
           "WEIGHT_DTYPES", "ROUNDINGS"]

#: The fused update rules: Keras 3's SGD (with momentum/Nesterov) and Adam.
OPTIMIZERS = ("sgd", "adam")
#: Storage dtypes of the head's weights and optimizer slots.
WEIGHT_DTYPES = ("float32", "bfloat16")
#: How float32 results are stored in bfloat16: seeded stochastic rounding, or round-to-nearest.
ROUNDINGS = ("stochastic", "nearest")
_SALT = {"kernel": 1, "bias": 2, "m": 3, "v": 4, "momentum": 5}


def _float(name, value, *, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise v.invalid(name, "a real number", value)
    value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise v.invalid(name, f"a number {'>' if lo_open else '>='} {lo}", value)
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise v.invalid(name, f"a number {'<' if hi_open else '<='} {hi}", value)
    return value


@dataclasses.dataclass(frozen=True)
class HeadUpdate:
    """The rule of a fused head update: Keras 3's SGD or Adam, applied chunk by chunk.

    Args:
      optimizer: ``"sgd"`` or ``"adam"``.
      momentum: SGD momentum in ``[0, 1)`` (Keras ``SGD(momentum=...)``); 0: plain SGD, no slot.
      nesterov: SGD with Nesterov momentum.
      beta_1, beta_2, epsilon: Adam's, as Keras ``Adam``.
      weight_decay: decoupled weight decay, as Keras' ``weight_decay``:
        ``w -= w * weight_decay * lr`` before the step (also on the bias).
      clipvalue: clip each gradient entry to ``[-clipvalue, clipvalue]``, as
        Keras' ``clipvalue``. Keras' ``clipnorm``/``global_clipnorm`` need the
        whole gradient's norm before the first chunk is updated, so they are
        not offered (a second pass over the head would be needed).
      moment_dtype: ``"float32"`` or ``"bfloat16"``: the dtype of the slots
        (momentum, Adam's ``m`` and ``v``) of the kernel; the bias's slots are float32.
      rounding: ``"stochastic"`` (default) or ``"nearest"``: how float32
        results are stored in bfloat16 weights and slots (no effect on float32).
      seed: seed of the stochastic rounding; with the step count and the
        chunk it makes every step reproducible.
    """

    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay: float = 0.0
    clipvalue: float | None = None
    moment_dtype: str = "float32"
    rounding: str = "stochastic"
    seed: int = 0

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _float("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        if not isinstance(self.nesterov, bool):
            raise v.invalid("nesterov", "a bool", self.nesterov)
        _float("beta_1", self.beta_1, lo=0.0, hi=1.0, hi_open=True)
        _float("beta_2", self.beta_2, lo=0.0, hi=1.0, hi_open=True)
        _float("epsilon", self.epsilon, lo=0.0, lo_open=True)
        _float("weight_decay", self.weight_decay, lo=0.0)
        if self.clipvalue is not None:
            _float("clipvalue", self.clipvalue, lo=0.0, lo_open=True)
        check_choice("moment_dtype", self.moment_dtype, WEIGHT_DTYPES)
        check_choice("rounding", self.rounding, ROUNDINGS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise v.invalid("seed", "an int", self.seed)

    @property
    def slot_names(self) -> tuple:
        """The names of the per-weight state this rule keeps (``()``, ``("momentum",)`` or ``("m", "v")``)."""
        if self.optimizer == "adam":
            return ("m", "v")
        return ("momentum",) if self.momentum > 0 else ()

    def get_config(self) -> dict:
        """The fields as a dict (``HeadUpdate(**config)`` rebuilds it)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class HeadState:
    """The variables a fused update reads and writes.

    Args:
      kernel: label-major ``[C, H]`` variable: float32, bfloat16, or uint16
        holding bfloat16 bit patterns (in place under XLA on the CPU, where a
        bfloat16 variable costs a kernel-sized buffer a step).
      bias: ``[C]`` variable (same dtypes) or None.
      slots: ``{name: (kernel_slot, bias_slot or None)}`` for each name of
        :attr:`HeadUpdate.slot_names`; kernel slots ``[C, H]``, bias slots ``[C]``.
      iterations: int64 scalar variable, the number of steps taken (Keras'
        ``optimizer.iterations``); the update adds one.
    """

    kernel: object
    bias: object
    slots: dict
    iterations: object


class _Rule:
    """One chunk's update, Keras 3's formulas in float32.

    ``self.cur`` maps each variable's key to its carried value (see
    :class:`_Rows`); :func:`_run` loads it from the loop variables before a
    chunk and returns it after.
    """

    def __init__(self, update, state, learning_rate, step, n_chunks, ok, xla, shard_index=0):
        self.u, self.xla, self.ok, self.shard_index = update, xla, ok, shard_index
        self.rows = {("kernel", 0): _Rows(state.kernel, "kernel", xla)}
        if state.bias is not None:
            self.rows[("kernel", 1)] = _Rows(state.bias, "bias", xla)
        for name in update.slot_names:
            if name not in state.slots:
                raise v.invalid("state", f"slots {update.slot_names} for optimizer={update.optimizer!r}",
                                f"slots {tuple(state.slots)}", describe=True)
            ks, bs = state.slots[name]
            self.rows[(name, 0)] = _Rows(ks, f"slots[{name!r}]", xla)
            if bs is not None and state.bias is not None:
                self.rows[(name, 1)] = _Rows(bs, f"slots[{name!r}]", xla)
        self.has_bias = state.bias is not None
        self.keys = sorted(self.rows)
        self.cur = {key: self.rows[key].initial() for key in self.keys}
        self.lr = tf.cast(learning_rate, tf.float32)
        self.t = tf.cast(step, tf.float32) + 1.0
        self.step = tf.cast(step, tf.int64)
        self.n_chunks = n_chunks

    def read(self, name, which, start, size):
        return self.rows[(name, which)].read(self.cur[(name, which)], start, size)

    def finish(self):
        return [op for op in (self.rows[k].finish(self.cur[k]) for k in self.keys) if op is not None]

    def _seed(self, salt, i, which):
        counter = self.step * self.n_chunks + tf.cast(i, tf.int64)
        # a label shard's index salts the seed (whose low 32 bits the hash reads), so that shards
        # draw different bits for their rows; shard 0 draws the unsharded head's
        key = (self.u.seed * 16 + _SALT[salt] * 2 + which + self.shard_index * 0x9E3779B1) % (1 << 32)
        return tf.stack([tf.constant(key, tf.int64), counter])

    def _store(self, name, which, start, size, new, old, i):
        rows = self.rows[(name, which)]
        if rows.dtype == tf.bfloat16 and self.u.rounding == "stochastic":
            salt = name if name != "kernel" or which == 0 else "bias"
            stored = stochastic_round(new, tf.bfloat16, self._seed(salt, i, which))
        else:
            stored = tf.cast(new, rows.dtype)
        stored = tf.where(self.ok, stored, old)  # a non-finite step leaves the head as it was
        self.cur[(name, which)] = rows.write(self.cur[(name, which)], start, size, stored)

    def apply(self, i, start, size, grad, which):
        """Updates rows ``[start, start + size)`` of the kernel (``which=0``) or bias (1).

        The slots are written first and the weights' step reads them back as
        stored (bfloat16 slots: rounded), so that XLA sees each buffer read
        before it is written and needs no copy of it (else two copies of each
        slot every chunk, seen in the optimized HLO)."""
        old = self.read("kernel", which, start, size)
        w = tf.cast(old, tf.float32)
        g = tf.cast(grad, tf.float32)
        u = self.u
        if u.clipvalue is not None:
            g = tf.clip_by_value(g, -u.clipvalue, u.clipvalue)
        if u.weight_decay:
            w = w - w * u.weight_decay * self.lr
        if u.optimizer == "adam":
            m_old, v_old = self.read("m", which, start, size), self.read("v", which, start, size)
            m, vv = tf.cast(m_old, tf.float32), tf.cast(v_old, tf.float32)
            alpha = self.lr * tf.sqrt(1.0 - tf.pow(u.beta_2, self.t)) / (1.0 - tf.pow(u.beta_1, self.t))
            self._store("m", which, start, size, m + (g - m) * (1.0 - u.beta_1), m_old, i)
            self._store("v", which, start, size, vv + (tf.square(g) - vv) * (1.0 - u.beta_2), v_old, i)
            m, vv = (tf.cast(self.read(n, which, start, size), tf.float32) for n in ("m", "v"))
            w = w - (m * alpha) / (tf.sqrt(vv) + u.epsilon)
        elif u.slot_names:
            m_old = self.read("momentum", which, start, size)
            self._store("momentum", which, start, size, tf.cast(m_old, tf.float32) * u.momentum - g * self.lr,
                        m_old, i)
            m = tf.cast(self.read("momentum", which, start, size), tf.float32)
            w = w + (m * u.momentum - g * self.lr if u.nesterov else m)
        else:
            w = w - g * self.lr
        self._store("kernel", which, start, size, w, old, i)


class _VarHead(Head):
    """A label-major :class:`Head` whose kernel and bias chunks are read through the rule."""

    def __init__(self, features, rule, offsets, cdtype):
        super().__init__(features, None, None, offsets, "ch", cdtype)
        self.rule = rule

    def logits(self, start, size):
        k = tf.cast(self.rule.read("kernel", 0, start, size), self.cdtype)
        z = tf.matmul(self.x, k, transpose_b=True)
        if self.rule.has_bias:
            z = z + tf.cast(self.rule.read("kernel", 1, start, size), self.cdtype)
        if self.offsets is not None:
            z = z + slice_(self.offsets, [start], [size])
        return z, k


def _run(head, rule, labels, elem, num_classes, chunk, scale, want_dx):
    """The chunk loop with the update: returns ``(loss_sum float64, dL/dfeatures, store ops)``."""
    chunk, n_full, tail = plan(num_classes, chunk)

    def one(i, start, size, gx):
        z, k = head.logits(start, size)
        loss, dz = elem(z, labels.chunk(start, size, head.batch), start, size)
        dz = dz * scale
        if want_dx:
            gx = gx + tf.matmul(dz, k)
        rule.apply(i, start, size, tf.matmul(dz, head.x, transpose_a=True), 0)
        if rule.has_bias:
            rule.apply(i, start, size, tf.reduce_sum(dz, axis=0), 1)
        return loss, gx

    def body(i, acc, gx, *cur):
        rule.cur = dict(zip(rule.keys, cur))
        loss, gx = one(i, i * chunk, chunk, gx)
        return (i + 1, acc + loss, gx, *[rule.cur[k] for k in rule.keys])

    gx0 = tf.zeros(tf.shape(head.x), head.cdtype)
    init = (tf.constant(0), tf.zeros([], tf.float64), gx0, *[rule.cur[k] for k in rule.keys])
    _, total, gx, *cur = tf.while_loop(lambda i, *_: i < n_full, body, init)
    rule.cur = dict(zip(rule.keys, cur))
    if tail:
        loss, gx = one(tf.constant(n_full), n_full * chunk, tail, gx)
        total = total + loss
    with tf.control_dependencies(list(rule.cur.values())):
        ops = rule.finish()
    return total, gx, ops


def _prepare(features, state, labels, update, learning_rate, *, gamma, alpha, class_weights, logit_offsets,
             reduction, chunk_size, implementation, shard=None):
    """Checks the arguments (ValueError/TypeError naming them) and builds the loop's pieces."""
    if not isinstance(update, HeadUpdate):
        raise TypeError(f"Invalid type for argument `update`. Expected a HeadUpdate. "
                        f"Received: {type(update).__name__}")
    if not isinstance(state, HeadState):
        raise TypeError(f"Invalid type for argument `state`. Expected a HeadState. Received: {type(state).__name__}")
    gamma = v.check_nonnegative_float("gamma", gamma)
    reduction = check_choice("reduction", reduction, ("sum", "mean"))
    chunk_size = check_chunk_size(chunk_size)
    implementation = native.check_implementation(implementation)
    features = convert_float("features", features, 2)
    kvar = tf_variable(state.kernel, "state.kernel")
    if kvar.shape.rank != 2 or kvar.dtype not in (tf.float32, tf.bfloat16, tf.uint16):
        raise v.invalid("state.kernel", "a float32, bfloat16 or uint16 (bfloat16 bits) variable [C, H] "
                        "(label-major)",
                        f"{kvar.dtype.name} variable of shape {tuple(kvar.shape)}", describe=True)
    num_classes, hidden = int(kvar.shape[0]), kvar.shape[1]
    if features.shape[1] is not None and features.shape[1] != hidden:
        raise v.invalid("features", f"shape [B, {hidden}] (H from `state.kernel`)",
                        f"shape {tuple(features.shape)}", describe=True)
    cdtype = tf.float32 if features.dtype != tf.float64 else tf.float64
    xla = native.in_xla_context()
    lab, checks = convert_labels(labels, features.shape[0], num_classes, xla=xla)
    alpha, weights, offsets = class_params(alpha, class_weights, logit_offsets, num_classes, cdtype)
    use_native = native.use_native(implementation, Spec(cdtype, num_classes), alpha)
    elem = Elementwise(gamma, alpha, weights, use_native, cdtype)
    chunk = chunk_size or default_chunk_size(features.shape[0], num_classes)
    _, n_full, tail = plan(num_classes, chunk)
    n_chunks = n_full + (1 if tail else 0)
    step = tf_variable(state.iterations, "state.iterations")
    ok = tf.reduce_all(tf.math.is_finite(features))
    index, total = _check_shard(shard, num_classes)
    rule = _Rule(update, state, learning_rate, step.read_value(), n_chunks, ok, xla, index)
    count = tf.cast(tf.shape(features)[0], cdtype) * float(total)
    scale = tf.math.divide_no_nan(tf.ones([], cdtype), count) if reduction == "mean" else tf.ones([], cdtype)
    want_dx = could_record()
    return types.SimpleNamespace(features=features, rule=rule, step=step, cdtype=cdtype, offsets=offsets,
                                 checks=checks, labels=lab, elem=elem, num_classes=num_classes, chunk=chunk,
                                 scale=scale, want_dx=want_dx)


def _check_shard(shard, num_classes):
    """``(index, total labels)`` of a label shard (``(0, C)`` for a whole head)."""
    if shard is None:
        return 0, num_classes
    ok = isinstance(shard, tuple) and len(shard) == 2 and all(
        isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in shard)
    if not ok or shard[0] < 0 or shard[1] < num_classes:
        raise v.invalid("shard", f"None or (index >= 0, num_labels >= {num_classes}) (the shard's labels)", shard)
    return int(shard[0]), int(shard[1])


@tf.autograph.experimental.do_not_convert
def linear_focal_loss_update(
    features,
    state: HeadState,
    labels,
    *,
    update: HeadUpdate,
    learning_rate,
    gamma: float = 2.0,
    alpha=None,
    class_weights=None,
    logit_offsets=None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    implementation: str = "auto",
    shard: tuple | None = None,
    name: str | None = None,
):
    r"""The loss of :func:`fusedfocal.ops.linear_focal_loss`, with the head updated in the same pass.

    For each label chunk: the logits from the chunk's kernel rows, the loss
    and ``dL/dlogits`` in one pass, the chunk's share of ``dL/dfeatures``,
    then the chunk's kernel and bias gradient applied to the chunk's rows by
    ``update``'s rule, and dropped. ``state.iterations`` grows by one per call.
    The head's gradient is the loss's own (``reduction``'s scale, no loss
    scaling); non-finite ``features`` leave the head unchanged (the step is
    skipped for the head, as a loss-scale optimizer skips one).

    Args:
      features: ``[B, H]`` float16, bfloat16 or float32; gradients flow to it.
      state: the :class:`HeadState` variables; the kernel is label-major ``[C, H]``.
      labels: as for :func:`fusedfocal.ops.linear_focal_loss` (ragged ids, ids
        padded with -1, or dense multi-hot).
      update: the :class:`HeadUpdate` rule.
      learning_rate: float or scalar tensor (a schedule evaluated by the caller).
      gamma, alpha, class_weights, logit_offsets, reduction, chunk_size, implementation: as for
        :func:`fusedfocal.ops.linear_focal_loss`.
      shard: None, or ``(index, num_labels)`` when ``state`` holds one label
        shard of a head of ``num_labels`` labels (``labels`` then holds the
        shard-local ids): ``"mean"`` divides by ``B * num_labels``, so the sum
        of the shards' losses (and their updates) is the whole head's, and
        ``index`` salts the stochastic rounding seed.
      name: optional name scope.

    Returns:
      The float32 scalar loss, computed with the weights before the update.
      Its gradient reaches ``features`` only: the head's variables get none
      (they were updated already).
    """
    with tf.name_scope(name or "linear_focal_loss_update"):
        p = _prepare(features, state, labels, update, learning_rate, gamma=gamma, alpha=alpha,
                     class_weights=class_weights, logit_offsets=logit_offsets, reduction=reduction,
                     chunk_size=chunk_size, implementation=implementation, shard=shard)
        rule, step, cdtype = p.rule, p.step, p.cdtype

        @tf.custom_gradient
        def inner(x):
            head = _VarHead(x, rule, p.offsets, cdtype)
            with tf.control_dependencies(p.checks):
                total, gx, stores = _run(head, rule, p.labels, p.elem, p.num_classes, p.chunk, p.scale, p.want_dx)
            with tf.control_dependencies([total, gx, *stores]):
                bump = step.assign_add(1, read_value=False)
            with tf.control_dependencies([bump] if bump is not None else []):
                loss = tf.cast(total * tf.cast(p.scale, tf.float64), cdtype)

            def grad(upstream, variables=None):
                gxs = v.upstream_times(upstream, tf.cast(gx, tf.float32) if gx.dtype != tf.float64 else gx,
                                       gx.dtype)
                gxs = tf.cast(gxs, x.dtype)
                if variables is not None:
                    return gxs, [None] * len(variables)
                return gxs

            return loss, grad

        return inner(p.features)
