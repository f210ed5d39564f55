"""The loss stage: loss parameters from their flags, the loss name checked, the Keras loss built.

Each parameter travels with the flag it came from (``{param: (value, flag)}``), so an error is
reported under that flag: ``--gamma`` as ``--gamma``, an item of ``--losses`` as ``--losses``.
"""

from __future__ import annotations

import numpy as np

from fusedfocal.cli.errors import CLIError

__all__ = ["parse_value", "tagged_params", "check_loss_name", "build_loss", "loss_parameters", "loss_label"]

_FLAG_PARAMS = {"gamma": "--gamma", "alpha": "--alpha", "gamma_neg": "--gamma-neg", "gamma_pos": "--gamma-pos",
                "clip": "--clip", "beta": "--beta", "label_smoothing": "--label-smoothing"}


def parse_value(text):
    """``'none'`` -> None, ``'true'/'false'`` -> bool, numbers, ``'a/b/c'`` -> list of floats."""
    t = str(text).strip()
    if t.lower() in ("none", "null"):
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if "/" in t:
        return [float(x) for x in t.split("/")]
    try:
        return int(t) if t.lstrip("-").isdigit() else float(t)
    except ValueError:
        return t


def tagged_params(loss_cfg):
    """Loss parameters of a :class:`~fusedfocal.cli.spec.LossConfig`: the dedicated flags and
    ``--loss-param KEY=VALUE``; ``{param: (value, flag)}``."""
    params = {}
    for key, flag in _FLAG_PARAMS.items():
        value = getattr(loss_cfg, key)
        if value is not None:
            try:
                params[key] = (parse_value(value) if key == "alpha" else value, flag)
            except ValueError:
                raise CLIError(flag, f"expected a float, 'none' or floats joined by '/'; received {value!r}")
    for item in loss_cfg.loss_param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError("--loss-param", f"expected KEY=VALUE; received {item!r}")
        try:
            params[key.strip().replace("-", "_")] = (parse_value(value), "--loss-param")
        except ValueError:
            raise CLIError("--loss-param", f"expected KEY=VALUE with a number, 'none' or floats joined by '/'; "
                                           f"received {item!r}")
    return params


def check_loss_name(name, flag):
    """The one check of a loss name (``--loss`` or an item of ``--losses``) against the registry."""
    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    if name not in losses.NAMES:
        raise CLIError(flag, f"invalid loss {name!r}; expected one of {', '.join(losses.NAMES)}")


def build_loss(name, params, class_counts, num_docs, flag="--loss"):
    """A Keras 3 loss from the registry (``name`` checked by :func:`check_loss_name`); bad parameters
    become CLI errors naming the flag each was given with."""
    import re

    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    values = {k: v for k, (v, _) in params.items()}
    num_labels = len(class_counts)
    for k, (v, f) in params.items():  # per-label vectors: one value per label, checked before any training
        if isinstance(v, list) and len(v) != num_labels:
            shown = f"--losses {k}=" if f == "--losses" else (f"{f} " if f != "--loss-param" else f"--loss-param {k}=")
            raise CLIError(f, (f"expected one value per label for {k} ({num_labels} labels in the training data, "
                               f"in label_vocab.json order) or a single value; received {len(v)} values "
                               f"({shown}{'/'.join(map(str, v))})"))
    counts = np.maximum(np.asarray(class_counts, np.int64), 1)  # a label seen only in validation

    def culprit(msg):  # the flag of the parameter the message is about, matched as a whole word
        return next((f for k, (_, f) in params.items() if re.search(rf"(`{k}`|'{k}'|\b{k}=)", msg)), None)

    try:
        return losses.get(name, class_counts=counts, num_docs=int(num_docs), **values)
    except TypeError as e:
        raise CLIError(culprit(str(e)) or (flag if flag != "--loss" else "--loss-param"),
                       f"expected parameters that loss {name!r} takes ({', '.join(loss_parameters(name))}); "
                       f"received {', '.join(values)} ({e})")
    except ValueError as e:
        msg = str(e)
        raise CLIError(culprit(msg) or flag, f"invalid parameter of loss {name!r}: {msg}")


def loss_parameters(name):
    """The keyword parameters of a loss class (those the command line can pass)."""
    import inspect

    from fusedfocal import keras as fk
    from fusedfocal import keras as losses  # the loss registry: NAMES, get

    skip = {"self", "reduction", "name", "dtype", "class_counts", "num_docs", "args", "kwargs"}
    sig = inspect.signature(getattr(fk, losses.NAMES[name]).__init__)
    return [k for k in sig.parameters if k not in skip] or ["none"]


def loss_label(name, params):
    """``name(k=v,...)`` of the parameters given (tagged ``{param: (value, flag)}`` or plain); the
    command line's defaults (flag ``"default"``) are left out, so the label names what was asked."""
    if params and isinstance(next(iter(params.values())), tuple):
        vals = {k: v for k, (v, flag) in params.items() if flag != "default"}
    else:
        vals = params
    if not vals:
        return name
    return name + "(" + ",".join(f"{k}={v}" for k, v in vals.items()) + ")"
