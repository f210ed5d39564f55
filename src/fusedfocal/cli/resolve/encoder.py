"""The resolver's part of ``--encoder``: the settings of a fine-tuning run, chosen from the preset
and the data (:func:`resolve`), and the preset opened with ``--max-length`` checked against it."""

from __future__ import annotations

import math

import numpy as np

from fusedfocal.cli.errors import CLIError
from fusedfocal.cli.stages.encoder import _WHY, DEFAULTS, MODEL_NAME, _gpu_capabilities, mixed_precision_rule
from fusedfocal.cli.stages.encoder import open_tokenizer as _open

__all__ = ["open_tokenizer", "resolve"]


def open_tokenizer(args, run_dir=None):
    """``(tokenizer, source, max_positions)`` of ``--encoder`` (the run folder's copy on ``--resume``);
    ``--max-length`` must fit the backbone's position embeddings."""
    tokenizer, source, positions = _open(args.encoder, run_dir)
    if getattr(args, "max_length", None) and args.max_length > positions:
        raise CLIError("--max-length", f"expected at most {positions} with --encoder {args.encoder} (its position "
                                       f"embeddings); received {args.max_length}")
    return tokenizer, source, positions


def resolve(args, lengths, *, vocab_tokens, documents, val_docs, positions):
    """The settings of an ``--encoder`` run still ``None`` on ``args``, in place; returns
    ``{name: Setting}`` (shown by :func:`fusedfocal.cli.resolve.settings.block`, stored in ``config.json``).

    ``--max-length`` as for every model (the 95th percentile of the preset tokenizer's tokens, up to
    the backbone's positions); the optimizer, rate, batch size and warm-up from :data:`DEFAULTS`;
    ``--epochs`` about :data:`fusedfocal.cli.resolve.settings.STEP_BUDGET` steps within [3, 10];
    ``--mixed-precision`` by :func:`mixed_precision_rule` unless given."""
    from fusedfocal.cli.resolve import settings as st

    if getattr(args, "model", None) not in (None, MODEL_NAME):
        raise CLIError("--model", f"expected no --model with --encoder (the encoder is the model); received "
                                  f"{args.model}")
    out = {"encoder": st.Setting(args.encoder, "flag", "given")}
    args.model = MODEL_NAME
    args.vocab_size = int(vocab_tokens)
    for name in ("ngram_hidden", "ngram_bigrams"):  # not used; stored as the n-gram model's defaults
        if getattr(args, name, None) is None:
            setattr(args, name, st.MODEL_DEFAULTS["ngram"][name])
    lengths = np.asarray(lengths)
    p95 = int(math.ceil(np.percentile(lengths, st.LENGTH_PERCENTILE))) if lengths.size else 0
    if args.max_length is None:
        args.max_length = int(min(positions, max(st.MIN_LENGTH, st.LENGTH_STEP * math.ceil(p95 / st.LENGTH_STEP))))
        cut = int((lengths > args.max_length).sum())
        out["max_length"] = st.Setting(args.max_length, "data", (
            f"the {st.LENGTH_PERCENTILE}th percentile of the preset tokenizer's tokens per training document, {p95}, "
            f"rounded up to a multiple of {st.LENGTH_STEP} within [{st.MIN_LENGTH}, {positions}] (the backbone's "
            f"positions): truncates {cut:,} of {lengths.size:,} documents"))
    else:
        out["max_length"] = st.Setting(args.max_length, "flag", "given")
    out["vocab_size"] = st.Setting(args.vocab_size, "model", "the preset tokenizer's vocabulary (nothing is learnt)")
    for name in ("optimizer", "learning_rate", "batch_size", "warmup"):
        if getattr(args, name, None) is not None:
            out[name] = st.Setting(getattr(args, name), "flag", "given")
        else:
            setattr(args, name, DEFAULTS[name])
            why = _WHY if name != "warmup" else (f"{_WHY}: linear warm-up over this share of the steps to "
                                                 "--learning-rate, then cosine decay to 0 at the last step")
            out[name] = st.Setting(DEFAULTS[name], "model", why)
    if getattr(args, "adam_epsilon", None) is None:
        args.adam_epsilon = st.ADAM_EPSILON
    steps = max(1, max(documents - val_docs, 1) // args.batch_size)
    if args.epochs is None:
        args.epochs = int(min(DEFAULTS["max_epochs"], max(DEFAULTS["min_epochs"], math.ceil(st.STEP_BUDGET / steps))))
        out["epochs"] = st.Setting(args.epochs, "data", (
            f"about {st.STEP_BUDGET} optimizer steps ({steps} an epoch) within [{DEFAULTS['min_epochs']}, "
            f"{DEFAULTS['max_epochs']}] (BERT fine-tunes 2-4 epochs; rare labels need more steps); early stopping "
            f"ends a run sooner"))
    else:
        out["epochs"] = st.Setting(args.epochs, "flag", f"given ({steps} steps an epoch)")
    if getattr(args, "patience", None) is None:
        args.patience = 3
    if getattr(args, "mixed_precision_given", False):
        out["mixed_precision"] = st.Setting(args.mixed_precision, "flag", "given")
    else:
        args.mixed_precision, why = mixed_precision_rule(_gpu_capabilities())
        out["mixed_precision"] = st.Setting(args.mixed_precision, "data", why)
    return out
