"""The parse stage: every flag of every command, each validated where it is parsed.

Numeric flags are range-checked by their argparse ``type``, so a bad value is an exit-2 usage error
naming that flag before anything runs.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser", "version_text"]


def _groups(text):
    if text in ("auto", "huang"):
        return text
    try:
        hi, lo = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, huang or two integers HEAD_MIN,TAIL_MAX such as 35,8; "
                                         f"received {text!r}")
    if not hi > lo >= 0:
        raise argparse.ArgumentTypeError(f"expected HEAD_MIN > TAIL_MAX >= 0; received {text!r}")
    return (hi, lo)


def _seeds(text):
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers >= 0 joined by commas such as 0,1,2; received {text!r}")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0 joined by commas such as 0,1,2; "
                                         f"received {text!r}")
    return seeds


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    return v


def _number(text, kind, ok, expected):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}")
    if kind is float and v != v:  # NaN
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}")
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}; received {text!r}")
    return v


def _ranged(kind, ok, expected):
    """An argparse type: ``kind(text)`` that satisfies ``ok``, else "expected ...; received ..."."""
    f = lambda text: _number(text, kind, ok, expected)  # noqa: E731
    f.__name__ = expected  # argparse names the type in some messages
    return f


_nonnegative_float = _ranged(float, lambda v: 0 <= v < float("inf"), "a finite float >= 0")
_positive_float = _ranged(float, lambda v: 0 < v < float("inf"), "a finite float > 0")
_fraction = _ranged(float, lambda v: 0 <= v < 1, "a float in [0, 1)")
_probability = _ranged(float, lambda v: 0 <= v <= 1, "a threshold in [0, 1]")
_nonnegative_int = _ranged(int, lambda v: v >= 0, "an integer >= 0")
_max_length = _ranged(int, lambda v: v >= 3, "an integer >= 3 ([CLS], at least one token, [SEP])")
_vocab_size = _ranged(int, lambda v: v >= 6, "an integer >= 6 (the 5 special tokens and at least one more)")


def _val_size(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or a document count; received {text!r}")
    if v <= 0 or (v >= 1 and v != int(v)):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or a document count >= 1; received {text!r}")
    return v if v < 1 else int(v)


class _Given(argparse.Action):
    """Stores the value and marks the flag as given (``args.<dest>_given``): a default that a rule may
    replace (``--mixed-precision`` with ``--encoder``) differs from the same value given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_given", True)


def _add_encoder_flag(p, training=True):
    p.add_argument("--encoder", default=None, metavar="PRESET_OR_PATH", help=(
        "fine-tune a pretrained KerasHub backbone: a preset name (bert_base_en_uncased, downloaded by KerasHub "
        "where there is a network), a kaggle:// or hf:// handle, or a local preset directory; its tokenizer "
        "replaces the WordPiece learning, its pooled ([CLS]) features feed the head (needs pip install "
        "fusedfocal[hub])" if training else
        "the run's --encoder (optional; checked against config.json: the encoder and its tokenizer are read "
        "from RUN_DIR/encoder/, without a network)"))


def _add_data_flags(p, *, training=True):
    p.add_argument("--data", nargs="+", metavar="FILE",
                   help="training file(s) or globs: JSON Lines, CSV, TSV or TFRecord, optionally .gz "
                        "(default: the built-in synthetic corpus, 4000 train / 1000 test documents, 19 labels)")
    p.add_argument("--eval", nargs="+", metavar="FILE",
                   help="test file(s) for the reported metrics (default: the synthetic test split without "
                        "--data, else the validation split, marked as such)")
    p.add_argument("--text-field", default="text", help="JSON key / column of the text (default: text)")
    p.add_argument("--labels-field", default="labels", help="JSON key / column of the labels (default: labels)")
    p.add_argument("--label-separator", default="|", help="label separator inside a CSV/TSV cell (default: |)")
    p.add_argument("--split-string-labels", action="store_true",
                   help="JSON Lines labels given as one string ('a|b') are split on --label-separator "
                        "(default: such a record is an error)")


def _add_train_flags(p):
    """The flags of ``train`` and ``compare``, in groups."""
    _add_data_flags(p)
    g = p.add_argument_group("loss parameters (only those given are passed; defaults are the loss's)")
    g.add_argument("--gamma", type=_nonnegative_float, help="focusing parameter (focal, cb, db, poly)")
    g.add_argument("--alpha", help="positive-class weight: a float, 'none', or one float per label joined by '/'")
    g.add_argument("--gamma-neg", type=_nonnegative_float, help="asl: negative focusing parameter")
    g.add_argument("--gamma-pos", type=_nonnegative_float, help="asl: positive focusing parameter")
    g.add_argument("--clip", type=_fraction, help="asl: probability margin of the negatives")
    g.add_argument("--beta", type=_nonnegative_float, help="cb: effective-number beta; tversky: false-negative weight")
    g.add_argument("--label-smoothing", type=_fraction, help="bce / focal label smoothing")
    g.add_argument("--loss-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other loss parameter, repeatable (e.g. --loss-param map_mu=0.9)")
    m = p.add_argument_group("model and optimisation")
    _add_model_flags(m)
    _add_head_flags(m)
    _add_fit_flags(m)


def _add_model_flags(m):
    m.add_argument("--model", default=None, choices=["cnn", "fasttext", "transformer", "ngram"],
                   help="text model: cnn (embedding + 1-D convolutions of widths 1-3 + max pool), ngram (TF-IDF "
                        "WordPiece unigrams, optionally bigrams, and a one-hidden-layer or linear head), fasttext "
                        "or transformer (default: from the data: ngram when the 95th percentile of tokens per "
                        "training document is above 256, else cnn)")
    m.add_argument("--ngram-hidden", type=_nonnegative_int, default=None, metavar="UNITS",
                   help="ngram: hidden units (default 256; 0: a linear model, trained with SGD by default)")
    m.add_argument("--ngram-bigrams", type=_nonnegative_int, default=None, metavar="K",
                   help="ngram: bigram vocabulary, the K bigrams in most training documents (default 0: "
                        "unigrams only)")
    m.add_argument("--ngram-weighting", default="tfidf", choices=["tfidf", "logcount"],
                   help="ngram: (1 + log tf) * idf or log(1 + tf), L2-normalised (default tfidf)")
    m.add_argument("--embed-dim", type=_positive_int, help="embedding width (default 96; fasttext 128)")
    m.add_argument("--filters", type=_positive_int, default=96, help="cnn filters per width (default 96)")
    m.add_argument("--layers", type=_positive_int, default=1, help="transformer encoder blocks (default 1)")
    m.add_argument("--dropout", type=_fraction, default=0.2, help="dropout before the logits (default 0.2)")
    m.add_argument("--no-prior-bias", dest="prior_bias", action="store_false",
                   help="start the logits' bias at 0 instead of log(prior / (1 - prior))")


def _add_head_flags(m):
    m.add_argument("--head", default="auto", choices=["auto", "dense", "fused"],
                   help="the classifier head: dense (a Dense logits layer and any loss; thresholds, F1) or fused "
                        "(fusedfocal.keras.FocalHead: the loss fused with the classifier, never [batch, labels], "
                        "top-k out, P@k / nDCG@k / PSP@k; losses bce, focal, la, cb); auto (default): fused "
                        "above --fused-head-above labels")
    m.add_argument("--fused-head-above", type=_positive_int, default=4096, metavar="LABELS",
                   help="--head auto picks the fused head above this many labels (default 4096, about EUR-Lex)")
    m.add_argument("--head-optimizer", default=None, choices=["shared", "sgd", "adam"],
                   help="fused head: shared (default, today's path: --optimizer trains the head with the encoder) "
                        "or a fused update inside the head's loss, sgd (momentum 0.9) or adam, that never forms "
                        "the kernel-sized gradient (default: shared; with --head-dtype bfloat16, the run's "
                        "--optimizer)")
    m.add_argument("--head-dtype", default=None, choices=["float32", "bfloat16"],
                   help="fused head: how its kernel and its optimizer slots are stored (default float32); "
                        "bfloat16 halves them (the bias stays float32) and needs --head-optimizer sgd or adam "
                        "(stochastic rounding)")
    m.add_argument("--head-learning-rate", type=_positive_float, default=None, metavar="LR",
                   help="fused head with --head-optimizer sgd or adam: its rate (default: --learning-rate when "
                        "the head's rule is --optimizer, else that rule's default, sgd 0.33, adam 2e-3; the "
                        "head's loss is summed over labels, so a rate does not depend on the number of labels)")
    m.add_argument("--label-shards", type=_positive_int, default=None, metavar="S",
                   help="fused head: split its kernel, bias and optimizer slots into S label shards, one per "
                        "device (the GPUs, else S logical CPU devices), so that per step only [batch, H] "
                        "features, their gradient and scalars cross devices (default: one kernel; no XLA)")


def _add_fit_flags(m):
    m.add_argument("--epochs", type=_positive_int, default=None,
                   help="most training epochs (default: about 1200 optimizer steps, within [3, 20]); early "
                        "stopping (--patience) ends a run sooner and --select keeps the best epoch's weights")
    m.add_argument("--select", default=None, choices=["macro_f1", "micro_f1", "p@1", "ndcg@5", "val_loss", "last"],
                   help="the epoch whose weights are kept: best validation macro-F1 at the tuned global threshold "
                        "(the dense head's default), micro-F1, P@1 (the fused head's default), nDCG@5 (fused), "
                        "lowest validation loss, or the last epoch")
    m.add_argument("--patience", type=_nonnegative_int, default=None,
                   help="stop after this many epochs without a better --select score (default 3; 0: never stop "
                        "early)")
    m.add_argument("--batch-size", type=_positive_int, default=None,
                   help="global batch size (default: the model's, 32; ngram 64)")
    m.add_argument("--optimizer", default=None, choices=["adam", "sgd"],
                   help="adam or sgd (momentum 0.9) (default: the model's, adam; the linear n-gram model sgd, "
                        "whose small steps on rare n-grams keep it from memorising the training set)")
    m.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="learning rate (default: the model's: adam 2e-3, ngram 0.01, sgd 0.33). The training "
                        "loss is summed over labels and averaged over documents, so a rate does not depend "
                        "on the number of labels")
    m.add_argument("--adam-epsilon", type=_positive_float, default=None, metavar="EPS",
                   help="Adam's epsilon (default: the model's: 1e-7, Keras' default; ngram 9e-6, which damps the "
                        "steps of rare n-grams)")
    m.add_argument("--weight-decay", type=_nonnegative_float, default=0.0, metavar="WD",
                   help="decoupled weight decay: each step multiplies every weight by 1 - lr * WD (default 0: "
                        "none)")
    m.add_argument("--max-length", type=_max_length, default=None,
                   help="token ids per document, [CLS]/[SEP] included (default: the 95th percentile of the "
                        "training documents' tokens, rounded up to a multiple of 32 within [32, 512])")
    m.add_argument("--vocab-size", type=_vocab_size, default=None,
                   help="largest WordPiece vocabulary (default 30000: the learner keeps every piece seen at "
                        "least 5 times, so the corpus sets the size)")
    m.add_argument("--val-size", type=_val_size,
                   help="documents held out from the training data to tune thresholds: a fraction or a "
                        "count (default: 1000 when there are >= 5000 training documents, as Huang et al. "
                        "did on Reuters, else 10%%)")
    m.add_argument("--mixed-precision", default="off", choices=["off", "float16", "bfloat16"], action=_Given,
                   help="Keras mixed-precision policy (logits and loss stay float32; default off; with --encoder: "
                        "bfloat16 on a GPU of compute capability >= 8.0, float16 on >= 7.0, else off)")
    _add_encoder_flag(m)
    m.add_argument("--warmup", type=_fraction, default=None, metavar="FRACTION",
                   help="--encoder: the share of the optimizer steps over which the learning rate rises "
                        "linearly from 0, before its cosine decay to 0 (default 0.1, BERT's)")
    m.add_argument("--jit-compile", default="auto", choices=["auto", "on", "off"],
                   help="XLA-compile the train step (auto: on with a GPU, off on CPU, where it is slower)")
    m.add_argument("--seed", type=_nonnegative_int, default=0,
                   help="seed of weights, shuffling and the validation split")
    m.add_argument("--deterministic", action="store_true",
                   help="reproducible runs: op determinism and a deterministic input order (slower)")
    m.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker"],
                   help="tf.distribute strategy; multiworker reads TF_CONFIG (set FUSEDFOCAL_LOGICAL_CPUS=N "
                        "to test mirrored on N logical CPUs)")
    m.add_argument("--groups", type=_groups, default=None, metavar="auto|huang|HEAD_MIN,TAIL_MAX",
                   help="label groups by training documents: head >= HEAD_MIN, tail <= TAIL_MAX, medium in "
                        "between; auto (default): terciles of the labels by training documents; huang: 35,8 as "
                        "in Huang et al. 2021 on Reuters")
    m.add_argument("--profile", type=_nonnegative_int, default=0, metavar="STEPS",
                   help="capture a TensorFlow profiler trace of STEPS training steps into RUN/logs")
    m.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="Keras progress: 1 progress bar (default), 2 one line per epoch, 0 silent")


def version_text() -> str:
    """``fusedfocal --version``: this package's version and what its native op
    was built against (read from the install's build record, which is cheap)."""
    from fusedfocal import __version__
    from fusedfocal.ops import native

    info = native.build_info()
    if not info:
        built = "no build record of the native op"
    elif info.get("native"):
        built = f"native op built against TensorFlow {info.get('tensorflow')}"
    else:
        built = f"no native op: {info.get('reason', 'not built')}"
    return f"fusedfocal {__version__} ({built})"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fusedfocal",
        description="Train and compare multi-label text classifiers with focal and imbalance losses.")
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the version and the TensorFlow the native op was built against, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train one model with one loss into a run folder",
                       description="Train one model with one loss; writes model.keras, the vocabularies, "
                                   "thresholds.json, metrics.json and TensorBoard logs into --out.")
    t.add_argument("--loss", default="focal", help="loss name: bce, wbce, focal, asl, cb, db, la, poly, dice, "
                                                   "tversky, hinge, logcosh (default focal)")
    t.add_argument("--out", default="runs/train", metavar="RUN_DIR", help="run folder (default runs/train)")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last finished epoch, with its stored "
                        "settings (flags given now override them)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, a folder holding a started or finished "
                        "run is refused)")
    _add_train_flags(t)

    c = sub.add_parser("compare", help="train the same model with several losses and compare them",
                       description="Train the same model with each loss (same seed, data and budget) and "
                                   "write comparison.md, comparison.json and plots into --out.")
    c.add_argument("--losses", action="append", metavar="SPEC",
                   help="comma-separated losses, each optionally with parameters: "
                        "'bce,focal:gamma=2,alpha=0.25,asl,cb,db' (default bce,focal,asl,db,la: cb, the weakest in every measured run, is left out); repeatable")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="output folder (default runs/compare)")
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted comparison in --out with its stored settings: finished losses "
                        "are kept, an interrupted one resumes from its checkpoint")
    c.add_argument("--overwrite", action="store_true", help="replace the comparison already in --out")
    c.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                   help="train every loss once per seed (e.g. 0,1,2) and report mean ± sd per metric "
                        "(default: --seed only)")
    c.add_argument("--threshold-mode", default="global", choices=["global", "per_class", "0.5"],
                   help="thresholds of the main table (default global: one threshold tuned on validation, "
                        "as Huang et al.)")
    _add_train_flags(c)

    e = sub.add_parser("evaluate", help="evaluate a trained run on labelled data",
                       description="Metrics of a run on labelled data with its stored thresholds (never "
                                   "re-tuned). Eval labels unknown to the run are counted, never mapped.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", nargs="+", required=True, metavar="FILE", help="labelled file(s)")
    e.add_argument("--text-field", default=None)
    e.add_argument("--labels-field", default=None)
    e.add_argument("--label-separator", default=None)
    e.add_argument("--split-string-labels", action="store_true", default=None)
    e.add_argument("--groups", type=_groups, default=None, metavar="auto|huang|HEAD_MIN,TAIL_MAX",
                   help="label groups (default: the run's)")
    e.add_argument("--output", metavar="JSON", help="write the metrics here (default RUN_DIR/evaluation.json)")
    _add_encoder_flag(e, training=False)

    p = sub.add_parser("predict", help="predict labels of texts with a trained run",
                       description="Print labels with scores above the run's per-label thresholds "
                                   "(or --threshold), or the --top-k best.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="FILE", help="one text per line, or JSON Lines with a text field")
    p.add_argument("--text-field", default=None)
    p.add_argument("--threshold", type=_probability, help="one threshold for every label instead of the stored ones "
                                                          "(dense head only; a fused run prints its top-k)")
    p.add_argument("--top-k", type=_positive_int, help="print the K best labels whatever their score (a fused run: "
                                                       "default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    _add_encoder_flag(p, training=False)
    from fusedfocal.cli.commands import profile as profile_cmd

    pr = profile_cmd.add_parser(sub)
    from fusedfocal.cli.commands import info as info_cmd

    i = info_cmd.add_parser(sub)
    return parser, {"train": t, "compare": c, "evaluate": e, "predict": p, "profile": pr, "info": i}
