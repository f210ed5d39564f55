"""Loader and dispatch for the native fused focal op (``_fused_focal_ops.so``).

The library is built by the package's install (``pip install .``, ``pip
install -e .``, ``pip wheel .``; sources in ``kernels/``, build in
``build_support/native_build.py``), which writes ``_build_info.json`` beside
it. :func:`~fusedfocal.ops.sigmoid_focal_loss` in ``focal.py`` asks :func:`use_native` which
path to take, then calls :func:`native_focal_loss`. :func:`status` says what
runs where; ``fusedfocal info`` prints it.

Checks at load: the build info must name the TensorFlow minor version and
C++ ABI that are running. A mismatch is reported with one warning naming
both versions and the rebuild command, and the library is not loaded (no
``undefined symbol`` traceback); the pure-TF path runs.

Dispatch rules (``implementation=`` keyword, else ``$FUSEDFOCAL_IMPLEMENTATION``,
else ``"auto"``):

* ``"xla"``: always the pure-TensorFlow path (a deliberate choice: no warning).
* ``"auto"``: the native op when the library loads, logits are
  float16/bfloat16/float32, ``alpha`` is None, a scalar or a ``[C]``
  vector, and no GPU is visible unless the library has a GPU kernel.
  Inside an XLA-compiled function (``tf.function(jit_compile=True)``, Keras
  ``jit_compile=True``) the same op lowers to one XLA custom call
  (``fusedfocal_focal_loss``) when the library has its XLA kernel, on CPU.
  On a GPU under XLA, ``"auto"`` keeps the pure-TF path, which XLA fuses:
  the CUDA custom call has never run on a GPU, so it is not chosen until
  a GPU has measured it (``"native"`` opts in where the library has it).
  On TPU, or otherwise, the pure-TF path. A library that is missing, or
  was installed without the native op, is reported once per process with
  a ``RuntimeWarning`` naming the cost and the fix;
  ``FUSEDFOCAL_NATIVE_WARNING=0`` silences it.
* ``"native"``: as ``"auto"``, but every reason to fall back is reported
  with one ``RuntimeWarning`` (once per reason per process).

A library file that exists but fails to load always warns once, with the
cause and the fix.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

from fusedfocal.ops import _validation as v

__all__ = ["IMPLEMENTATIONS", "ENV_VAR", "library_path", "load", "use_native", "status", "build_info",
           "native_focal_loss", "in_xla_context", "has_xla_kernel", "reset"]

#: The values of ``implementation=`` (and of :data:`ENV_VAR`): ``"auto"`` (the native op
#: where it is built and applies), ``"xla"`` (the pure-TensorFlow path), ``"native"``.
IMPLEMENTATIONS = ("auto", "xla", "native")
#: The environment variable that forces a path for ``implementation="auto"``.
ENV_VAR = "FUSEDFOCAL_IMPLEMENTATION"
LIBRARY_NAME = "_fused_focal_ops.so"
INFO_NAME = "_build_info.json"
WARNING_ENV_VAR = "FUSEDFOCAL_NATIVE_WARNING"
BUILD_HINT = ("reinstall so that the install builds it: `pip install --no-binary fusedfocal "
              "--force-reinstall fusedfocal`, or `pip install .` (`pip install -e .`) in the source "
              "tree, with g++ and the TensorFlow you run installed; `python scripts/build_kernels.py` "
              "rebuilds a source tree in place")
FALLBACK_COST = ("the pure-TensorFlow path runs instead: it computes the same values, but under "
                 "jit_compile=True it is 0.84-0.97x the speed of the clipped recipe, where the native "
                 "custom call is 2.3-2.8x the fastest alternative")

_NATIVE_DTYPES = (tf.float16, tf.bfloat16, tf.float32)

#: Where the library is looked for: ``$FUSEDFOCAL_NATIVE_LIBRARY``, else beside this
#: module (tests monkeypatch this attribute).
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


def build_info(path: str | None = None) -> dict | None:
    """The install's record of what the library was built against
    (``_build_info.json`` beside it), or None when there is none (a library
    built by hand before build info existed, or no build at all)."""
    folder = os.path.dirname(path or library_path)
    try:
        with open(os.path.join(folder, INFO_NAME), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _tf_abi() -> int:
    return int(getattr(tf.sysconfig, "CXX11_ABI_FLAG", 1))


def _mismatch(info: dict) -> str | None:
    """Why a built library must not be loaded into this TensorFlow, or None."""
    built = str(info.get("tensorflow") or "")
    running = tf.__version__
    if built and built.split(".")[:2] != running.split(".")[:2]:
        return (f"it was built for TensorFlow {built}, but TensorFlow {running} is running (the op "
                f"uses TensorFlow's C++ ABI, which changes between minor versions)")
    abi = info.get("cxx11_abi")
    if abi is not None and int(abi) != _tf_abi():
        return (f"it was built with _GLIBCXX_USE_CXX11_ABI={abi}, but this TensorFlow "
                f"{running} uses {_tf_abi()}")
    return None


@tf.autograph.experimental.do_not_convert  # runs at trace time; os.path has no source
def load(explicit: bool = False):
    """The op module, or None. Warns (once) as described in the module doc."""
    if "ops" not in _state:
        path = library_path
        ops, error, missing = None, None, None
        info = build_info(path)
        if info is not None and not info.get("native", True):
            missing = f"the install built no native op ({info.get('reason', 'no reason recorded')})"
        elif not os.path.exists(path):
            missing = f"the native op library {path} is not installed"
        elif info is not None and _mismatch(info):
            error = f"{path} is not loaded: {_mismatch(info)}"
        else:
            try:
                ops = tf.load_op_library(path)
            except (tf.errors.NotFoundError, OSError) as e:
                error = f"{path} exists but failed to load: {e}"
        _state.update(ops=ops, error=error, missing=missing, info=info)
        devices = _kernel_devices() if ops is not None else set()
        _state["gpu_kernel"] = "GPU" in devices
        _state["xla_cpu_kernel"] = "XLA_CPU_JIT" in devices
        _state["xla_gpu_kernel"] = "XLA_GPU_JIT" in devices
    if _state["error"]:
        _warn_once("load", f"fusedfocal: the native focal loss op is unavailable: "
                           f"{_state['error']}. Falling back to the pure-TensorFlow path. To fix it, "
                           f"{BUILD_HINT}.")
    elif _state["missing"]:
        if explicit:
            _warn_once("missing", f"fusedfocal: implementation='native' was requested but "
                                  f"{_state['missing']}. Falling back to the pure-TensorFlow path. "
                                  f"To fix it, {BUILD_HINT}.")
        elif _fallback_warning_enabled():
            _warn_once("fallback", f"fusedfocal: {_state['missing']}, so {FALLBACK_COST}. To fix it, "
                                   f"{BUILD_HINT}. `fusedfocal info` shows what runs. To use the "
                                   f"pure-TensorFlow path on purpose, set {WARNING_ENV_VAR}=0 (or "
                                   f"{ENV_VAR}=xla).")
    return _state["ops"]


def _fallback_warning_enabled() -> bool:
    return os.environ.get(WARNING_ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def status() -> dict:
    """What runs where, for this process: the library, its build info, and
    the path a float32 ``implementation="auto"`` call takes in eager/graph
    mode and inside XLA on CPU and on GPU (``fusedfocal info`` prints it).

    Keys: ``library`` (path), ``loaded`` (bool), ``problem`` (why not, or
    None), ``build`` (the build info dict or None), ``tensorflow`` (running
    version), ``gpus`` (visible GPUs), ``eager_graph_cpu``, ``eager_graph_gpu``,
    ``xla_cpu``, ``xla_gpu`` (one of ``"native op"``, ``"native custom call"``,
    ``"pure TensorFlow"`` with the reason), ``implementation_env``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ops = load()
    problem = _state["error"] or _state["missing"]
    pure = "pure TensorFlow"

    def why(text):
        return f"{pure} ({text})"

    if ops is None:
        everywhere = why(problem)
        paths = dict.fromkeys(("eager_graph_cpu", "eager_graph_gpu", "xla_cpu", "xla_gpu"), everywhere)
    else:
        paths = {
            "eager_graph_cpu": "native op",
            "eager_graph_gpu": "native op (CUDA kernel)" if _state["gpu_kernel"]
            else why("the library has no CUDA kernel"),
            "xla_cpu": "native custom call (fusedfocal_focal_loss)" if _state["xla_cpu_kernel"]
            else why("the library has no XLA kernel"),
            "xla_gpu": (why("the CUDA custom call is built but not chosen under 'auto' until "
                            "measured on a GPU; implementation='native' opts in")
                        if _state["xla_gpu_kernel"] else why("the library has no CUDA custom call")),
        }
    env = os.environ.get(ENV_VAR, "").strip().lower() or None
    if env == "xla":
        paths = {k: why(f"{ENV_VAR}=xla") for k in paths}
    return {
        "library": library_path,
        "loaded": ops is not None,
        "problem": problem,
        "build": _state.get("info"),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
        "implementation_env": env,
        **paths,
    }


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
