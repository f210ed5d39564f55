"""Settings chosen from the data (issue 20): the rules of fusedfocal.cli.resolve.settings on corpora of
different lengths and label counts, their block and config.json, their reuse by --resume, and a
learning rate that does not depend on the number of labels."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from clitools import cli

from fusedfocal.cli import spec as specs
from fusedfocal.cli.resolve import settings as st
from fusedfocal.cli.parser import build_parser
from fusedfocal.data import synthetic_corpus, write_jsonl


def _args(*argv):
    parser, _ = build_parser()
    return parser.parse_args(["train", *map(str, argv)])


def _resolve(lengths, documents, val_docs=100, **flags):
    args = _args(*[x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", v)])
    chosen = st.resolve_vocab(args)
    chosen = st.resolve(args, lengths, documents=documents, vocab_tokens=1234, val_docs=val_docs,
                        settings=chosen)
    return args, chosen


# ----------------------------------------------------------------------------- the rules, as functions
def test_short_documents_get_the_cnn_and_its_defaults():
    lengths = np.arange(10, 110)  # 95th percentile 104.05 -> 105 tokens
    args, chosen = _resolve(lengths, documents=3300, val_docs=300)
    assert args.model == "cnn" and chosen["model"].source == "data"
    assert args.max_length == 128  # 105 rounded up to a multiple of 32
    assert (args.optimizer, args.learning_rate, args.batch_size) == ("adam", 2e-3, 32)
    assert args.adam_epsilon == 1e-7 and chosen["adam_epsilon"].source == "default"
    assert args.epochs == math.ceil(st.STEP_BUDGET / (3000 // 32))  # 93 steps an epoch
    assert args.vocab_size == st.VOCAB_CAP and args.patience == 3
    assert "1,234 tokens" in chosen["vocab_size"].why
    assert "truncates 0 of 100" in chosen["max_length"].why


def test_long_documents_get_the_ngram_model_and_its_defaults():
    lengths = np.concatenate([np.full(90, 200), np.full(10, 2000)])  # 95th percentile 2000
    args, chosen = _resolve(lengths, documents=7769, val_docs=1000)
    assert args.model == "ngram" and "> 256" in chosen["model"].why
    assert args.max_length == st.MAX_LENGTH  # capped
    assert "truncates 10 of 100" in chosen["max_length"].why
    assert (args.ngram_hidden, args.ngram_bigrams) == (256, 0)
    assert (args.optimizer, args.learning_rate, args.batch_size) == ("adam", 1e-2, 64)
    assert args.adam_epsilon == 9e-6 and chosen["adam_epsilon"].source == "model"
    assert args.epochs == math.ceil(st.STEP_BUDGET / (6769 // 64))  # 105 steps an epoch


def test_epoch_budget_bounds_and_tiny_lengths():
    args, _ = _resolve(np.full(50, 5), documents=200_000, val_docs=1000)  # 6218 steps an epoch
    assert args.epochs == st.MIN_EPOCHS and args.max_length == st.MIN_LENGTH
    args, _ = _resolve(np.full(50, 5), documents=300, val_docs=30)  # 8 steps an epoch
    assert args.epochs == st.MAX_EPOCHS


def test_flags_win_and_the_linear_ngram_model_gets_sgd():
    args, chosen = _resolve(np.full(100, 40), documents=1000, model="ngram", ngram_hidden=0, max_length=64,
                            epochs=4)
    assert chosen["model"].source == "flag" and args.model == "ngram"
    assert (args.optimizer, args.learning_rate, args.batch_size) == ("sgd", 0.33, 64)
    assert (args.max_length, args.epochs) == (64, 4)
    assert chosen["max_length"].source == chosen["epochs"].source == "flag"
    # another optimizer than the model's, without a rate: that optimizer's default rate
    args, chosen = _resolve(np.full(100, 40), documents=1000, optimizer="sgd")
    assert args.model == "cnn" and args.learning_rate == st.OPTIMIZER_RATES["sgd"]
    assert "adam" in chosen["learning_rate"].why


def test_block_names_every_setting_and_its_source():
    _, chosen = _resolve(np.arange(10, 110), documents=3300, val_docs=300, batch_size=16)
    lines = st.block(chosen)
    text = "\n".join(lines)
    for k, s in chosen.items():  # every setting, the cnn's without the n-gram ones
        assert f"{st.FLAGS[k]} {st._fmt(s.value)}" in text
    assert "--ngram" not in text
    assert re.search(r"--batch-size 16 +\[flag\] given", text)
    # the model's optimizer and rate share one line and one reason
    assert re.search(r"--optimizer adam --learning-rate 0.002 +\[model\] the CNN's defaults", text)
    assert len(lines) == 1 + len({(s.source, s.why) for s in chosen.values()})


# ----------------------------------------------------------------------------- the rules on corpora
@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    d = tmp_path_factory.mktemp("settings")
    out = {}
    for name, kw in {"short20": dict(num_labels=20, mean_words=12, num_docs=400),
                     "long50": dict(num_labels=50, mean_words=420, num_docs=400)}.items():
        texts, labels = synthetic_corpus(head_tail_ratio=30.0, seed=5, num_filler_words=300, **kw)
        out[name] = (write_jsonl(d / f"{name}.jsonl", texts, labels), texts, labels)
    return out


@pytest.mark.parametrize("name", ["short20", "long50"])
def test_prepare_resolves_what_the_rules_say(corpora, name):
    from fusedfocal.cli.resolve import prepare

    path, texts, labels = corpora[name]
    args = _args("--data", path, "--val-size", "40")
    prep = prepare(args, quiet_settings=True)
    lengths = prep.pipeline.token_lengths(texts)  # the learnt vocabulary's tokens of every training document
    p95 = np.percentile(lengths, 95)
    assert args.model == ("ngram" if p95 > 256 else "cnn")
    assert args.model == {"short20": "cnn", "long50": "ngram"}[name]
    assert args.max_length == min(512, max(32, 32 * math.ceil(math.ceil(p95) / 32)))
    assert prep.pipeline.config.max_length == args.max_length
    assert prep.pipeline.config.batch_size == args.batch_size == st.MODEL_DEFAULTS[args.model]["batch_size"]
    assert args.epochs == min(20, max(3, math.ceil(st.STEP_BUDGET / (360 // args.batch_size))))
    assert args.vocab_size == st.VOCAB_CAP > len(prep.pipeline.wordpiece_vocab)
    assert prep.pipeline.num_labels == len({n for ls in labels for n in ls})
    assert set(prep.settings) >= {"model", "max_length", "vocab_size", "epochs", "optimizer", "learning_rate"}
    cut = int((lengths > args.max_length).sum())
    assert f"truncates {cut} of {len(texts)}" in prep.settings["max_length"].why


# ----------------------------------------------------------------------------- stored, and reused by --resume
@pytest.mark.slow
def test_settings_are_stored_and_reused_by_resume(tiny_data, tmp_path, monkeypatch, capsys):
    from fusedfocal.cli.store import rundir

    run = tmp_path / "run"
    monkeypatch.setenv(rundir.FAULT_ENV, "checkpoint-1")
    monkeypatch.setenv(rundir.FAULT_ACTION_ENV, "raise")
    # only the shape of the tiny model is given: the settings of the table are chosen from the data
    with pytest.raises(rundir.InjectedFault):
        cli("train", "--data", tiny_data["train"], "--eval", tiny_data["test"], "--out", run, "--loss", "bce",
            "--val-size", "48", "--filters", "8", "--embed-dim", "8", "--epochs", "2", "--patience", "0",
            "--verbose", "0")
    printed = capsys.readouterr().err
    assert "Settings (the ones not given are chosen from the data" in printed
    cfg = json.loads((run / "config.json").read_text())
    chosen = cfg["settings"]
    assert chosen["model"] == {"value": "cnn", "source": "data", "why": chosen["model"]["why"]}
    assert chosen["epochs"]["source"] == "flag" and chosen["max_length"]["source"] == "data"
    for name in ("model", "max_length", "vocab_size", "batch_size", "learning_rate", "optimizer"):
        assert specs.load(cfg).flat()[name] == chosen[name]["value"]  # the values are the run's spec now
    assert cfg["pipeline"]["max_length"] == chosen["max_length"]["value"]

    monkeypatch.delenv(rundir.FAULT_ENV)

    def no_resolution(*a, **k):
        raise AssertionError("a resumed run chose its settings again")
    monkeypatch.setattr(st, "resolve", no_resolution)
    assert cli("train", "--out", run, "--resume") == 0
    printed = capsys.readouterr().err
    assert "Settings (stored in config.json" in printed
    m = json.loads((run / "metrics.json").read_text())
    assert m["settings"]["max_length"] == chosen["max_length"]["value"]
    assert m["settings"]["batch_size"] == chosen["batch_size"]["value"]
    assert m["settings"]["model"] == "cnn" and m["settings"]["chosen"]["max_length"] == "data"
    assert json.loads((run / "config.json").read_text())["settings"] == chosen
    # evaluate reads the stored pipeline: the same max length
    assert cli("evaluate", run, "--data", tiny_data["test"]) == 0


# ----------------------------------------------------------------------------- a rate that does not depend on the label count
def _label_corpus(tmp_path, num_labels):
    """The same documents with 20 labels, or with 200: ten copies of each of the 20 (the same
    task ten times over, so each label's best loss is the same in both)."""
    texts, labels = synthetic_corpus(num_docs=1200, num_labels=20, head_tail_ratio=10.0, seed=11, mean_words=20,
                                     num_filler_words=300)
    copies = num_labels // 20
    if copies > 1:
        labels = [[f"{n}_{k}" for n in ls for k in range(copies)] for ls in labels]
    return write_jsonl(tmp_path / f"labels{num_labels}.jsonl", texts, labels)


@pytest.mark.slow
@pytest.mark.parametrize("model", [["--model", "ngram", "--ngram-hidden", "0"], ["--model", "cnn"]],
                         ids=["linear-ngram-sgd", "cnn-adam"])
def test_training_loss_decrease_does_not_depend_on_the_label_count(tmp_path, model):
    """20 labels, and 200 labels that are ten copies of each: with the default optimizer and rate of
    each model, the per-label training loss falls by a comparable share in three epochs. Averaging
    over labels (the library's reduction) would make SGD's steps 10 times smaller with 200 labels;
    summed over labels, the linear model's labels learn exactly as with 20."""
    drops = {}
    for c in (20, 200):
        run = tmp_path / f"run{c}"
        assert cli("train", "--data", _label_corpus(tmp_path, c), "--out", run, "--loss", "bce", "--epochs", "3",
                   "--patience", "0", "--val-size", "100", "--filters", "16", "--embed-dim", "16",
                   "--verbose", "0", *model) == 0
        m = json.loads((run / "metrics.json").read_text())
        assert m["labels"] == c and m["settings"]["chosen"]["learning_rate"] == "model"
        loss = np.asarray(m["history"]["loss"]) / m["labels"]  # the logged loss is the sum over labels
        drops[c] = (loss[0] - loss[-1]) / loss[0]
    # measured 2026-12-03: linear n-gram + SGD 0.131 / 0.129 (each label's weights take the same
    # steps); CNN + Adam 0.063 / 0.045 (the shared layers and the logits' Glorot initialisation,
    # whose scale depends on the label count, differ)
    assert drops[20] > 0.02 and drops[200] > 0.02, drops
    assert 0.5 < drops[200] / drops[20] < 2.0, drops
    if model[1] == "ngram":
        assert drops[200] == pytest.approx(drops[20], rel=0.05)


def test_focal_gamma_is_the_command_lines_default_and_recorded_as_such():
    """Focal's gamma on the command line's dense head is 0.5 (issue 28: the one value at or above BCE
    on both measured corpora; the fused head keeps 2, which ranked better there), given to the loss
    as if by its flag and tagged "default": the label (and so the run folder's name) keeps "focal",
    metrics.json's loss_params records the value, and a given --gamma (or --losses focal:gamma=G) wins."""
    from fusedfocal.cli import resolve
    from fusedfocal.cli.stages.lossargs import loss_label

    parse = build_parser()[0].parse_args
    params = resolve.loss_params(parse(["train", "--loss", "focal"]), head="dense")
    assert params == {"gamma": (st.FOCAL_GAMMA, "default")} and st.FOCAL_GAMMA == 0.5
    assert loss_label("focal", params) == "focal"
    assert resolve.loss_params(parse(["train", "--loss", "focal"]), head="fused") == {}  # the library's 2
    given = resolve.loss_params(parse(["train", "--loss", "focal", "--gamma", "2"]), head="dense")
    assert given == {"gamma": (2.0, "--gamma")} and loss_label("focal", given) == "focal(gamma=2.0)"
    assert resolve.loss_params(parse(["train", "--loss", "bce"]), head="dense") == {}
    assert resolve.loss_params(parse(["compare"]), "focal", head="dense") == {"gamma": (0.5, "default")}
    assert resolve.loss_params(parse(["compare"]), "cb", head="dense") == {}  # cb, db, poly keep their gamma
    chosen = st.loss_settings(["bce", "focal"], {}, "dense")
    assert chosen["focal_gamma"].value == 0.5 and chosen["focal_gamma"].source == "default"
    assert "--gamma 0.5" in "\n".join(st.block(chosen)) and "Reuters" in chosen["focal_gamma"].why
    assert st.loss_settings(["focal"], {"gamma": (2.0, "--gamma")}, "dense") == {}
    assert st.loss_settings(["bce"], {}, "dense") == {} and st.loss_settings(["focal"], {}, "fused") == {}
