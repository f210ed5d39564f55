"""``--encoder PRESET_OR_PATH``: fine-tune a pretrained KerasHub backbone (issue 30).

The stages of ``train`` and ``compare`` with an encoder, each beside today's:

* **prepare** (:func:`open_tokenizer`, :func:`resolve`): the preset's tokenizer replaces the
  WordPiece learning (``--vocab-size`` is its vocabulary); the backbone's architecture is built
  once (random weights) to check that its output is ``[B, H]`` or ``[B, T, H]`` before anything
  is trained. The settings not given are chosen for fine-tuning (:data:`DEFAULTS`, :func:`resolve`).
* **the run folder** (:func:`into_run`): the preset, weights and tokenizer, is copied into
  ``RUN_DIR/encoder/`` before the first step; every later use (the model's build, ``--resume``,
  ``evaluate``, ``predict``) reads it from there, without a network.
* **build** (:func:`build_model`): :func:`fusedfocal.hub.backbone_encoder` (pooled/``[CLS]``
  features, ``--dropout``), then the dense head (a float32 ``Dense`` at the prior log-odds, any
  loss) or :class:`fusedfocal.keras.FocalHead` (``--head fused``); Adam (or ``--optimizer sgd``)
  on :func:`fusedfocal.hub.fine_tuning_schedule`: ``--warmup`` linear warm-up to
  ``--learning-rate``, then cosine decay to 0 at the last step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fusedfocal.cli.errors import CLIError, log

__all__ = ["ENCODER_DIR", "MODEL_NAME", "DEFAULTS", "SETTINGS", "keras_hub_or_error", "open_tokenizer",
           "mixed_precision_rule", "into_run", "build_model", "check_run_encoder"]

ENCODER_DIR = "encoder"
MODEL_NAME = "encoder"  # args.model of an --encoder run
# Fine-tuning defaults: Devlin et al. 2019 (BERT) fine-tune with Adam at 5e-5, 3e-5 or 2e-5, batch 16 or
# 32, 2-4 epochs, warm-up over 10% of the steps, dropout 0.1; KerasHub's text classifiers compile Adam 5e-5.
DEFAULTS = {"optimizer": "adam", "learning_rate": 5e-5, "batch_size": 32, "warmup": 0.1, "min_epochs": 3,
            "max_epochs": 10}
# what compare copies from the first seed's resolution to the others (beside settings.RESOLVED)
SETTINGS = ("warmup", "mixed_precision")
_WHY = "BERT's fine-tuning recipe (Devlin et al. 2019; KerasHub's classifiers compile Adam 5e-5)"


def keras_hub_or_error(flag="--encoder"):
    """``import keras_hub``, or a CLI error naming ``flag`` with what to install."""
    from fusedfocal import hub

    try:
        return hub.require_keras_hub(f"{flag}")
    except ImportError as e:
        raise CLIError(flag, f"expected KerasHub to be installed to use {flag}: pip install fusedfocal[hub] "
                             f"(keras-hub>=0.32,<0.33); received an import error ({e.__cause__ or e})")


def _load(source, flag, load_weights):
    from fusedfocal import hub

    keras_hub_or_error(flag)
    try:
        return hub.load_preset(source, load_weights=load_weights)
    except ValueError as e:
        raise CLIError(flag, str(e).replace("argument `preset`", flag).replace("Invalid value for ", ""))


def _check_features(backbone, pad_id, flag):
    from fusedfocal import hub

    try:
        hub.backbone_encoder(backbone, pad_token_id=pad_id, dropout=0)
    except ValueError as e:
        raise CLIError(flag, f"expected a backbone whose output is [B, H] or [B, T, H] (or KerasHub's dict with "
                             f"'pooled_output' or 'sequence_output'); received {type(backbone).__name__}: "
                             f"{str(e).split('Received: ')[-1]}")


def open_tokenizer(source, run_dir=None):
    """``(tokenizer, source, max_positions)`` of the preset ``source``: the run folder's copy where a
    resumed run has one; the backbone's architecture checked (random weights)."""
    if run_dir is not None and (Path(run_dir) / ENCODER_DIR / "config.json").exists():
        source = str(Path(run_dir) / ENCODER_DIR)
    backbone, tokenizer = _load(source, "--encoder", load_weights=False)
    _check_features(backbone, tokenizer.pad_token_id, "--encoder")
    return tokenizer, source, int(getattr(backbone, "max_sequence_length", 512) or 512)


def mixed_precision_rule(gpus):
    """``(policy, why)`` for ``--encoder`` from the GPUs' compute capabilities (``[(major, minor)]``)."""
    if not gpus:
        return "off", ("no GPU: on the CPU mixed precision does not speed a step up (float32 math either way; "
                       "bfloat16 casts cost)")
    cc = min(gpus)
    if cc >= (8, 0):
        return "bfloat16", f"a GPU of compute capability {cc[0]}.{cc[1]} (>= 8.0) computes in bfloat16 (no loss scaling)"
    if cc >= (7, 0):
        return "float16", f"a GPU of compute capability {cc[0]}.{cc[1]} (7.x: float16 tensor cores)"
    return "off", f"a GPU of compute capability {cc[0]}.{cc[1]} (< 7.0: no fast half precision)"


def _gpu_capabilities():
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc:
            out.append(tuple(cc))
    return out


def _copy_preset(source, target):
    """``source`` (a local preset directory, or a name KerasHub resolves) into ``target``, atomically."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".encoder-"))
    try:
        if Path(source).is_dir():
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        else:
            backbone, tokenizer = _load(source, "--encoder", load_weights=True)
            backbone.save_to_preset(str(tmp))
            tokenizer.save_to_preset(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def into_run(encoder, prep, run_dir, *, chief, resume):
    """Copies the preset ``encoder`` (``--encoder``) into ``RUN_DIR/encoder/`` (unless a resumed run
    has it) and points the build at that copy; a no-op without one."""
    if not encoder:
        return
    target = Path(run_dir) / ENCODER_DIR
    if chief and not (resume and (target / "config.json").exists() and (target / "tokenizer.json").exists()):
        _copy_preset(prep.encoder, target)
        log(f"Encoder {encoder}: preset copied into {target}")
    if chief:
        prep.encoder = str(target)


def build_model(model_cfg, head_cfg, optim, prep, loss_name, loss_params, *, jit_compile, fused_adam):
    """The compiled model of an ``--encoder`` run (call inside the strategy's scope): the backbone of
    ``prep.encoder`` (the run folder's copy) and the dense head or, with ``prep.head == "fused"``,
    :class:`fusedfocal.keras.FocalHeadModel` (the fused head's loss, rules and bias as
    :func:`fusedfocal.cli.stages.fused.build_model`); the optimizer on
    :func:`fusedfocal.hub.fine_tuning_schedule` (``--warmup``, then cosine decay to 0)."""
    import keras

    from fusedfocal import hub
    from fusedfocal.cli.stages import build, fused, models
    from fusedfocal.cli.stages.lossargs import build_loss

    backbone, _ = _load(prep.encoder, "--encoder", load_weights=True)
    pipe = prep.pipeline
    pad = pipe.tokenizer_spec.pad_id
    priors = prep.fit_counts / max(prep.fit_docs, 1)
    total = max(1, len(prep.fit[0]) // optim.batch_size) * int(optim.epochs)
    rate = hub.fine_tuning_schedule(optim.learning_rate, total, warmup_fraction=optim.warmup or 0.0)
    optimizer = build.make_optimizer(optim, fused_adam=fused_adam, rate=rate)
    if prep.head != "fused":
        model = hub.build_classifier(backbone, pipe.num_labels, pad_token_id=pad, dropout=model_cfg.dropout,
                                     seed=model_cfg.seed, priors=priors if model_cfg.prior_bias else None,
                                     name="fusedfocal_encoder")
        loss = build_loss(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
        model.compile(optimizer=optimizer, loss=loss, loss_weights=float(pipe.num_labels), jit_compile=jit_compile)
        return model
    from fusedfocal import keras as fk

    kw = fused.head_kwargs(loss_name, loss_params, prep.fit_counts, prep.fit_docs)
    kw["class_weights"] = pipe.num_labels * kw.get("class_weights", np.ones(pipe.num_labels))  # the sum over labels
    encoder = hub.backbone_encoder(backbone, pad_token_id=pad, dropout=model_cfg.dropout, seed=model_cfg.seed)
    shards = head_cfg.label_shards
    head = fk.FocalHead(pipe.num_labels, top_k=min(fused.K, pipe.num_labels), dtype="float32", name="focal_head",
                        kernel_initializer=keras.initializers.GlorotUniform(seed=model_cfg.seed),
                        weight_dtype=head_cfg.head_dtype or "float32", **fused.shard_kwargs(shards, pipe.num_labels),
                        **kw)
    model = fk.FocalHeadModel(encoder, head, head_optimizer=fused.head_optimizer_config(head_cfg, optim),
                              encoder_devices=None if shards is None else "shards", name="fusedfocal_encoder_fused")
    import tensorflow as tf

    dummy = {"token_ids": tf.fill([1, model_cfg.max_length], pad)}
    head(encoder(dummy))
    model(dummy)  # builds every weight (checkpoints load into them)
    if model_cfg.prior_bias:
        head.set_bias((models.prior_logits(priors) - kw.get("logit_offsets", 0.0)).astype(np.float32))
    fused.log_layout(head, optim.batch_size, encoder)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def check_run_encoder(given, stored, run_dir):
    """``evaluate``/``predict --encoder``: must be the run's own (``stored``: its ``--encoder``, read
    from ``RUN_DIR/encoder/``)."""
    if given is not None and given != stored:
        raise CLIError("--encoder", f"expected the run's encoder ({stored or 'none: the run trained a model from scratch'}"
                                    f", read from {Path(run_dir) / ENCODER_DIR}) or no --encoder; received {given}")
