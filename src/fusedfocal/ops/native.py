"""Loader and dispatch for the native fused focal op (``_fused_focal_ops.so``).

The library is built by ``python scripts/build_kernels.py`` (sources in
``kernels/``). :func:`sigmoid_focal_loss` in ``focal.py`` asks :func:`use_native`
which path to take, then calls :func:`native_focal_loss`.

Dispatch rules (``implementation=`` keyword, else ``$FUSEDFOCAL_IMPLEMENTATION``,
else ``"auto"``):

* ``"xla"``: always the pure-TensorFlow path.
* ``"auto"``: the native op when the library loads, logits are
  float16/bfloat16/float32, ``alpha`` is None, a scalar or a ``[C]``
  vector, and no GPU is visible unless the library has a GPU kernel.
  Inside an XLA-compiled function (``tf.function(jit_compile=True)``, Keras
  ``jit_compile=True``) the same op lowers to one XLA custom call
  (``fusedfocal_focal_loss``) when the library has its XLA kernel, on CPU.
  On a GPU under XLA, ``"auto"`` keeps the pure-TF path, which XLA fuses:
  the CUDA custom call has never run on a GPU, so it is not chosen until
  a GPU has measured it (``"native"`` opts in where the library has it).
  On TPU, or otherwise, the pure-TF path, silently (a library that was
  simply never built is the normal pip install).
* ``"native"``: as ``"auto"``, but every reason to fall back is reported
  with one ``RuntimeWarning`` (once per reason per process).

A library file that exists but fails to load (e.g. built against another
TensorFlow) always warns once, with the cause and the fix.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v

__all__ = ["IMPLEMENTATIONS", "ENV_VAR", "library_path", "load", "use_native",
           "native_focal_loss", "in_xla_context", "has_xla_kernel", "reset"]

IMPLEMENTATIONS = ("auto", "xla", "native")
ENV_VAR = "FUSEDFOCAL_IMPLEMENTATION"
LIBRARY_NAME = "_fused_focal_ops.so"
BUILD_HINT = "run `python scripts/build_kernels.py` (from the fusedfocal source tree)"

_log = logging.getLogger("fusedfocal")
_NATIVE_DTYPES = (tf.float16, tf.bfloat16, tf.float32)

# Where the library is looked for: $FUSEDFOCAL_NATIVE_LIBRARY, else beside
# this module (tests monkeypatch this attribute).
library_path = os.environ.get("FUSEDFOCAL_NATIVE_LIBRARY") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), LIBRARY_NAME)

_state: dict = {}
_warned: set = set()


def reset() -> None:
    """Forget the loaded library and the warnings already given (tests)."""
    _state.clear()
    _warned.clear()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside fusedfocal and TensorFlow,
    so the warning names the user's line whatever wrappers lie between."""
    internal = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(tf.__file__)))
    frame, level = sys._getframe(2), 2  # level 1 is _warn_once itself
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


def check_implementation(implementation) -> str:
    """Validates the keyword, then applies ``$FUSEDFOCAL_IMPLEMENTATION``."""
    if implementation not in IMPLEMENTATIONS:
        raise v.invalid("implementation", f"one of {set(IMPLEMENTATIONS)}", implementation)
    if implementation != "auto":
        return implementation
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if not env:
        return "auto"
    if env not in IMPLEMENTATIONS:
        raise ValueError(
            f"Invalid value for environment variable `{ENV_VAR}`. Expected one of "
            f"{set(IMPLEMENTATIONS)}. Received: {ENV_VAR}={env!r}")
    return env


@tf.autograph.experimental.do_not_convert  # runs at trace time; os.path has no source
def load(explicit: bool = False):
    """The op module, or None. Warns (once) as described in the module doc."""
    if "ops" not in _state:
        path = library_path
        ops, error = None, None
        if os.path.exists(path):
            try:
                ops = tf.load_op_library(path)
            except (tf.errors.NotFoundError, OSError) as e:
                error = f"{path} exists but failed to load: {e}"
        _state["ops"] = ops
        _state["error"] = error
        _state["missing"] = ops is None and error is None
        devices = _kernel_devices() if ops is not None else set()
        _state["gpu_kernel"] = "GPU" in devices
        _state["xla_cpu_kernel"] = "XLA_CPU_JIT" in devices
        _state["xla_gpu_kernel"] = "XLA_GPU_JIT" in devices
    if _state["error"]:
        _warn_once("load", f"fusedfocal: the native focal loss op is unavailable: "
                           f"{_state['error']}. Falling back to the XLA path. To fix it, "
                           f"{BUILD_HINT} against the installed TensorFlow.")
    elif _state["missing"]:
        if explicit:
            _warn_once("missing", f"fusedfocal: implementation='native' was requested but "
                                  f"the native op library {library_path} is not built. "
                                  f"Falling back to the XLA path. To fix it, {BUILD_HINT}.")
        elif "missing_logged" not in _state:
            _state["missing_logged"] = True
            _log.debug("fusedfocal: %s not built; using the XLA path", library_path)
    return _state["ops"]


def _kernel_devices() -> set:
    """Device types with a registered FusedFocalLossGrad kernel (CPU, GPU,
    XLA_CPU_JIT for the XLA lowering, XLA_GPU_JIT with the CUDA handler)."""
    try:
        from tensorflow.python.framework import kernels

        found = kernels.get_registered_kernels_for_op("FusedFocalLossGrad")
        return {k.device_type for k in found.kernel}
    except Exception:  # noqa: BLE001 - private API; assume the CPU kernel only
        return {"CPU"}


def has_xla_kernel() -> bool:
    """Whether the loaded library lowers the op into XLA on CPU (custom call)."""
    return load() is not None and _state["xla_cpu_kernel"]


in_xla_context = v.in_xla_context  # one definition, in _validation (check_labels uses it too)


def _alpha_tensor(alpha, num_classes):
    """alpha as float32 [0] (none), [] or [C]; None if the op can't take it."""
    if alpha is None:
        return tf.zeros([0], tf.float32)
    if isinstance(alpha, float):
        return tf.constant(alpha, tf.float32)
    shape = tf.TensorShape(alpha.shape)
    if shape.rank is None:
        return None
    if shape.rank == 0:
        return tf.cast(alpha, tf.float32)
    dims = shape.as_list()
    if any(d != 1 for d in dims[:-1]) or dims[-1] is None:
        return None
    if num_classes is None or dims[-1] not in (1, num_classes):
        return None
    return tf.reshape(tf.cast(alpha, tf.float32), [-1])


def use_native(implementation: str, logits, alpha) -> bool:
    """Whether this call runs on the native op (see the module doc)."""
    if implementation == "xla":
        return False
    explicit = implementation == "native"
    if load(explicit) is None:
        return False

    def no(key, why):
        if explicit:
            _warn_once(key, f"fusedfocal: implementation='native' cannot be used {why}; "
                            "using the XLA path.")
        return False

    gpu = bool(tf.config.list_logical_devices("GPU"))
    xla = in_xla_context()
    if xla:
        if _on_tpu():
            return no("tpu", "on TPU (the op has no TPU lowering)")
        if gpu:
            if not _state["xla_gpu_kernel"]:
                return no("xla-gpu", "inside an XLA-compiled function on a GPU: the library "
                                     "was built without its CUDA custom call")
            if not explicit:  # never measured on a GPU: "auto" keeps XLA's own fusion
                return False
        elif not _state["xla_cpu_kernel"]:
            return no("xla", "inside an XLA-compiled function (jit_compile=True): the library "
                             "was built without its XLA kernel (`build_kernels.py --xla off` "
                             "or an older build); rebuild it with `python "
                             "scripts/build_kernels.py --force`")
    if logits.dtype not in _NATIVE_DTYPES:
        return no(f"dtype-{logits.dtype.name}",
                  f"for {logits.dtype.name} logits (it supports float16, bfloat16, float32)")
    if isinstance(alpha, np.ndarray) or isinstance(alpha, (tf.Tensor, tf.Variable)):
        if _alpha_tensor(alpha, logits.shape[-1]) is None:
            return no("alpha", f"with alpha of shape {tuple(alpha.shape)} (it takes a "
                               "scalar or a [C] vector)")
    if not _state["gpu_kernel"] and gpu and not xla:
        return no("gpu", "on a machine with a GPU: the library was built without its "
                         "CUDA kernel")
    return True


def _on_tpu() -> bool:
    strategy = tf.distribute.get_strategy()
    return type(strategy).__name__.startswith("TPUStrategy")


def native_focal_loss(logits, labels, alpha, gamma: float, label_smoothing: float,
                      reduction: str, weights=None):
    """The fused op wrapped in ``tf.custom_gradient`` (like ``focal._fused``).

    ``labels`` are float32 (``_validation.convert_labels``) and broadcast to
    ``logits`` here; labels and alpha get no gradient. The op returns the
    gradient in the logits dtype (float32 math, one rounding; already divided
    by the count for ``"mean"``), and the backward pass multiplies it by the
    upstream gradient in float32 by the package's one cast rule
    (``v.upstream_times``; skipped for a reduced loss when the upstream
    gradient is exactly 1). ``weights``: None or float32 broadcastable to
    ``logits``, multiplying each element's loss and gradient in the kernel.

    Inside XLA the op lowers to the ``fusedfocal_focal_loss`` custom call,
    and the backward multiply is a plain one, which XLA folds away when the
    upstream gradient is a constant 1 and fuses otherwise.
    """
    ops = load()
    alpha_t = _alpha_tensor(alpha, logits.shape[-1])
    xla = in_xla_context()

    def full(t):
        if t.shape.is_fully_defined() and t.shape == logits.shape:
            return t
        return tf.broadcast_to(t, tf.shape(logits))

    labels = full(labels)
    weights = [] if weights is None else [full(tf.cast(weights, tf.float32))]

    @tf.custom_gradient
    def forward(x):
        loss, grad = ops.fused_focal_loss_grad(
            x, labels, alpha_t, weights, gamma=gamma, label_smoothing=label_smoothing,
            reduction=reduction)

        def scaled(upstream):
            return v.upstream_times(upstream, tf.cast(grad, tf.float32), x.dtype)

        def backward(upstream):
            # A scope of its own, so a profile can tell the backward multiply
            # from the forward kernel (fusedfocal.profiling counts *_loss_grad).
            with tf.name_scope("sigmoid_focal_loss_grad"):
                if reduction == "none" or xla:
                    return scaled(upstream)
                # A reduced loss is usually differentiated directly (upstream 1):
                # skip the logits-sized multiply, a third of the memory traffic.
                return tf.cond(tf.equal(upstream, 1.0), lambda: tf.identity(grad),
                               lambda: scaled(upstream))

        return loss, backward

    return forward(logits)
