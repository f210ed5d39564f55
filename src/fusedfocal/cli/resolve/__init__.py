"""The resolver: the parsed flags, the data and a run folder's ``config.json`` into one frozen
:class:`~fusedfocal.cli.spec.Spec`.

With the parser and the thin command modules, this package is the only code that reads the
``argparse.Namespace``. In order:

1. :func:`given_flags`: which flags the command line gave (a flag's source is then ``"flag"``);
   :func:`resumed`: ``--resume`` makes the stored spec the parser's defaults.
2. :func:`prepare`: the data stage's steps (:mod:`fusedfocal.cli.stages.prepare`) with, between
   them, the settings the data decides (:mod:`~fusedfocal.cli.resolve.settings`,
   :mod:`~fusedfocal.cli.resolve.encoder`), each recorded with its source and why.
3. :func:`spec`: the resolved flags frozen into the stage configs, each value with its source.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusedfocal.cli import spec as specs
from fusedfocal.cli.errors import CLIError, log
from fusedfocal.cli.resolve import heads
from fusedfocal.cli.resolve import settings as st
from fusedfocal.cli.stages import prepare as stage
from fusedfocal.cli.store import rundir

__all__ = ["given_flags", "resumed", "prepare", "spec", "loss_params", "data_config", "pipeline_config",
           "check_before_data", "check_after_data", "prepare_seeds", "label_shard_worker"]

_UNSET = object()


def given_flags(subparser, argv):
    """The ``dest`` of every flag given in ``argv`` (the command's arguments): argparse sets a
    default only where the namespace has no value yet, so a sentinel marks those not given."""
    actions = [a for a in subparser._actions if a.dest not in (argparse.SUPPRESS, "help")]
    # actions that add to the value there (append, count) start from None: given when not None
    adding = {a.dest for a in actions if isinstance(a, (argparse._AppendAction, argparse._AppendConstAction,
                                                        argparse._CountAction))}
    ns = argparse.Namespace(**{a.dest: None if a.dest in adding else _UNSET for a in actions})
    subparser.parse_args(argv, namespace=ns)
    return frozenset(a.dest for a in actions
                     if getattr(ns, a.dest) is not (None if a.dest in adding else _UNSET))


def resumed(subparser, argv, args):
    """``--resume``: the run's stored spec (``config.json``, migrated from version 1) becomes the
    parser's defaults; flags given now override them. Returns ``(args, stored names)``."""
    cfg_path = Path(args.out) / rundir.CONFIG_FILE
    if not cfg_path.exists():
        raise CLIError("--resume", f"expected a run folder with {rundir.CONFIG_FILE} in --out; received {args.out!r}, "
                                   "which has none (start the run without --resume)")
    stored = specs.load(json.loads(cfg_path.read_text())).flat()
    known = {a.dest for a in subparser._actions}
    # the head stored is the one --head resolved to; out, resume and overwrite are today's
    defaults = {k: v for k, v in stored.items() if k in known and k not in ("out", "resume", "overwrite")}
    subparser.set_defaults(**defaults)
    return subparser.parse_args(argv), frozenset(defaults)


def data_config(args):
    """The data stage's config of ``args`` (flags only: nothing of it is chosen from the data)."""
    return specs.Spec.from_flat("", vars(args)).data


def pipeline_config(args, head):
    return stage.pipeline_config(max_length=args.max_length, batch_size=args.batch_size, vocab_size=args.vocab_size,
                                 seed=args.seed, deterministic=args.deterministic, head=head)


def prepare(args, run_dir=None, wordpiece=None, quiet_settings=False, warn_truncation=True):
    """Reads the data, holds out validation, chooses the settings not given, builds (or, from
    ``run_dir``, loads) the vocabularies; returns the :class:`~fusedfocal.cli.stages.prepare.Prepared`
    (``settings``: what was chosen, ``{name: Setting}``). Sets the chosen values on ``args``.

    The WordPiece vocabulary is learnt from every training document (validation included; it reads
    no labels) with a fixed sampling seed, so it is a function of the data set and ``--vocab-size``
    alone: ``compare --seeds`` learns it once and passes it to the other seeds as ``wordpiece``.
    """
    from fusedfocal import data
    from fusedfocal.cli.stages import fused

    corpus = stage.read_corpus(data_config(args))
    label_vocab = corpus.label_vocab
    head = fused.resolve_head(args.head, len(label_vocab), args.fused_head_above)
    if head == "dense":  # --head-optimizer, --head-dtype, --head-learning-rate are the fused head's
        heads.check_head_flags(args, head, why_dense=(
            "--head dense" if args.head == "dense" else
            f"--head auto, which chose the dense head for {len(label_vocab)} labels (at most --fused-head-above "
            f"{args.fused_head_above or fused.FUSED_ABOVE})"))
    if getattr(args, "warmup", None) is not None and not args.encoder:
        raise CLIError("--warmup", f"expected --encoder with --warmup (the warm-up of a fine-tuned encoder's "
                                   f"rate); received --warmup {args.warmup} without --encoder")
    tokenizer, source, positions = None, None, None
    if args.encoder:  # the preset's tokenizer replaces the WordPiece learning
        from fusedfocal.cli.resolve import encoder

        tokenizer, source, positions = encoder.open_tokenizer(args, run_dir)
    chosen = {}
    if run_dir is not None and (Path(run_dir) / rundir.LABEL_VOCAB_FILE).exists():
        pipeline = stage.stored_pipeline(pipeline_config(args, head), run_dir, label_vocab, tokenizer)
    else:
        chosen, wordpiece = _choose(args, corpus, head, tokenizer, positions, wordpiece, quiet_settings)
        pipeline = data.TextPipeline(pipeline_config(args, head), None if tokenizer else wordpiece, label_vocab,
                                     tokenizer=tokenizer)
    return stage.finish(corpus, pipeline, head=head, settings=chosen, encoder=source, eval_paths=args.eval,
                        max_length=args.max_length, warn_truncation=warn_truncation)


def _choose(args, corpus, head, tokenizer, positions, wordpiece, quiet_settings):
    """The settings not given (vocabulary size, model, max length, the model's optimizer, rate and
    batch size, epochs; the fused head's update), chosen from the data before the pipeline's shapes
    are fixed, set on ``args`` and printed; ``(chosen, wordpiece)``. A resumed run has them all
    from its config.json already, and records none."""
    from fusedfocal import data

    texts, val_docs = corpus.texts, len(corpus.val[0])
    unresolved = any(getattr(args, k, None) is None for k in st.RESOLVED)
    chosen = st.resolve_vocab(args) if unresolved and tokenizer is None else {}
    if tokenizer is not None:
        if unresolved:
            from fusedfocal.cli.resolve import encoder

            probe = data.TextPipeline(data.PipelineConfig(max_length=positions), None, corpus.label_vocab,
                                      tokenizer=tokenizer)
            chosen = encoder.resolve(args, probe.token_lengths(texts), vocab_tokens=len(probe.wordpiece_vocab),
                                     documents=len(texts), val_docs=val_docs, positions=positions)
    else:
        if wordpiece is None:
            wordpiece = stage.learn_wordpiece(texts, args.vocab_size)
        if unresolved:  # the token lengths of every training document fix the rest
            probe = data.TextPipeline(data.PipelineConfig(max_length=st.MAX_LENGTH, vocab_size=args.vocab_size),
                                      wordpiece, corpus.label_vocab)
            chosen = st.resolve(args, probe.token_lengths(texts), documents=len(texts), vocab_tokens=len(wordpiece),
                                val_docs=val_docs, settings=chosen, head=head)
    # the fused head's optimizer, storage and rate ({} for the dense head)
    head_unresolved = (args.head_optimizer is None or args.head_dtype is None
                       or (args.head_optimizer != "shared" and args.head_learning_rate is None))
    head_chosen = st.resolve_head(args, head)
    heads.check_head_flags(args, head)
    if unresolved or head_unresolved:
        chosen.update(head_chosen)
    if (unresolved or (head_unresolved and head_chosen)) and not quiet_settings:
        for line in st.block(chosen):
            log(line)
    return chosen, wordpiece


def spec(args, command, *, settings=None, head=None, given=(), stored=()):
    """The frozen :class:`~fusedfocal.cli.spec.Spec` of ``args`` once every setting is resolved;
    ``head``: the head ``--head`` resolved to on the data. A value's source: ``"flag"`` if given
    now, else ``"stored"`` (``--resume``), else its setting's (``"data"``, ``"model"``,
    ``"default"``), else ``"default"`` (the parser's)."""
    flat = dict(vars(args))
    if head is not None:
        flat["head"] = head
    settings = dict(settings or {})
    sources = {}
    for name in specs.Spec.from_flat(command, {}).flat():
        if name in given:
            sources[name] = "flag"
        elif name in stored:
            sources[name] = "stored"
        elif name in settings:
            sources[name] = settings[name].source
        else:
            sources[name] = "default"
    return specs.Spec.from_flat(command, flat, sources=sources, settings=settings)


def loss_params(args, name=None, *, head=None):
    """Loss parameters from the dedicated flags and ``--loss-param KEY=VALUE``; ``{param: (value, flag)}``,
    with the command line's defaults of loss ``name`` (default: ``--loss``) on ``head`` (the resolved
    head; ``None``: none) where not given (:func:`~fusedfocal.cli.resolve.settings.with_loss_defaults`)."""
    from fusedfocal.cli.stages.lossargs import tagged_params

    params = tagged_params(specs.Spec.from_flat("", vars(args)).loss)
    name = name or getattr(args, "loss", None)
    return st.with_loss_defaults(name, params, head) if name and head else params


def check_before_data(args, folder, *, markers, finished, losses, flag, refuse_diverged=False):
    """What is wrong whatever the data, refused before minutes of data preparation: a diverged run
    resumed, a run folder that would be refused, unknown losses (``losses``: names, reported under
    ``flag``), ``--select`` on the head given, the head flags. Resolves where the label shards live
    (``args.label_shard_workers``: ``TF_CONFIG``'s workers with ``--strategy multiworker``, else
    ``None``; :func:`~fusedfocal.cli.resolve.heads.label_shard_cluster`) before any strategy exists."""
    from fusedfocal.cli.stages import fused, runtime, stops
    from fusedfocal.cli.stages.lossargs import check_loss_name

    cluster = heads.label_shard_cluster(args)
    args.label_shard_workers = cluster.workers if cluster is not None else None
    rundir.check_folder(folder)
    if args.resume and refuse_diverged and stops.diverged_info(folder) is not None:
        raise stops.diverged_again(folder)
    if runtime.is_chief(runtime.make_strategy(heads.loop_strategy(args)))[0]:  # only the chief writes the folder
        rundir.precheck(folder, markers, resume=args.resume, overwrite=args.overwrite, finished=finished)
    for name in losses:
        check_loss_name(name, flag)
        if args.head == "fused":
            fused.check_loss(name, flag)
    if args.head in ("dense", "fused"):
        fused.resolve_select(args.select, args.head)
    heads.check_head_early(args, folder)


def check_after_data(args, prep, losses=None):
    """The flags that the resolved head decides: ``--select`` on it, and a fused update (given, or
    chosen for bfloat16) needs one replica. Adds the loss defaults the run uses (``losses``: its
    loss names, default ``--loss``) to the settings, printed as the settings block prints them."""
    from fusedfocal.cli.stages import fused, runtime

    names = list(losses) if losses is not None else [args.loss]
    chosen = {k: s for k, s in st.loss_settings(names, loss_params(args), prep.head).items()
              if k not in prep.settings}
    if chosen:
        prep.settings.update(chosen)
        for line in st.block(chosen)[1:]:
            log(line)
    fused.resolve_select(args.select, prep.head)
    if prep.head == "fused":
        heads.check_head_flags(args, "fused",
                               replicas=runtime.make_strategy(heads.loop_strategy(args)).num_replicas_in_sync)


def label_shard_worker(args):
    """This process's :class:`~fusedfocal.cli.resolve.heads.ShardCluster` when it is a worker that
    holds a label shard (``--label-shards S --strategy multiworker``, ``TF_CONFIG`` task type
    ``worker``), checked as the chief checks it (S workers, a fused head, no XLA); else ``None``."""
    cluster = heads.label_shard_cluster(args)
    if cluster is None or not cluster.serves:
        return None
    heads.check_head_flags(args, "dense" if getattr(args, "head", None) == "dense" else "fused")
    return cluster


def prepare_seeds(args, seeds, folder):
    """``compare``: one :class:`~fusedfocal.cli.stages.prepare.Prepared` per seed (each its own
    validation split); the vocabulary and the settings are chosen once, on the first seed's data,
    set on ``args`` and shared by every seed's runs. On ``--resume`` of a comparison older than the
    head flags, the stored settings complete the chosen ones."""
    from fusedfocal.cli.stages.encoder import SETTINGS as encoder_settings

    preps = {}
    for seed in seeds:
        first = preps[seeds[0]] if preps else None
        args_s = argparse.Namespace(**{**vars(args), "seed": seed})
        preps[seed] = prepare(args_s, wordpiece=first.pipeline.wordpiece_vocab if first else None,
                              warn_truncation=first is None)
        if first is None:  # the settings chosen from the data hold for every seed
            for name in st.RESOLVED + st.HEAD_SETTINGS + encoder_settings:  # --encoder's too
                setattr(args, name, getattr(args_s, name))
    prep = preps[seeds[0]]
    if args.resume and not set(prep.settings) - set(st.HEAD_SETTINGS):
        prep.settings = {**st.restored(folder), **prep.settings}
    for p in preps.values():  # every seed's runs store the settings chosen once
        p.settings = prep.settings
    return preps
