"""Bad inputs: each exits 2 with `argument FLAG: expected ...; received ...`, no traceback, and
nothing written to --out (issue 12). In-process and before any training, so fast."""

from __future__ import annotations

import gzip
import json

import pytest
from clitools import FAST, cli

from fusedfocal.data import write_jsonl, write_tfrecord


def _truncated_gz(d, data):
    raw = gzip.compress(data["train"].read_bytes())
    (d / "trunc.jsonl.gz").write_bytes(raw[: len(raw) // 2])
    return ["--data", d / "trunc.jsonl.gz"]


def _not_gzip(d, data):
    (d / "plain.jsonl.gz").write_bytes(data["train"].read_bytes())
    return ["--data", d / "plain.jsonl.gz"]


def _corrupt_tfrecord(d, data):
    path = write_tfrecord(d / "c.tfrecord", data["texts"], data["labels"])
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return ["--data", path]


def _no_labels(d, data):
    return ["--data", write_jsonl(d / "nolab.jsonl", data["texts"], [[] for _ in data["texts"]])]


def _eval_unknown(d, data):
    return ["--eval", write_jsonl(d / "ev.jsonl", data["texts"][:10], [["zz_new"]] * 10)]


def _string_labels(d, data):
    (d / "s.jsonl").write_text("".join(json.dumps({"text": t, "labels": "|".join(ls)}) + "\n"
                                       for t, ls in zip(data["texts"], data["labels"])))
    return ["--data", d / "s.jsonl"]


def _unknown_suffix(d, data):
    (d / "train.txt").write_text("x\n")
    return ["--data", d / "train.txt"]


def _out_is_file(d, data):
    (d / "afile").write_text("x")
    return ["--out", d / "afile"]


def _data_is_folder(d, data):
    (d / "folder").mkdir(exist_ok=True)
    return ["--data", d / "folder"]


# (id, argv or builder, flag blamed, words in the message)
TRAIN_CASES = [
    ("truncated-gz", _truncated_gz, "--data", ["trunc.jsonl.gz", "truncated or corrupt", "gzip"]),
    ("gz-not-gzip", _not_gzip, "--data", ["plain.jsonl.gz", "truncated or corrupt"]),
    ("corrupt-tfrecord", _corrupt_tfrecord, "--data", ["c.tfrecord", "TFRecord", "truncated or corrupt"]),
    ("no-label-at-all", _no_labels, "--data", ["none of them with a label", "--labels-field"]),
    ("alpha-wrong-length", ["--loss", "focal", "--alpha", "0.25/0.5"], "--alpha",
     ["one value per label", "6 labels", "received 2 values"]),
    ("alpha-for-bce", ["--loss", "bce", "--alpha", "0.25"], "--alpha", ["'bce'", "alpha"]),
    ("max-length-2", ["--max-length", "2"], "--max-length", [">= 3", "'2'"]),
    ("vocab-size-3", ["--vocab-size", "3"], "--vocab-size", [">= 6", "'3'"]),
    ("dropout-1", ["--dropout", "1"], "--dropout", ["[0, 1)", "'1'"]),
    ("dropout-negative", ["--dropout", "-0.1"], "--dropout", ["[0, 1)"]),
    ("out-is-a-file", _out_is_file, "--out", ["afile", "is a file"]),
    ("learning-rate-negative", ["--learning-rate", "-0.001"], "--learning-rate", ["> 0", "'-0.001'"]),
    ("profile-negative", ["--profile", "-1"], "--profile", [">= 0", "'-1'"]),
    ("seed-negative", ["--seed", "-1"], "--seed", [">= 0"]),
    ("gamma-nan", ["--gamma", "nan"], "--gamma", [">= 0", "'nan'"]),
    ("label-smoothing-1", ["--label-smoothing", "1"], "--label-smoothing", ["[0, 1)"]),
    ("eval-no-known-label", _eval_unknown, "--eval", ["training labels", "zz_new"]),
    ("string-labels-hint-is-a-flag", _string_labels, "--data", ["--split-string-labels"]),
    ("unknown-suffix-hint-is-a-flag", _unknown_suffix, "--data", ["train.txt", "rename"]),
    ("data-is-a-folder", _data_is_folder, "--data", ["is a folder", "glob"]),
    ("tf-config-malformed", ["--strategy", "multiworker"], "--strategy", ["TF_CONFIG", "malformed JSON"]),
]


def _run(argv, capsys):
    """Exit status and stderr; an exception escaping the CLI (a traceback for the user) fails."""
    code = cli(*argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("builder, flag, words", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input_is_a_clear_error(builder, flag, words, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    extra = builder(tmp_path, tiny_data) if callable(builder) else builder
    out = tmp_path / "run"
    argv = ["train", "--out", out, *FAST, *extra]
    if "--data" not in extra:
        argv += ["--data", tiny_data["train"]]
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert f"argument {flag}:" in err and "usage:" in err
    assert "expected" in err.lower()
    for w in words:
        assert w in err, (w, err)
    assert "string_labels=" not in err and "format=" not in err  # library argument names
    assert not out.exists() or flag == "--out"  # checked before anything is written


@pytest.mark.parametrize("tf_config, words", [
    ('{"cluster": {}}', ["'cluster'"]),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', ["index"]),
])
def test_tf_config_without_cluster_or_task(tf_config, words, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    code, err = _run(["train", "--data", tiny_data["train"], "--out", tmp_path / "r", "--strategy", "multiworker",
                      *FAST], capsys)
    assert code == 2 and "argument --strategy:" in err and "TF_CONFIG" in err
    assert all(w in err for w in words), err


@pytest.mark.parametrize("argv, flag, words", [
    (["--threshold", "5"], "--threshold", ["[0, 1]", "'5'"]),
    (["--threshold", "-0.5"], "--threshold", ["[0, 1]"]),
    (["--top-k", "0"], "--top-k", ["positive"]),
])
def test_predict_flags_are_range_checked(argv, flag, words, tmp_path, capsys):
    code, err = _run(["predict", tmp_path, "some text", *argv], capsys)
    assert code == 2 and f"argument {flag}:" in err and all(w in err for w in words), err


@pytest.mark.slow
def test_predict_empty_text_and_file_line_numbers(trained_run, tmp_path, capsys):
    code, err = _run(["predict", trained_run, "fine", "  "], capsys)
    assert code == 2 and "argument TEXT:" in err and "non-empty" in err and "text 2 of 2" in err
    f = tmp_path / "texts.txt"
    f.write_text("first text\n\n{not json\n")  # the bad line is line 3 of the file (line 2 is blank)
    code, err = _run(["predict", trained_run, "--file", f], capsys)
    assert code == 2 and "argument --file:" in err and f"{f}:3:" in err, err
    f.write_text('{"text": "ok"}\n\n\n{"text": ""}\n')
    code, err = _run(["predict", trained_run, "--file", f], capsys)
    assert code == 2 and f"{f}:4:" in err and "non-empty" in err, err


def test_label_without_training_positive_is_a_warning(tiny_data, tmp_path, capsys):
    """A label whose only documents are held out for validation: a warning, training can go on."""
    from fusedfocal.cli import build_parser
    from fusedfocal.cli.resolve import prepare
    from fusedfocal.cli.stages.prepare import split_validation
    from fusedfocal.data import read_records

    texts, labels, _ = read_records(tiny_data["train"])
    _, val_idx = split_validation(len(texts), 48, 0)
    labels = [list(ls) for ls in labels]
    labels[val_idx[0]].append("only_in_validation")
    path = write_jsonl(tmp_path / "d.jsonl", texts, labels)
    parser, _ = build_parser()
    args = parser.parse_args(["train", "--data", str(path), "--out", str(tmp_path / "r"), *map(str, FAST)])
    prep = prepare(args)
    err = capsys.readouterr().err
    assert "warning: 1 label(s) have no positive document" in err and "only_in_validation" in err
    assert prep.fit_counts[prep.pipeline.label_vocab.labels.index("only_in_validation")] == 0
    assert not (tmp_path / "r").exists()


def test_compare_bad_per_label_alpha_writes_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, err = _run(["compare", "--data", tiny_data["train"], "--out", out, "--losses", "bce,focal:alpha=0.1/0.2",
                      *FAST], capsys)
    assert code == 2 and "argument --losses:" in err and "one value per label" in err
    assert not out.exists()
