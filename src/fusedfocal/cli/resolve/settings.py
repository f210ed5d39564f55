"""The resolve stage of ``train`` and ``compare``: every setting the user did not give, chosen by a
stated rule from the data or from the model's own defaults.

A flag given on the command line always wins. The others are chosen here, in this order, each from
what the step before it fixed:

1. ``--vocab-size``: an upper bound of :data:`VOCAB_CAP`; the WordPiece learner keeps every piece
   seen at least 5 times in the training text, so the corpus sets the size below the cap.
2. ``--model`` (from the WordPiece tokens per training document): ``ngram`` when the 95th
   percentile is above :data:`LONG_DOCUMENT` tokens, else ``cnn``.
3. ``--max-length``: that 95th percentile rounded up to a multiple of 32, within
   [:data:`MIN_LENGTH`, :data:`MAX_LENGTH`].
4. ``--optimizer``, ``--learning-rate``, ``--batch-size`` (and ``--ngram-hidden``,
   ``--ngram-bigrams``): the model's defaults, :data:`MODEL_DEFAULTS`.
5. ``--epochs``: about :data:`STEP_BUDGET` optimizer steps, within [:data:`MIN_EPOCHS`,
   :data:`MAX_EPOCHS`]; early stopping (``--patience``) ends a run that stops improving.
6. The fused head's ``--head-optimizer``, ``--head-dtype`` and ``--head-learning-rate``
   (:func:`resolve_head`, :data:`HEAD_SETTINGS`): today's shared optimizer and float32 weights
   unless given (a bfloat16 head gets the run's ``--optimizer`` as a fused update); the rate of a
   fused update is ``--learning-rate`` when its rule is ``--optimizer``, else that rule's
   :data:`OPTIMIZER_RATES`.

:func:`resolve_vocab` and :func:`resolve` record each choice as a :class:`Setting` (value, source,
why); the run prints them in one block (:func:`block`) and stores them in ``config.json``, whose
``args`` then hold the values, so ``--resume`` reuses them as they are. The rules and the
measurements behind them are in ``docs/cli.md#settings-chosen-from-the-data``.
"""

from __future__ import annotations

import math

import numpy as np

from fusedfocal.cli.spec import Setting, settings_from_json

__all__ = ["Setting", "MODEL_DEFAULTS", "OPTIMIZER_RATES", "resolve_vocab", "resolve", "resolve_head", "block",
           "restored", "RESOLVED", "HEAD_SETTINGS", "HEAD_DEFAULT_WHY", "LOSS_DEFAULTS", "FOCAL_GAMMA",
           "with_loss_defaults", "loss_settings",
           "VOCAB_CAP", "LONG_DOCUMENT", "MIN_LENGTH", "MAX_LENGTH", "STEP_BUDGET", "MIN_EPOCHS", "MAX_EPOCHS",
           "LENGTH_PERCENTILE"]

VOCAB_CAP = 30000
LENGTH_PERCENTILE = 95
LONG_DOCUMENT = 256
MIN_LENGTH, MAX_LENGTH, LENGTH_STEP = 32, 512, 32
STEP_BUDGET = 1200
MIN_EPOCHS, MAX_EPOCHS = 3, 20

# What each model trains best with, as measured (docs/results.md): the CNN's on the built-in corpus,
# the n-gram models' on Reuters-21578. The learning rates are for the command line's training loss,
# the sum over labels (see train.build): Adam does not care, SGD's rate then does not depend
# on the label count.
MODEL_DEFAULTS = {
    "cnn": {"optimizer": "adam", "learning_rate": 2e-3, "batch_size": 32},
    "fasttext": {"optimizer": "adam", "learning_rate": 2e-3, "batch_size": 32},
    "transformer": {"optimizer": "adam", "learning_rate": 2e-3, "batch_size": 32},
    # Adam's epsilon 9e-6 (1e-7 x Reuters' 90 labels, what it amounted to when the loss averaged
    # over them) damps the steps of rare n-grams, whose gradients are tiny: measured on Reuters,
    # 52.5-54.1 macro-F1 with it and 51.3 with 1e-7 (docs/results.md).
    "ngram": {"optimizer": "adam", "learning_rate": 1e-2, "batch_size": 64, "ngram_hidden": 256,
              "ngram_bigrams": 0, "adam_epsilon": 9e-6},
    # --ngram-hidden 0, the linear model: SGD keeps it near the small-norm solution as an SVM's
    # solver does (Adam lets rare n-grams memorise the training set): 30 / 90 labels of the
    # measured squared-hinge recipe, whose loss then averaged over Reuters' 90 labels.
    "ngram-linear": {"optimizer": "sgd", "learning_rate": 0.33, "batch_size": 64},
}
# The rate of an optimizer the user chose against the model's default, when no rate is given.
OPTIMIZER_RATES = {"adam": 2e-3, "sgd": 0.33}
ADAM_EPSILON = 1e-7  # Keras' default
MODEL_NOTES = {
    "cnn": "the CNN's defaults",
    "fasttext": "fastText's defaults (not tuned beyond the CNN's)",
    "transformer": "the transformer's defaults (not tuned beyond the CNN's)",
    "ngram": "the n-gram model's defaults (tuned on Reuters-21578)",
    "ngram-linear": "the linear n-gram model's defaults: SGD, as a linear SVM's solver (tuned on Reuters-21578)",
}

# Shown in this order; the values end up in args and config.json.
RESOLVED = ("model", "ngram_hidden", "ngram_bigrams", "max_length", "vocab_size", "optimizer", "learning_rate",
            "adam_epsilon", "batch_size", "epochs", "patience")
# The fused head's own settings (resolve_head), after those; the dense head has none of them.
HEAD_SETTINGS = ("head_optimizer", "head_dtype", "head_learning_rate")
FLAGS = {k: "--" + k.replace("_", "-") for k in RESOLVED + HEAD_SETTINGS}
FLAGS["focal_gamma"] = "--gamma"
# The command line's loss parameters where they differ from the library's (Keras' drop-in defaults):
# each given to the loss as if by its flag, recorded with the source "default" (the loss's label
# and run folder keep the loss's name) and in metrics.json's loss_params.
FOCAL_GAMMA = 0.5
FOCAL_GAMMA_WHY = ("focal's gamma with the dense head (the library's default, detection's 2, stays for the "
                   "classes and the fused head): the one value measured at or above BCE's macro-F1 on both "
                   "Reuters-21578 (n-gram model, 3 seeds: 45.0 vs 44.0; gamma 2: 41.4) and the built-in corpus "
                   "(CNN: 56.0 vs 53.5); on the fused head gamma 2 ranks better (synthetic XMC corpus, 20 labels "
                   "a document: P@1 98.2 vs 96.1); docs/results.md, issue 28")
# per head: the fused head keeps the library's defaults (measured, see FOCAL_GAMMA_WHY)
LOSS_DEFAULTS = {"dense": {"focal": {"gamma": FOCAL_GAMMA}}, "fused": {}}
# Why --head-optimizer shared and --head-dtype float32 are the defaults.
HEAD_DEFAULT_WHY = ("today's behaviour: --optimizer trains the head with the encoder, float32 weights. "
                    "--head-optimizer adam --head-dtype bfloat16 (a fused update, no kernel-sized gradient) "
                    "measured the same P@1/P@5/PSP@5 with 7x less step memory on the synthetic XMC corpus, one "
                    "corpus only, so not yet the default (docs/xmc.md, the head-memory section)")


def _given(args, name):
    return getattr(args, name, None) is not None


def resolve_vocab(args):
    """``--vocab-size`` when not given: the cap, which the corpus undercuts. Sets ``args.vocab_size``;
    returns ``{"vocab_size": Setting}`` (its ``why`` is completed by :func:`resolve` once the
    vocabulary is learnt)."""
    if _given(args, "vocab_size"):
        return {"vocab_size": Setting(args.vocab_size, "flag", "given")}
    args.vocab_size = VOCAB_CAP
    return {"vocab_size": Setting(VOCAB_CAP, "data", "an upper bound; the learner keeps every piece seen >= 5 times")}


def _round_length(p):
    return int(min(MAX_LENGTH, max(MIN_LENGTH, LENGTH_STEP * math.ceil(p / LENGTH_STEP))))


def resolve(args, lengths, *, documents, vocab_tokens, val_docs, settings=None, head="dense"):
    """Resolves every setting of :data:`RESOLVED` still ``None`` on ``args``, in place.

    Args:
      args: The parsed flags (``None`` where not given).
      lengths: WordPiece tokens of each training document ([CLS]/[SEP] included), int ``[N]``.
      documents: Training documents (validation included).
      vocab_tokens: Tokens the learnt (or stored) WordPiece vocabulary holds.
      val_docs: Documents held out for validation (the rest is trained on).
      settings: The :func:`resolve_vocab` result, completed here.
      head: ``"dense"`` or ``"fused"`` (the fused head keeps Keras' Adam epsilon, as measured).

    Returns:
      ``{name: Setting}`` in the order of :data:`RESOLVED`.
    """
    out = dict(settings or {})
    lengths = np.asarray(lengths)
    p95 = int(math.ceil(np.percentile(lengths, LENGTH_PERCENTILE))) if lengths.size else 0
    median = int(np.median(lengths)) if lengths.size else 0
    if "vocab_size" in out and out["vocab_size"].source == "data":
        out["vocab_size"].why = (f"an upper bound: the learner kept {vocab_tokens:,} tokens, every word piece seen "
                                 f"at least 5 times in the {documents:,} training documents")
    elif "vocab_size" not in out:
        out["vocab_size"] = Setting(args.vocab_size, "flag", f"given ({vocab_tokens:,} tokens learnt)")
    length_text = (f"WordPiece tokens per training document: median {median}, {LENGTH_PERCENTILE}th percentile "
                   f"{p95}")
    key = _resolve_model(args, out, p95, length_text)
    _resolve_length(args, out, lengths, p95, length_text)
    _resolve_optimizer(args, out, key, head)
    _resolve_budget(args, out, key, documents, val_docs)
    return {k: out[k] for k in RESOLVED if k in out}


def _resolve_model(args, out, p95, length_text):
    """``--model`` (and the n-gram model's ``--ngram-hidden``, ``--ngram-bigrams``); returns the key
    of :data:`MODEL_DEFAULTS` (``ngram-linear`` for the n-gram model without a hidden layer)."""
    if _given(args, "model"):
        out["model"] = Setting(args.model, "flag", "given")
    else:
        args.model = "ngram" if p95 > LONG_DOCUMENT else "cnn"
        out["model"] = Setting(args.model, "data", (
            f"{length_text} > {LONG_DOCUMENT}: long documents, which a bag of n-grams reads whole"
            if args.model == "ngram" else f"{length_text} <= {LONG_DOCUMENT}: short documents, read whole by the CNN"))
    key = args.model
    if args.model == "ngram":
        for name in ("ngram_hidden", "ngram_bigrams"):
            if _given(args, name):
                out[name] = Setting(getattr(args, name), "flag", "given")
            else:
                setattr(args, name, MODEL_DEFAULTS["ngram"][name])
                out[name] = Setting(getattr(args, name), "model", MODEL_NOTES["ngram"])
        if not args.ngram_hidden:
            key = "ngram-linear"
    else:  # not used by this model; stored as the n-gram model's defaults
        for name in ("ngram_hidden", "ngram_bigrams"):
            if not _given(args, name):
                setattr(args, name, MODEL_DEFAULTS["ngram"][name])
    return key


def _resolve_length(args, out, lengths, p95, length_text):
    """``--max-length``: the 95th percentile rounded up, with the share of documents it truncates."""
    if _given(args, "max_length"):
        cut = int((lengths > args.max_length).sum())
        out["max_length"] = Setting(args.max_length, "flag", f"given; truncates {cut:,} of {lengths.size:,} "
                                                             f"training documents ({length_text})")
        return
    args.max_length = _round_length(p95)
    cut = int((lengths > args.max_length).sum())
    out["max_length"] = Setting(args.max_length, "data", (
        f"the {LENGTH_PERCENTILE}th percentile, {p95} tokens, rounded up to a multiple of {LENGTH_STEP} within "
        f"[{MIN_LENGTH}, {MAX_LENGTH}]: truncates {cut:,} of {lengths.size:,} training documents "
        f"({100 * cut / max(lengths.size, 1):.1f}%)"))


def _resolve_optimizer(args, out, key, head):
    """``--optimizer``, ``--learning-rate`` and ``--adam-epsilon``: the model's defaults."""
    defaults = MODEL_DEFAULTS[key]
    if _given(args, "optimizer"):
        out["optimizer"] = Setting(args.optimizer, "flag", "given")
    else:
        args.optimizer = defaults["optimizer"]
        out["optimizer"] = Setting(args.optimizer, "model", MODEL_NOTES[key])
    if _given(args, "learning_rate"):
        out["learning_rate"] = Setting(args.learning_rate, "flag", "given")
    elif args.optimizer == defaults["optimizer"]:
        args.learning_rate = defaults["learning_rate"]
        out["learning_rate"] = Setting(args.learning_rate, "model", MODEL_NOTES[key])
    else:
        args.learning_rate = OPTIMIZER_RATES[args.optimizer]
        out["learning_rate"] = Setting(args.learning_rate, "model", f"the default rate of {args.optimizer} "
                                                                    f"(the {key} model's default optimizer is "
                                                                    f"{defaults['optimizer']})")
    if _given(args, "adam_epsilon"):
        out["adam_epsilon"] = Setting(args.adam_epsilon, "flag", "given")
    elif args.optimizer != "adam":
        args.adam_epsilon = ADAM_EPSILON  # unused by SGD; stored as Keras' default
    elif head == "fused" or "adam_epsilon" not in defaults:
        args.adam_epsilon = ADAM_EPSILON
        out["adam_epsilon"] = Setting(ADAM_EPSILON, "default", "Keras' default")
    else:
        args.adam_epsilon = defaults["adam_epsilon"]
        out["adam_epsilon"] = Setting(args.adam_epsilon, "model", MODEL_NOTES[key])


def _resolve_budget(args, out, key, documents, val_docs):
    """``--batch-size`` (the model's), ``--epochs`` (about :data:`STEP_BUDGET` steps), ``--patience``."""
    if _given(args, "batch_size"):
        out["batch_size"] = Setting(args.batch_size, "flag", "given")
    else:
        args.batch_size = MODEL_DEFAULTS[key]["batch_size"]
        out["batch_size"] = Setting(args.batch_size, "model", MODEL_NOTES[key])
    fit_docs = max(documents - val_docs, 1)
    steps = max(1, fit_docs // args.batch_size)
    if _given(args, "epochs"):
        out["epochs"] = Setting(args.epochs, "flag", f"given ({steps} steps an epoch)")
    else:
        args.epochs = int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps))))
        out["epochs"] = Setting(args.epochs, "data", (
            f"about {STEP_BUDGET} optimizer steps ({steps} an epoch: {fit_docs:,} documents / batch "
            f"{args.batch_size}) within [{MIN_EPOCHS}, {MAX_EPOCHS}]; early stopping ends a run sooner"))
    patience = getattr(args, "patience", None)
    if _given(args, "patience"):
        out["patience"] = Setting(patience, "flag", "given" + ("" if patience else ": never stop early"))
    else:
        args.patience = 3
        out["patience"] = Setting(3, "default", "stop after 3 epochs without a better validation score")


def resolve_head(args, head):
    """The fused head's ``--head-optimizer``, ``--head-dtype`` and ``--head-learning-rate`` still
    ``None`` on ``args``, in place (call after :func:`resolve`: the rate rule reads ``--optimizer``
    and ``--learning-rate``). Returns ``{name: Setting}`` in the order of :data:`HEAD_SETTINGS`;
    ``{}`` for the dense head, whose ``args`` get the defaults (any other value is refused by
    :func:`fusedfocal.cli.stages.fused.check_head_flags`).

    * ``--head-dtype``: float32, today's.
    * ``--head-optimizer``: shared, today's (compile's ``--optimizer`` trains the head); with
      ``--head-dtype bfloat16`` the run's ``--optimizer`` as a fused update, whose stochastic
      rounding bfloat16 needs (a Keras optimizer rounds every step to nearest, losing small ones).
    * ``--head-learning-rate`` (a fused update only): ``--learning-rate`` when the head's rule is
      ``--optimizer`` (the rate the shared optimizer gave the head: the head's loss is the same sum
      over labels); else that rule's command-line rate, :data:`OPTIMIZER_RATES` (SGD's 0.33 is
      for the loss summed over labels, which the head's is, so it does not depend on the label count).
    """
    if head != "fused":  # not used by the dense head; stored as the defaults
        if not _given(args, "head_optimizer"):
            args.head_optimizer = "shared"
        if not _given(args, "head_dtype"):
            args.head_dtype = "float32"
        return {}
    out = {}
    if _given(args, "head_dtype"):
        out["head_dtype"] = Setting(args.head_dtype, "flag", "given")
    else:
        args.head_dtype = "float32"
        out["head_dtype"] = Setting("float32", "default", HEAD_DEFAULT_WHY)
    if _given(args, "head_optimizer"):
        out["head_optimizer"] = Setting(args.head_optimizer, "flag", "given")
    elif args.head_dtype == "bfloat16":
        args.head_optimizer = args.optimizer
        out["head_optimizer"] = Setting(args.optimizer, "default", (
            "the run's --optimizer as a fused update: bfloat16 weights need its stochastic rounding (the shared "
            "Keras optimizer would round each step to nearest and lose the small ones)"))
    else:
        args.head_optimizer = "shared"
        out["head_optimizer"] = Setting("shared", "default", HEAD_DEFAULT_WHY)
    if args.head_optimizer == "shared":
        pass  # the head trains at --learning-rate; a given --head-learning-rate is refused (check_head_flags)
    elif _given(args, "head_learning_rate"):
        out["head_learning_rate"] = Setting(args.head_learning_rate, "flag", "given")
    elif args.head_optimizer == args.optimizer:
        args.head_learning_rate = args.learning_rate
        out["head_learning_rate"] = Setting(args.learning_rate, "default", (
            f"the run's --learning-rate: the head's loss is the same sum over labels as the encoder's, and the "
            f"shared {args.optimizer} gave the head this rate"))
    else:
        args.head_learning_rate = OPTIMIZER_RATES[args.head_optimizer]
        note = ", momentum 0.9, for the loss summed over labels, which the head's is" if (
            args.head_optimizer == "sgd") else ""
        out["head_learning_rate"] = Setting(args.head_learning_rate, "default", (
            f"the command line's {args.head_optimizer} rate{note} (the run's {args.optimizer} rate "
            f"{_fmt(args.learning_rate)} is for another rule); not measured on the fused head"))
    if getattr(args, "label_shards", None):
        from fusedfocal.cli.resolve.heads import label_shards_why

        out["label_shards"] = Setting(args.label_shards, "flag", label_shards_why(args))
    return {k: out[k] for k in ("head_optimizer", "head_dtype", "head_learning_rate", "label_shards") if k in out}


def with_loss_defaults(name, params, head):
    """``params`` (``{param: (value, flag)}``) with the command line's defaults of loss ``name`` on
    ``head`` (:data:`LOSS_DEFAULTS`) where not given, tagged ``"default"``."""
    defaults = LOSS_DEFAULTS.get(head, {}).get(name, {})
    return {**params, **{k: (v, "default") for k, v in defaults.items() if k not in params}}


def loss_settings(names, params, head):
    """The settings block's lines for the loss defaults the run uses (``names``: its losses;
    ``params``: the parameters given to all of them): ``{"focal_gamma": Setting}`` or ``{}``."""
    if "focal" in names and "gamma" not in params and "focal" in LOSS_DEFAULTS.get(head, {}):
        return {"focal_gamma": Setting(FOCAL_GAMMA, "default", FOCAL_GAMMA_WHY)}
    return {}


def block(settings, *, stored=False):
    """The printed block: ``--flag value [source] why``, one line per reason (settings in a row
    with the same source and reason share a line)."""
    head = ("Settings (stored in config.json; a flag given now overrides one):" if stored else
            "Settings (the ones not given are chosen from the data or the model; a flag overrides any; stored "
            "in config.json):")
    rows = []
    for k, s in settings.items():
        flag = f"{FLAGS.get(k, '--' + k.replace('_', '-'))} {_fmt(s.value)}"  # --encoder's own too
        if rows and tuple(rows[-1][1:]) == (s.source, s.why):
            rows[-1][0] += " " + flag
        else:
            rows.append([flag, s.source, s.why])
    width = min(40, max(len(r[0]) for r in rows))
    return [head] + [f"  {flags:<{width}}  [{source}] {why}" for flags, source, why in rows]


def _fmt(v):
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def restored(folder):
    """The settings a run folder's ``config.json`` stored (``{}`` for an older one), printed as the
    stored block: what ``--resume`` continues with."""
    import json
    from pathlib import Path

    from fusedfocal.cli.store import rundir
    from fusedfocal.cli.errors import log

    try:
        stored = from_config(json.loads((Path(folder) / rundir.CONFIG_FILE).read_text()).get("settings"))
    except (OSError, ValueError):
        stored = {}
    for line in block(stored, stored=True):
        log(line)
    return stored


def from_config(stored):
    """``{name: Setting}`` of a ``config.json``'s ``"settings"`` (``{}`` for an older run folder)."""
    return settings_from_json(stored)
