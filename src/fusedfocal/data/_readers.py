"""Readers: JSON Lines, CSV/TSV, TFRecord and Python lists into texts and labels.

Every reader yields records with their file and 1-based line (record) number,
so every error names both. The policy for bad input (see :func:`read_records`):

===========================  ======================  ===========================
case                         ``on_error="raise"``    ``on_error="skip"``
===========================  ======================  ===========================
malformed JSON line          ValueError file:line    skipped, counted, warned
not a JSON object            ValueError file:line    skipped, counted, warned
missing field / column       ValueError file:line    skipped, counted, warned
bytes not valid UTF-8        ValueError file:line    skipped, counted, warned
labels not a list of str     ValueError file:line    skipped, counted, warned
labels given as one string   ValueError with a hint, or split on
                             ``label_separator`` if ``string_labels="split"``
empty / blank text           kept, counted, warned   kept, counted, warned
no labels (empty list/cell)  kept, counted           kept, counted
blank line (JSONL)           ignored, counted        ignored, counted
===========================  ======================  ===========================

"No labels" is a valid negative example in multi-label data, so it is kept.
A CSV/TSV file with a header that lacks a column raises in both modes (every
row would be skipped).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import gzip
import io
import json
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

__all__ = ["Example", "ReadStats", "read_records", "resolve_paths", "infer_format", "write_tfrecord"]

FORMATS = ("jsonl", "csv", "tsv", "tfrecord")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
             ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfrec": "tfrecord"}
_ON_ERROR = ("raise", "skip")
_STRING_LABELS = ("raise", "split")


class Example(NamedTuple):
    """One document: its text and label names."""

    text: str
    labels: list[str]


@dataclasses.dataclass
class ReadStats:
    """What a read kept, skipped and noticed. Counts are over all files.

    Attributes:
      files: Files read, in order.
      records: Records returned.
      skipped: Records dropped (``on_error="skip"``), by reason: ``"malformed"``,
        ``"missing_field"``, ``"invalid_utf8"``, ``"bad_labels"``.
      empty_text: Records kept whose text is empty or only white space.
      no_labels: Records kept with an empty label list.
      blank_lines: Blank JSON Lines lines ignored (not records).
      split_string_labels: Records whose labels were one string, split on the
        separator (``string_labels="split"``).
      errors: The first 20 skip messages (``file:line: reason``).
    """

    files: list[str] = dataclasses.field(default_factory=list)
    records: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    empty_text: int = 0
    no_labels: int = 0
    blank_lines: int = 0
    split_string_labels: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        """Total records dropped."""
        return sum(self.skipped.values())


class _RecordError(ValueError):
    """A bad record; ``kind`` is the ``ReadStats.skipped`` key."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def infer_format(path: str | os.PathLike) -> str:
    """Returns ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"tfrecord"`` from the suffix (``.gz`` ignored).

    Args:
      path: A file name.

    Returns:
      The format name.

    Raises:
      ValueError: If the suffix is unknown.
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"{path}: cannot infer the format from the suffix {suffix!r}. Expected one of "
            f"{sorted(_SUFFIXES)} (optionally + '.gz'), or pass format= one of {list(FORMATS)}."
        )
    return _SUFFIXES[suffix]


def resolve_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expands one path, a glob pattern or a list of both into existing files.

    Args:
      paths: A path or pattern (``*``, ``?``, ``[...]``), or a sequence of them.

    Returns:
      The files, each pattern's matches sorted, in the order given.

    Raises:
      FileNotFoundError: If a path does not exist or a pattern matches nothing.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = os.fspath(p)
        if glob.has_magic(p):
            matches = sorted(glob.glob(p))
            if not matches:
                raise FileNotFoundError(f"{p}: the pattern matches no file.")
            files.extend(Path(m) for m in matches)
        elif os.path.isfile(p):
            files.append(Path(p))
        elif os.path.isdir(p):
            raise IsADirectoryError(f"{p}: is a folder, not a file; expected a file or a glob such as "
                                    f"'{os.path.join(p, '*.jsonl')}'.")
        else:
            raise FileNotFoundError(f"{p}: no such file.")
    if not files:
        raise ValueError("Expected at least one input file. Received: an empty list of paths.")
    return files


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _labels_from_value(value, where: str, field: str, separator: str, string_labels: str, stats: ReadStats):
    """Validates a JSON labels value; returns a list of label names."""
    if isinstance(value, str):
        if string_labels == "split":
            stats.split_string_labels += 1
            return _split_labels(value, separator)
        raise _RecordError(
            "bad_labels",
            f"{where}: field '{field}' is a string ({value[:60]!r}); expected a list of strings such as "
            f'["a", "b"]. To split such strings on {separator!r}, pass string_labels="split" '
            f"(and label_separator=...).",
        )
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _RecordError(
            "bad_labels",
            f"{where}: field '{field}' must be a list of strings. Received: {type(value).__name__} {str(value)[:60]}",
        )
    return _dedupe(v.strip() for v in value if v.strip())


def _dedupe(labels: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def _split_labels(cell: str, separator: str) -> list[str]:
    return _dedupe(s.strip() for s in cell.split(separator) if s.strip())


def _iter_jsonl(path: Path, text_field, labels_field, separator, string_labels, stats) -> Iterator[tuple[int, Example]]:
    with _open_bytes(path) as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, _RecordError("invalid_utf8", f"{where}: bytes are not valid UTF-8 ({e.reason} at byte {e.start}).")
                continue
            if not line.strip():
                stats.blank_lines += 1
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, _RecordError("malformed", f"{where}: malformed JSON ({e.msg}, column {e.colno}).")
                continue
            if not isinstance(obj, dict):
                yield lineno, _RecordError(
                    "malformed", f"{where}: expected a JSON object with keys '{text_field}' and '{labels_field}'. "
                    f"Received: {type(obj).__name__}")
                continue
            missing = [k for k in (text_field, labels_field) if k not in obj]
            if missing:
                yield lineno, _RecordError(
                    "missing_field",
                    f"{where}: missing field '{missing[0]}'. Expected a JSON object with keys '{text_field}' and "
                    f"'{labels_field}'. Received keys: {sorted(obj)}",
                )
                continue
            text = obj[text_field]
            if not isinstance(text, str):
                yield lineno, _RecordError("malformed", f"{where}: field '{text_field}' must be a string. Received: {type(text).__name__}")
                continue
            try:
                labels = _labels_from_value(obj[labels_field], where, labels_field, separator, string_labels, stats)
            except _RecordError as e:
                yield lineno, e
                continue
            yield lineno, Example(text, labels)


def _iter_csv(path: Path, delimiter, text_field, labels_field, separator, stats) -> Iterator[tuple[int, Example]]:
    with _open_bytes(path) as f:
        data = f.read()
    # surrogateescape keeps bad bytes as lone surrogates, found per row below.
    text_io = io.StringIO(data.decode("utf-8", errors="surrogateescape"), newline="")
    reader = csv.reader(text_io, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [h.strip() for h in header]
    missing = [k for k in (text_field, labels_field) if k not in names]
    if missing:
        raise ValueError(
            f"{path}:1: missing column '{missing[0]}'. Expected a header row with columns '{text_field}' and "
            f"'{labels_field}'. Received columns: {names}"
        )
    ti, li = names.index(text_field), names.index(labels_field)
    prev_line = reader.line_num
    for row in reader:
        lineno = prev_line + 1  # first physical line of this record
        prev_line = reader.line_num
        where = f"{path}:{lineno}"
        if not row:
            stats.blank_lines += 1
            continue
        if any(_has_surrogate(cell) for cell in row):
            yield lineno, _RecordError("invalid_utf8", f"{where}: bytes are not valid UTF-8.")
            continue
        if len(row) <= max(ti, li):
            col = text_field if len(row) <= ti else labels_field
            yield lineno, _RecordError(
                "missing_field",
                f"{where}: missing column '{col}': the row has {len(row)} cells, the header {len(names)}.",
            )
            continue
        yield lineno, Example(row[ti], _split_labels(row[li], separator))


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _iter_tfrecord(path: Path, text_field, labels_field, stats) -> Iterator[tuple[int, Example]]:
    import tensorflow as tf

    compression = "GZIP" if path.name.lower().endswith(".gz") else ""
    for index, raw in enumerate(tf.data.TFRecordDataset(str(path), compression_type=compression).as_numpy_iterator(), 1):
        where = f"{path}:{index}"
        try:
            example = tf.train.Example.FromString(raw)
        except Exception as e:  # protobuf DecodeError
            yield index, _RecordError("malformed", f"{where}: record is not a tf.train.Example ({e}).")
            continue
        feats = example.features.feature
        missing = [k for k in (text_field, labels_field) if k not in feats]
        if missing:
            yield index, _RecordError(
                "missing_field",
                f"{where}: missing feature '{missing[0]}'. Expected a tf.train.Example with bytes features "
                f"'{text_field}' and '{labels_field}'. Received features: {sorted(feats)}",
            )
            continue
        try:
            texts = [b.decode("utf-8") for b in feats[text_field].bytes_list.value]
            labels = [b.decode("utf-8") for b in feats[labels_field].bytes_list.value]
        except UnicodeDecodeError as e:
            yield index, _RecordError("invalid_utf8", f"{where}: bytes are not valid UTF-8 ({e.reason}).")
            continue
        if len(texts) != 1:
            yield index, _RecordError("malformed", f"{where}: feature '{text_field}' must hold exactly one bytes value. Received: {len(texts)}")
            continue
        yield index, Example(texts[0], _dedupe(v.strip() for v in labels if v.strip()))


def read_records(
    paths,
    *,
    format: str | None = None,
    text_field: str = "text",
    labels_field: str = "labels",
    label_separator: str = "|",
    on_error: str = "raise",
    string_labels: str = "raise",
    warn: bool = True,
) -> tuple[list[str], list[list[str]], ReadStats]:
    """Reads documents from files into texts and label lists.

    Args:
      paths: A file, a glob pattern or a list of them. ``.gz`` files are
        decompressed.
      format: ``"jsonl"``, ``"csv"``, ``"tsv"`` or ``"tfrecord"``; ``None``
        infers it per file from the suffix (``.jsonl``/``.json``, ``.csv``,
        ``.tsv``, ``.tfrecord``, each optionally + ``.gz``).
      text_field: JSON key, CSV/TSV column or tf.train.Example feature of the text.
      labels_field: Key/column/feature of the labels: a JSON list of strings, a
        CSV/TSV cell of names joined by ``label_separator``, or a bytes list.
      label_separator: Separator of label names inside one CSV/TSV cell (and in
        JSON strings when ``string_labels="split"``).
      on_error: ``"raise"`` (default): a bad record raises ``ValueError``
        naming the file and 1-based line. ``"skip"``: it is dropped, counted in
        ``ReadStats.skipped`` and reported by a warning.
      string_labels: For JSON labels given as one string: ``"raise"`` (default,
        the error says how to fix it) or ``"split"`` on ``label_separator``.
      warn: Emit a ``UserWarning`` summarising skipped records and empty texts.

    Returns:
      ``(texts, label_lists, stats)``.

    Raises:
      ValueError: On a bad record with ``on_error="raise"``, a CSV header
        without the columns, or an invalid argument.
      FileNotFoundError: If a path or pattern matches no file.
    """
    if on_error not in _ON_ERROR:
        raise ValueError(f"Invalid value for argument `on_error`. Expected one of {set(_ON_ERROR)}. Received: on_error={on_error!r}")
    if string_labels not in _STRING_LABELS:
        raise ValueError(
            f"Invalid value for argument `string_labels`. Expected one of {set(_STRING_LABELS)}. Received: string_labels={string_labels!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"Invalid value for argument `format`. Expected one of {set(FORMATS)} or None. Received: format={format!r}")
    stats = ReadStats()
    texts: list[str] = []
    label_lists: list[list[str]] = []
    for path in resolve_paths(paths):
        fmt = format or infer_format(path)
        stats.files.append(str(path))
        if fmt == "jsonl":
            records = _iter_jsonl(path, text_field, labels_field, label_separator, string_labels, stats)
        elif fmt in ("csv", "tsv"):
            records = _iter_csv(path, "," if fmt == "csv" else "\t", text_field, labels_field, label_separator, stats)
        else:
            records = _iter_tfrecord(path, text_field, labels_field, stats)
        for _, record in _readable(records, path, fmt):
            if isinstance(record, _RecordError):
                if on_error == "raise":
                    raise ValueError(str(record))
                stats.skipped[record.kind] += 1
                if len(stats.errors) < 20:
                    stats.errors.append(str(record))
                continue
            if not record.text.strip():
                stats.empty_text += 1
            if not record.labels:
                stats.no_labels += 1
            texts.append(record.text)
            label_lists.append(record.labels)
    stats.records = len(texts)
    if warn:
        _warn_stats(stats)
    return texts, label_lists, stats


def _readable(records, path: Path, fmt: str):
    """``records``, with a truncated or corrupt file (bad gzip stream, damaged TFRecord) turned into
    a ``ValueError`` naming the file instead of a low-level traceback."""
    try:
        yield from records
    except Exception as e:
        low_level = isinstance(e, (EOFError, OSError, zlib.error)) or type(e).__module__.startswith("tensorflow")
        if not low_level or isinstance(e, FileNotFoundError):
            raise
        gz = path.name.lower().endswith(".gz")
        kind = ("gzip-compressed " if gz else "") + ("TFRecord" if fmt == "tfrecord" else fmt.upper())
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        detail = re.sub(r"\s*\[Op:.*$", "", re.sub(r"\{\{[^}]*\}\}\s*", "", detail))[:200]  # TF's op noise
        raise ValueError(f"{path}: expected a complete {kind} file; received a truncated or corrupt one "
                         f"({type(e).__name__}{': ' + detail if detail else ''}).") from None


def _warn_stats(stats: ReadStats) -> None:
    if stats.num_skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items()))
        first = f" First: {stats.errors[0]}" if stats.errors else ""
        warnings.warn(
            f"Skipped {stats.num_skipped} bad record(s) ({reasons}); kept {stats.records}.{first}",
            UserWarning, stacklevel=3)
    if stats.empty_text:
        warnings.warn(f"{stats.empty_text} record(s) with empty text kept (they tokenize to [CLS] [SEP]).",
                      UserWarning, stacklevel=3)


def write_tfrecord(path: str | os.PathLike, texts: Sequence[str], label_lists: Sequence[Sequence[str]], *,
                   text_field: str = "text", labels_field: str = "labels") -> Path:
    """Writes documents as tf.train.Example records (GZIP if ``path`` ends in ``.gz``).

    Args:
      path: Output file.
      texts: Document strings.
      label_lists: One list of label names per document.
      text_field: Feature name of the text (one bytes value).
      labels_field: Feature name of the labels (a bytes list).

    Returns:
      The path written.
    """
    import tensorflow as tf

    path = Path(path)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.name.endswith(".gz") else "")
    with tf.io.TFRecordWriter(str(path), options) as w:
        for text, labels in zip(texts, label_lists):
            feats = {
                text_field: tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")])),
                labels_field: tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode("utf-8") for s in labels])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    return path
