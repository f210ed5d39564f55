"""The head optimizer of ``FocalHeadModel(..., head_optimizer=...)``, for both Keras flavours.

A head optimizer is a :class:`fusedfocal.ops.head_update.HeadUpdate` rule
plus a learning rate (a float or a Keras ``LearningRateSchedule``, evaluated
at the head's step count). :func:`resolve` turns what a user passes (``"sgd"``,
``"adam"``, a config dict, or a Keras ``SGD``/``Adam`` instance) into a
:class:`HeadOptimizer`; :meth:`HeadOptimizer.get_config` is what the model's
config stores.
"""

from __future__ import annotations

import dataclasses
import numbers

from fusedfocal.ops import _validation as v
from fusedfocal.ops.head_update import OPTIMIZERS, HeadUpdate

# Keras' defaults for the two rules
DEFAULT_LEARNING_RATE = {"sgd": 0.01, "adam": 0.001}
_UPDATE_FIELDS = {f.name for f in dataclasses.fields(HeadUpdate)}
_EXPECTED = ("None, 'sgd', 'adam', a dict (HeadUpdate fields and 'learning_rate'), or a Keras SGD/Adam "
             "optimizer instance")


@dataclasses.dataclass(frozen=True)
class HeadOptimizer:
    """A fused head update rule and its learning rate (float or Keras schedule)."""

    update: HeadUpdate
    learning_rate: object

    def current_learning_rate(self, iterations):
        """The rate for the step about to be taken (a schedule is called with the step count)."""
        lr = self.learning_rate
        return lr(iterations) if callable(lr) else lr

    def get_config(self, lib) -> dict:
        """``update``'s fields and ``learning_rate`` (a schedule serialised with ``lib``)."""
        lr = self.learning_rate
        if callable(lr):
            lr = lib.saving.serialize_keras_object(lr)
        return {**self.update.get_config(), "learning_rate": lr}


def _from_keras_optimizer(opt, lib):
    name = type(opt).__name__.lower()
    if name not in OPTIMIZERS:
        raise v.invalid("head_optimizer", _EXPECTED, f"a Keras {type(opt).__name__} optimizer", describe=True)
    cfg = opt.get_config()
    for key in ("clipnorm", "global_clipnorm"):
        if cfg.get(key) is not None:
            raise v.invalid("head_optimizer", f"no `{key}` (the fused update sees one chunk of the gradient at "
                            "a time; use `clipvalue`)", f"{key}={cfg[key]}", describe=True)
    if cfg.get("amsgrad"):
        raise v.invalid("head_optimizer", "Adam without amsgrad (not supported by the fused update)",
                        "amsgrad=True", describe=True)
    if cfg.get("use_ema"):
        raise v.invalid("head_optimizer", "no `use_ema` (not supported by the fused update)", "use_ema=True",
                        describe=True)
    lr = cfg["learning_rate"]
    if isinstance(lr, dict):
        lr = lib.saving.deserialize_keras_object(lr)
    fields = {"optimizer": name, "weight_decay": cfg.get("weight_decay") or 0.0, "clipvalue": cfg.get("clipvalue")}
    fields.update({k: cfg[k] for k in ("momentum", "nesterov", "beta_1", "beta_2", "epsilon") if k in cfg})
    return fields, lr


def resolve(value, lib) -> HeadOptimizer | None:
    """``head_optimizer`` as a :class:`HeadOptimizer` (or None); raises ValueError naming it."""
    if value is None or isinstance(value, HeadOptimizer):
        return value
    if isinstance(value, str):
        if value not in OPTIMIZERS:
            raise v.invalid("head_optimizer", _EXPECTED, value)
        fields, lr = {"optimizer": value}, DEFAULT_LEARNING_RATE[value]
    elif isinstance(value, dict):
        fields = dict(value)
        unknown = sorted(set(fields) - _UPDATE_FIELDS - {"learning_rate"})
        if unknown:
            raise v.invalid("head_optimizer", f"a dict with keys from {sorted(_UPDATE_FIELDS | {'learning_rate'})}",
                            f"unknown key(s) {unknown}", describe=True)
        name = fields.get("optimizer", "sgd")
        if name not in OPTIMIZERS:
            raise v.invalid("head_optimizer", f"'optimizer' one of {OPTIMIZERS}", f"optimizer={name!r}",
                            describe=True)
        lr = fields.pop("learning_rate", DEFAULT_LEARNING_RATE[name])
        if isinstance(lr, dict):
            lr = lib.saving.deserialize_keras_object(lr)
    elif hasattr(value, "get_config") and hasattr(value, "learning_rate"):
        fields, lr = _from_keras_optimizer(value, lib)
    else:
        raise v.invalid("head_optimizer", _EXPECTED, value)
    if not callable(lr) and (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0):
        raise v.invalid("head_optimizer", "a learning_rate > 0 (or a Keras LearningRateSchedule)",
                        f"learning_rate={lr!r}", describe=True)
    try:
        update = HeadUpdate(**fields)
    except ValueError as err:  # name the user's argument too
        raise ValueError(f"Invalid `head_optimizer`: {err}") from None
    return HeadOptimizer(update, lr if callable(lr) else float(lr))
