"""Readers: formats, gzip, globs, and the bad-input policy (file:line in every error)."""

from __future__ import annotations

import csv
import gzip
import json
import re

import pytest

from fusedfocal.data import ReadStats, infer_format, read_records, write_jsonl, write_tfrecord

TEXTS = ["Cocoa prices rose.", "Wheat and corn exports fell.", "No topic here.", "Gold hits record."]
LABELS = [["cocoa"], ["wheat", "corn"], [], ["gold"]]


def _write_csv(path, rows, delimiter=",", header=("id", "text", "labels"), sep="|"):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        for i, (text, labels) in enumerate(rows):
            w.writerow([i, text, sep.join(labels)])
    return path


def _write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.json"])
def test_jsonl_round_trip(tmp_path, name):
    path = write_jsonl(tmp_path / name, TEXTS, LABELS)
    texts, labels, stats = read_records(path)
    assert texts == TEXTS
    assert labels == LABELS
    assert isinstance(stats, ReadStats)
    assert stats.records == 4 and stats.no_labels == 1 and stats.num_skipped == 0


@pytest.mark.parametrize("name,delimiter", [("d.csv", ","), ("d.tsv", "\t"), ("d.csv.gz", ","), ("d.tsv.gz", "\t")])
def test_csv_tsv_round_trip(tmp_path, name, delimiter):
    path = _write_csv(tmp_path / name, zip(TEXTS, LABELS), delimiter=delimiter)
    texts, labels, stats = read_records(path)
    assert texts == TEXTS
    assert labels == LABELS
    assert stats.no_labels == 1


def test_csv_custom_columns_and_separator(tmp_path):
    rows = [("a b", ["x", "y"]), ("multi\nline text", ["z"])]
    path = _write_csv(tmp_path / "d.csv", rows, header=("id", "body", "topics"), sep=";")
    texts, labels, _ = read_records(path, text_field="body", labels_field="topics", label_separator=";")
    assert texts == ["a b", "multi\nline text"]
    assert labels == [["x", "y"], ["z"]]


@pytest.mark.parametrize("name", ["d.tfrecord", "d.tfrecord.gz"])
def test_tfrecord_round_trip(tmp_path, name):
    path = write_tfrecord(tmp_path / name, TEXTS, LABELS)
    texts, labels, stats = read_records(path)
    assert texts == TEXTS and labels == LABELS and stats.records == 4


def test_several_files_and_glob_in_order(tmp_path):
    write_jsonl(tmp_path / "a-0.jsonl", TEXTS[:2], LABELS[:2])
    write_jsonl(tmp_path / "a-1.jsonl.gz", TEXTS[2:], LABELS[2:])
    texts, labels, stats = read_records(str(tmp_path / "a-*"))
    assert texts == TEXTS and labels == LABELS
    assert len(stats.files) == 2
    texts2, _, _ = read_records([tmp_path / "a-1.jsonl.gz", tmp_path / "a-0.jsonl"])
    assert texts2 == TEXTS[2:] + TEXTS[:2]


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        read_records(str(tmp_path / "*.jsonl"))
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(ValueError, match=r"d\.xml.*suffix '\.xml'"):
        read_records(tmp_path / "d.xml")
    assert infer_format("x/y.TSV.gz") == "tsv"


def test_invalid_arguments(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", TEXTS, LABELS)
    with pytest.raises(ValueError, match="on_error"):
        read_records(path, on_error="ignore")
    with pytest.raises(ValueError, match="format"):
        read_records(path, format="xml")


# ------------------------------------------------------------------ bad input
GOOD = json.dumps({"text": "fine", "labels": ["a"]}).encode()
BAD_JSONL = {
    "malformed": (b'{"text": "oops", "labels": [', "malformed JSON"),
    "missing_field": (json.dumps({"body": "x", "labels": ["a"]}).encode(),
                      "missing field 'text'. Expected a JSON object with keys 'text' and 'labels'. Received keys: ['body', 'labels']"),
    "invalid_utf8": (b'{"text": "caf\xe9", "labels": ["a"]}', "not valid UTF-8"),
    "bad_labels": (json.dumps({"text": "x", "labels": "a|b"}).encode(), 'string_labels="split"'),
}


@pytest.mark.parametrize("kind", sorted(BAD_JSONL))
def test_bad_jsonl_line_raises_with_file_and_line(tmp_path, kind):
    bad, message = BAD_JSONL[kind]
    path = _write_lines(tmp_path / "bad.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(ValueError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


@pytest.mark.parametrize("kind", sorted(BAD_JSONL))
def test_bad_jsonl_line_skipped_counted_and_warned(tmp_path, kind):
    bad, _ = BAD_JSONL[kind]
    path = _write_lines(tmp_path / "bad.jsonl", [GOOD, bad, GOOD])
    with pytest.warns(UserWarning, match=rf"Skipped 1 bad record.*{kind}: 1.*bad\.jsonl:2"):
        texts, _, stats = read_records(path, on_error="skip")
    assert texts == ["fine", "fine"]
    assert stats.skipped == {kind: 1} and stats.num_skipped == 1
    assert stats.errors[0].startswith(f"{path}:2: ")


def test_labels_not_list_of_strings(tmp_path):
    path = _write_lines(tmp_path / "d.jsonl", [GOOD, json.dumps({"text": "x", "labels": [1, 2]}).encode()])
    with pytest.raises(ValueError, match=r"d\.jsonl:2: field 'labels' must be a list of strings"):
        read_records(path)


def test_json_array_line_is_not_an_object(tmp_path):
    path = _write_lines(tmp_path / "d.json", [b'["text", "labels"]'])
    with pytest.raises(ValueError, match=r"d\.json:1: expected a JSON object"):
        read_records(path)


def test_string_labels_split_when_configured(tmp_path):
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "x", "labels": "a| b |a"}).encode(), GOOD])
    _, labels, stats = read_records(path, string_labels="split")
    assert labels == [["a", "b"], ["a"]]
    assert stats.split_string_labels == 1


def test_empty_text_and_no_labels_are_kept_and_counted(tmp_path):
    lines = [json.dumps({"text": "  ", "labels": ["a"]}).encode(), b"",
             json.dumps({"text": "x", "labels": []}).encode()]
    path = _write_lines(tmp_path / "d.jsonl", lines)
    with pytest.warns(UserWarning, match="1 record.*empty text kept"):
        texts, labels, stats = read_records(path)
    assert texts == ["  ", "x"] and labels == [["a"], []]
    assert (stats.empty_text, stats.no_labels, stats.blank_lines, stats.num_skipped) == (1, 1, 1, 0)


def test_csv_missing_column_names_header_line(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("a", ["x"])], header=("id", "body", "labels"))
    with pytest.raises(ValueError) as info:
        read_records(path, on_error="skip")
    assert str(info.value).startswith(f"{path}:1: missing column 'text'")
    assert "Received columns: ['id', 'body', 'labels']" in str(info.value)


def test_csv_short_row_and_bad_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,labels\nok,a\nshort\n\"caf\xe9\",b\nok2,c|d\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: missing column 'labels'")):
        read_records(path)
    path.write_bytes(b"text,labels\nok,a\n\"caf\xe9\",b\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: bytes are not valid UTF-8")):
        read_records(path)
    path.write_bytes(b"text,labels\nok,a\nshort\n\"caf\xe9\",b\nok2,c|d\n")
    with pytest.warns(UserWarning, match="Skipped 2"):
        texts, labels, stats = read_records(path, on_error="skip")
    assert texts == ["ok", "ok2"] and labels == [["a"], ["c", "d"]]
    assert stats.skipped == {"missing_field": 1, "invalid_utf8": 1}


def test_csv_line_number_after_multiline_cell(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b'text\tlabels\n"two\nlines"\ta\nshort\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:4: missing column")):
        read_records(path)


def test_tfrecord_missing_feature_names_record(tmp_path):
    path = write_tfrecord(tmp_path / "d.tfrecord", TEXTS, LABELS, labels_field="topics")
    with pytest.raises(ValueError, match=re.escape(f"{path}:1: missing feature 'labels'")):
        read_records(path)
    _, labels, _ = read_records(path, labels_field="topics")
    assert labels == LABELS
