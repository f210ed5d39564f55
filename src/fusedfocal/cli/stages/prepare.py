"""The data stage of ``train`` and ``compare``: read the files, hold out validation, build the vocabularies.

The resolver (:func:`fusedfocal.cli.resolve.prepare`) runs these steps in turn, choosing the settings
the data decides between them.

Every data error is a :class:`~fusedfocal.cli.errors.CLIError` naming the flag (``--data``, ``--eval``,
``--val-size``) before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from fusedfocal.cli.store import rundir
from fusedfocal.cli.errors import CLIError, log

__all__ = ["Prepared", "Corpus", "read_corpus", "read_labelled", "split_validation", "pipeline_config",
           "stored_pipeline", "learn_wordpiece", "finish", "truncation_report", "SYNTHETIC"]

SYNTHETIC = "the built-in synthetic corpus (synthetic_splits(seed=0): 4000 train / 1000 test documents, 19 labels)"


def read_labelled(paths, fields, flag):
    """``(texts, label lists)`` of ``paths``, read as ``fields`` (a :class:`~fusedfocal.cli.spec.DataConfig`)
    says; every error names ``flag``."""
    from fusedfocal import data

    try:
        texts, labels, stats = data.read_records(
            paths, text_field=fields.text_field or "text", labels_field=fields.labels_field or "labels",
            label_separator=fields.label_separator or "|",
            string_labels="split" if fields.split_string_labels else "raise")
    except FileNotFoundError as e:
        raise CLIError(flag, f"expected an existing file or glob; received {' '.join(map(str, paths))!r} ({e})")
    except IsADirectoryError as e:
        raise CLIError(flag, f"expected a file or glob; received {' '.join(map(str, paths))!r} ({e})")
    except ValueError as e:
        raise CLIError(flag, f"could not read the data: {_cli_hints(str(e))}")
    if not texts:
        raise CLIError(flag, f"expected at least one document; received an empty data set from {' '.join(map(str, paths))}")
    return texts, labels


def _cli_hints(message):
    """The readers' hints name library arguments; on the command line they are flags."""
    import re

    message = re.sub(r'pass string_labels="split" \(and label_separator=\.\.\.\)',
                     "pass --split-string-labels (and --label-separator SEP)", message)
    message = re.sub(r", or pass format= one of \[[^\]]*\]",
                     " (the command line infers the format from the file name: rename the file)", message)
    return message


def _check_labelled(texts, labels, flag, paths, field):
    if not any(labels):
        raise CLIError(flag, (
            f"expected documents with labels in the field {field!r}; received {len(texts)} documents from "
            f"{' '.join(map(str, paths))}, none of them with a label (use --labels-field to name the field)"))


def split_validation(n, val_size, seed):
    """Indices ``(fit, val)`` of a seeded hold-out of ``val_size`` documents (fraction or count)."""
    if val_size is None:
        count = 1000 if n >= 5000 else max(1, round(0.1 * n))
    elif isinstance(val_size, float) and val_size < 1:
        count = max(1, round(val_size * n))
    else:
        count = int(val_size)
    if count >= n:
        raise CLIError("--val-size", f"expected fewer validation documents than training documents ({n}); "
                                     f"received {val_size} ({count} documents)")
    order = np.random.default_rng([seed, 2]).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


@dataclasses.dataclass
class Prepared:
    """Everything a run needs from the data, shared by every loss of a comparison."""

    fit: tuple
    val: tuple
    test: tuple
    eval_split: str
    pipeline: object
    fit_counts: np.ndarray
    fit_docs: int
    description: str
    head: str = "dense"  # "dense" or "fused" (fusedfocal.cli.stages.fused.resolve_head of --head)
    truncation: dict = dataclasses.field(default_factory=dict)  # see truncation_report
    settings: dict = dataclasses.field(default_factory=dict)  # {name: settings.Setting}, see settings.resolve
    encoder: str | None = None  # --encoder: where the build loads the preset from (cli/encoder.py)

    def fit_ids(self):
        """The fit split's token ids ``int32 [N, max_length]`` (numpy), tokenized once for every
        loss trained on this preparation (the n-gram model's statistics)."""
        if getattr(self, "_fit_ids", None) is None:
            self._fit_ids = self.pipeline.tokenize(self.fit[0]).numpy()
        return self._fit_ids


@dataclasses.dataclass
class Corpus:
    """The data as read: the fit, validation and evaluation splits and the label vocabulary."""

    texts: list
    labels: list
    fit: tuple
    val: tuple
    test: tuple
    eval_split: str
    description: str
    label_vocab: object


def read_corpus(data_cfg):
    """Reads ``--data`` (or the built-in corpus) and ``--eval``, holds out validation
    (``--val-size``, ``--seed``); label names from every training document."""
    from fusedfocal import data

    if data_cfg.data:
        texts, labels = read_labelled(data_cfg.data, data_cfg, "--data")
        _check_labelled(texts, labels, "--data", data_cfg.data, data_cfg.labels_field or "labels")
        desc = ", ".join(str(p) for p in data_cfg.data)
    else:
        (texts, labels), test_synth = data.synthetic_splits(seed=0)
        desc = SYNTHETIC
    if len(texts) < 2:
        raise CLIError("--data", f"expected at least 2 training documents (1 is held out for validation); received {len(texts)}")
    fit_idx, val_idx = split_validation(len(texts), data_cfg.val_size, data_cfg.seed)
    fit = ([texts[i] for i in fit_idx], [labels[i] for i in fit_idx])
    val = ([texts[i] for i in val_idx], [labels[i] for i in val_idx])
    if data_cfg.eval:
        test, eval_split = read_labelled(data_cfg.eval, data_cfg, "--eval"), "test"
    elif not data_cfg.data:
        test, eval_split = test_synth, "test"
    else:
        test, eval_split = val, "validation"
    # Label names from every training document (validation included), counts = training documents.
    return Corpus(texts, labels, fit, val, test, eval_split, desc, data.LabelVocab.build(labels))


def pipeline_config(*, max_length, batch_size, vocab_size, seed, deterministic, head):
    """The pipeline's config. Static shapes: every batch padded to max_length (XLA compiles one
    program per input shape, and replicas of a distributed run then see the same padding as a
    single-device run). The fused head reads label ids padded with -1 (a static [B, L]), never
    multi-hot [B, C]."""
    from fusedfocal import data

    return data.PipelineConfig(max_length=max_length, batch_size=batch_size, vocab_size=vocab_size, seed=seed,
                               deterministic=deterministic, fixed_shape=True,
                               label_format="padded_ids" if head == "fused" else "multi_hot")


def stored_pipeline(config, run_dir, label_vocab, tokenizer=None):
    """The pipeline of a run folder's vocabularies (``--resume``); its labels must be this data's."""
    from fusedfocal import data

    pipeline = data.TextPipeline.from_directory(config, run_dir, tokenizer=tokenizer)
    if pipeline.label_vocab.labels != label_vocab.labels:
        stored = pipeline.label_vocab.labels
        missing = sorted(set(stored) - set(label_vocab.labels))
        new = sorted(set(label_vocab.labels) - set(stored))
        raise CLIError("--data", (
            f"the label vocabulary of this data does not match the one {run_dir} was trained with: expected "
            f"{len(stored)} labels as in {Path(run_dir) / rundir.LABEL_VOCAB_FILE}; received {len(label_vocab)} "
            f"labels (missing: {missing[:8]}, new: {new[:8]}, or a different frequency order)"))
    return pipeline


def learn_wordpiece(texts, vocab_size):
    """The WordPiece vocabulary of ``texts`` (a fixed sampling seed: a function of the data set and
    ``--vocab-size`` alone)."""
    from fusedfocal import data

    t0 = time.time()
    wordpiece = data.build_wordpiece_vocab(texts, vocab_size, seed=0)
    log(f"WordPiece vocabulary: {len(wordpiece)} tokens learnt from {len(texts)} training documents "
        f"in {time.time() - t0:.1f}s")
    return wordpiece


def finish(corpus, pipeline, *, head, settings, encoder, eval_paths, max_length, warn_truncation):
    """The :class:`Prepared` of ``corpus`` read through ``pipeline``: the fit split's label counts,
    the evaluation labels checked, the labels without a fit document and the truncation reported."""
    fit, test = corpus.fit, corpus.test
    # Documents per label in the fit split, from label ids (a multi-hot [N, C] would not fit for XMC).
    index = pipeline.label_vocab.index
    fit_ids = [index[n] for names in fit[1] for n in set(names) if n in index]
    fit_counts = np.bincount(np.asarray(fit_ids, np.int64), minlength=len(index)).astype(np.int64)
    if eval_paths:
        _check_eval_labels(test[1], pipeline.label_vocab, eval_paths)
    unseen = [name for name, n in zip(pipeline.label_vocab.labels, fit_counts) if n == 0]
    if unseen:
        log(f"warning: {len(unseen)} label(s) have no positive document among the {len(fit[0])} training "
            f"documents (all of theirs were held out for validation), so the model cannot learn them: "
            f"{unseen[:8]}{' ...' if len(unseen) > 8 else ''}. Training goes on; a smaller --val-size or "
            "more data avoids this.")
    # a max length chosen from the data states its cut in the settings block; a given one warns here
    length_chosen = "max_length" in settings and settings["max_length"].source == "data"
    truncation = truncation_report(pipeline, fit[0], max_length, warn=warn_truncation and not length_chosen)
    return Prepared(fit=fit, val=corpus.val, test=test, eval_split=corpus.eval_split, pipeline=pipeline,
                    fit_counts=fit_counts, fit_docs=len(fit[0]), description=corpus.description, head=head,
                    truncation=truncation, settings=settings, encoder=encoder)


def truncation_report(pipeline, texts, max_length, warn=True):
    """How many training documents ``--max-length`` cuts, logged as a warning when any is cut:
    ``{"max_length", "documents", "truncated", "share", "median_tokens", "p95_tokens"}``."""
    lengths = pipeline.token_lengths(texts)
    if not len(lengths):
        return {}
    cut = int((lengths > max_length).sum())
    rep = {"max_length": int(max_length), "documents": int(len(lengths)), "truncated": cut,
           "share": round(cut / len(lengths), 4), "median_tokens": int(np.median(lengths)),
           "p95_tokens": int(np.percentile(lengths, 95))}
    if cut and warn:
        log(f"warning: --max-length {max_length} truncates {cut} of {len(lengths)} training documents "
            f"({100 * rep['share']:.1f}%; WordPiece tokens per document: median {rep['median_tokens']}, 95th "
            f"percentile {rep['p95_tokens']}, longest {int(lengths.max())}); their tails are not read. A larger "
            f"--max-length keeps more of them, at a cost in time.")
    return rep


def _check_eval_labels(label_lists, label_vocab, paths):
    """``--eval`` data must share labels with the training data (as ``evaluate`` requires); checked
    before anything is trained or written."""
    names = {n for ls in label_lists for n in ls}
    known = names & set(label_vocab.labels)
    if known:
        return
    got = (f"{len(names)} label name(s), none of them in the training data, e.g. {sorted(names)[:5]}" if names
           else "documents without any label")
    raise CLIError("--eval", (
        f"expected evaluation data labelled with the training labels, such as {label_vocab.labels[:5]} "
        f"({len(label_vocab)} labels); received {got} in {' '.join(map(str, paths))}"))
