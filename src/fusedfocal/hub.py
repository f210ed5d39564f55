"""``fusedfocal.hub``: fine-tune a pretrained KerasHub backbone with the fused losses or the fused head.

KerasHub (``pip install fusedfocal[hub]``, which pins ``keras-hub``) provides the backbones
(BERT, DistilBERT, RoBERTa, DeBERTa-v3, ...) and their tokenizers; this module joins them to
this package's pieces, in Keras 3:

* :func:`load_preset`: the backbone and the tokenizer of a preset (a KerasHub preset name such as
  ``"bert_base_en_uncased"``, a ``kaggle://`` or ``hf://`` handle, or a local preset directory),
  with errors naming the ``preset`` argument;
* :func:`backbone_encoder`: a ``keras.Model`` from ``{"token_ids": int32 [B, T]}`` (what
  :class:`fusedfocal.data.TextPipeline` emits) to features ``[B, H]``: the backbone's
  ``pooled_output`` where it has one (BERT), else its first token's (``[CLS]``/``<s>``)
  ``[B, T, H]`` output; the padding mask and segment ids are built from the token ids;
* :func:`build_classifier`: that encoder, dropout and a float32 ``Dense`` logits layer (its bias
  at the labels' prior log-odds if given), for any fusedfocal loss;
* :func:`fine_tuning_schedule`: linear warm-up, then cosine decay to 0 (BERT's recipe
  warms up over 10% of the steps).

The recipe (``docs/guide.md``, "Fine-tuning a pretrained encoder")::

    import keras, keras_hub
    from fusedfocal import data, hub
    from fusedfocal.keras import SigmoidFocalLoss, FocalHead, FocalHeadModel

    backbone, tokenizer = hub.load_preset("bert_base_en_uncased")
    config = data.PipelineConfig(max_length=128, batch_size=32, fixed_shape=True)
    pipe = data.TextPipeline(config, None, data.LabelVocab.build(train_y), tokenizer=tokenizer)
    model = hub.build_classifier(backbone, pipe.num_labels, pad_token_id=tokenizer.pad_token_id)
    steps = 3 * (len(train_x) // 32)
    model.compile(keras.optimizers.Adam(hub.fine_tuning_schedule(5e-5, steps)), SigmoidFocalLoss(gamma=2.0))
    model.fit(pipe.dataset(train_x, train_y, training=True).repeat(), epochs=3, steps_per_epoch=steps // 3)

    # or the fused head (labels as padded ids: PipelineConfig(label_format="padded_ids")):
    encoder = hub.backbone_encoder(backbone, pad_token_id=tokenizer.pad_token_id)
    model = FocalHeadModel(encoder, FocalHead(pipe.num_labels, gamma=2.0))

tf_keras (Keras 2) is not supported: KerasHub is Keras 3 only (``fusedfocal.legacy``'s losses
train tf_keras models, but no KerasHub backbone runs in one).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["INSTALL_HINT", "require_keras_hub", "load_preset", "load_tokenizer", "backbone_encoder", "build_classifier",
           "fine_tuning_schedule", "check_features"]

#: What to install for this module.
INSTALL_HINT = "pip install fusedfocal[hub]  (installs keras-hub>=0.32,<0.33)"
_INPUTS = ("token_ids", "padding_mask", "segment_ids")


def require_keras_hub(what="fusedfocal.hub"):
    """``import keras_hub``, or an ``ImportError`` saying what needs it and what to install."""
    try:
        import keras_hub
    except ImportError as e:
        raise ImportError(f"{what} needs KerasHub, which is not installed: {INSTALL_HINT}. ({e})") from e
    return keras_hub


def load_preset(preset, *, load_weights=True, dtype=None):
    """The backbone and the tokenizer of a KerasHub preset.

    Args:
      preset: A KerasHub preset name (``"bert_base_en_uncased"``), a Kaggle or Hugging Face handle
        (downloaded by KerasHub, then cached), or a local preset directory (``save_to_preset``).
      load_weights: Load the preset's weights (``False``: random weights, the architecture only).
      dtype: The backbone's dtype policy (``None``: Keras' global policy, e.g. mixed precision).

    Returns:
      ``(backbone, tokenizer)``.

    Raises:
      ValueError: unknown preset, a directory without a backbone config or a tokenizer.
    """
    import os

    keras_hub = require_keras_hub()
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        missing = [f for f in ("config.json", "tokenizer.json") if not os.path.exists(os.path.join(preset, f))]
        if missing:
            what = "backbone config" if missing[0] == "config.json" else "tokenizer"
            raise ValueError(f"Invalid value for argument `preset`. Expected a KerasHub preset directory with a "
                             f"backbone (config.json) and a tokenizer (tokenizer.json). Received: {preset!r}, "
                             f"which has no {what} ({', '.join(missing)} missing)")
    elif preset.startswith((".", "/", "~")):
        raise ValueError(f"Invalid value for argument `preset`. Expected a KerasHub preset name, a kaggle:// or "
                         f"hf:// handle, or an existing preset directory. Received: {preset!r}, which does not exist")
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights, **kwargs)
        tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ValueError(f"Invalid value for argument `preset`. Expected a KerasHub preset name (e.g. "
                         f"'bert_base_en_uncased'), a kaggle:// or hf:// handle, or a local preset directory. "
                         f"Received: {preset!r} ({type(e).__name__}: {e})") from e
    return backbone, tokenizer


def load_tokenizer(preset):
    """The tokenizer of a KerasHub preset (see :func:`load_preset`) without its backbone; importing
    KerasHub also registers the classes a saved model (``model.keras``) names."""
    import os

    keras_hub = require_keras_hub()
    if os.path.isdir(os.fspath(preset)) and not os.path.exists(os.path.join(os.fspath(preset), "tokenizer.json")):
        raise ValueError(f"Invalid value for argument `preset`. Expected a KerasHub preset directory with a "
                         f"tokenizer (tokenizer.json). Received: {os.fspath(preset)!r}, which has none")
    try:
        return keras_hub.tokenizers.Tokenizer.from_preset(os.fspath(preset))
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ValueError(f"Invalid value for argument `preset`. Expected a KerasHub preset with a tokenizer. "
                         f"Received: {os.fspath(preset)!r} ({type(e).__name__}: {e})") from e


def check_features(output, name="backbone"):
    """The ``[B, H]`` features of a backbone's symbolic ``output``: itself if ``[B, H]``, its first
    token's if ``[B, T, H]``; a dict's ``pooled_output``, else its ``sequence_output``'s first token.
    Raises ``ValueError`` for anything else (``name`` names the argument in the message)."""
    if isinstance(output, dict):
        key = "pooled_output" if "pooled_output" in output else "sequence_output"
        if key not in output:
            raise ValueError(f"Invalid value for argument `{name}`. Expected an output of shape [B, H] or "
                             f"[B, T, H], or a dict with 'pooled_output' or 'sequence_output'. Received: a dict "
                             f"with {sorted(output)}")
        output = output[key]
    shape = tuple(getattr(output, "shape", ()) or ())
    if len(shape) == 3:
        return output[:, 0, :]
    if len(shape) != 2:
        raise ValueError(f"Invalid value for argument `{name}`. Expected an output of shape [B, H] or [B, T, H]. "
                         f"Received: shape {list(shape)}")
    return output


def backbone_encoder(backbone, *, pad_token_id=0, dropout=0.1, seed=0, name=None):
    """``{"token_ids": int32 [B, T]}`` -> features ``[B, H]`` through ``backbone`` (see the module
    docstring), for :class:`fusedfocal.keras.FocalHeadModel` or a Dense head.

    Args:
      backbone: A KerasHub backbone (or any Keras model taking ``token_ids`` and optionally
        ``padding_mask`` and ``segment_ids``).
      pad_token_id: The tokenizer's padding id: the padding mask is ``token_ids != pad_token_id``.
      dropout: Dropout on the features (BERT's classifier uses 0.1).
      seed: The dropout's seed.
      name: The model's name.

    Returns:
      A functional ``keras.Model``.
    """
    wanted = _backbone_inputs(backbone)
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    feed = {"token_ids": ids}
    if "padding_mask" in wanted:
        feed["padding_mask"] = ops.cast(ops.not_equal(ids, int(pad_token_id)), "int32")
    if "segment_ids" in wanted:
        feed["segment_ids"] = ops.zeros_like(ids)
    out = backbone(feed if wanted else ids)
    features = check_features(out)
    if dropout:
        features = keras.layers.Dropout(dropout, seed=seed, name="encoder_dropout")(features)
    return keras.Model({"token_ids": ids}, features, name=name or f"{backbone.name}_encoder")


def _backbone_inputs(backbone):
    inputs = getattr(backbone, "input", None)
    if isinstance(inputs, dict):
        extra = sorted(set(inputs) - set(_INPUTS))
        if extra or "token_ids" not in inputs:
            raise ValueError(f"Invalid value for argument `backbone`. Expected inputs among {list(_INPUTS)} with "
                             f"'token_ids'. Received: {sorted(inputs)}")
        return set(inputs)
    return set()  # one tensor input: the token ids


def build_classifier(backbone, num_labels, *, pad_token_id=0, dropout=0.1, seed=0, priors=None, name=None):
    """:func:`backbone_encoder`, then a float32 ``Dense(num_labels)``: logits ``[B, C]`` for any
    fusedfocal loss (mixed precision keeps the logits and the loss in float32).

    Args:
      backbone: See :func:`backbone_encoder`.
      num_labels: Number of labels ``C``.
      pad_token_id: See :func:`backbone_encoder`.
      dropout: See :func:`backbone_encoder`.
      seed: The dropout's and the kernel initializer's seed.
      priors: Optional training priors ``[C]`` (documents with the label / documents): the bias
        starts at ``log(p / (1 - p))``, so every label starts calibrated.
      name: The model's name.

    Returns:
      A functional ``keras.Model`` from ``{"token_ids"}`` to logits.
    """
    import numpy as np

    encoder = backbone_encoder(backbone, pad_token_id=pad_token_id, dropout=dropout, seed=seed)
    dense = keras.layers.Dense(int(num_labels), dtype="float32", name="logits",
                               kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=seed))
    logits = dense(encoder(encoder.input))
    model = keras.Model(encoder.input, logits, name=name or f"{backbone.name}_classifier")
    if priors is not None:
        p = np.clip(np.asarray(priors, np.float64), 1e-6, 1 - 1e-6)
        dense.bias.assign((np.log(p) - np.log1p(-p)).astype(np.float32))
    return model


def fine_tuning_schedule(learning_rate, total_steps, *, warmup_fraction=0.1):
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_fraction`` of ``total_steps``,
    then cosine decay to 0 at ``total_steps`` (a ``keras.optimizers.schedules.CosineDecay``)."""
    total = max(int(total_steps), 1)
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"Invalid value for argument `warmup_fraction`. Expected a float in [0, 1). "
                         f"Received: {warmup_fraction!r}")
    warmup = int(round(warmup_fraction * total))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else float(learning_rate), decay_steps=max(total - warmup, 1), alpha=0.0,
        warmup_target=float(learning_rate) if warmup else None, warmup_steps=warmup)
