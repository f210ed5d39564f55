"""The label vocabulary: names, training counts and priors; multi-hot encoding."""

from __future__ import annotations

import collections
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["LabelVocab", "warn_unknown_labels"]

_FORMAT = "fusedfocal.label_vocab/1"


class LabelVocab:
    """Label names in a fixed order, with the training documents per label.

    The order is by training frequency (descending), then by name, so class 0
    is the head of the distribution. ``counts`` and ``priors`` feed
    class-balanced / distribution-balanced losses and output-bias
    initialisation (``bias = log(p / (1 - p))``).

    Args:
      labels: Label names, in class-index order.
      counts: Training documents per label, same order.
      num_docs: Training documents, including those with no label.
    """

    def __init__(self, labels: Sequence[str], counts: Sequence[int], num_docs: int):
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            dupes = [k for k, v in collections.Counter(labels).items() if v > 1]
            raise ValueError(f"Expected unique label names. Received duplicates: {dupes[:10]}")
        if len(counts) != len(labels):
            raise ValueError(f"Expected one count per label. Received: {len(labels)} labels, {len(counts)} counts")
        self.labels: list[str] = labels
        self.counts: np.ndarray = np.asarray(counts, dtype=np.int64)
        self.num_docs: int = int(num_docs)
        self.index: dict[str, int] = {name: i for i, name in enumerate(labels)}

    @classmethod
    def build(cls, label_lists: Iterable[Sequence[str]], *, min_count: int = 1) -> "LabelVocab":
        """Builds the vocabulary from training label lists.

        Args:
          label_lists: One list of label names per training document; a label
            repeated within a document counts once.
          min_count: Drop labels with fewer training documents.

        Returns:
          The vocabulary, ordered by count (descending) then name.
        """
        counter: collections.Counter = collections.Counter()
        num_docs = 0
        for labels in label_lists:
            num_docs += 1
            counter.update(set(labels))
        items = sorted((kv for kv in counter.items() if kv[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        return cls([k for k, _ in items], [v for _, v in items], num_docs)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, name) -> bool:
        return name in self.index

    def __eq__(self, other) -> bool:
        return (isinstance(other, LabelVocab) and self.labels == other.labels
                and np.array_equal(self.counts, other.counts) and self.num_docs == other.num_docs)

    def __repr__(self) -> str:
        head = ", ".join(self.labels[:3])
        return f"LabelVocab({len(self)} labels [{head}{', ...' if len(self) > 3 else ''}], num_docs={self.num_docs})"

    @property
    def priors(self) -> np.ndarray:
        """Fraction of training documents carrying each label (``counts / num_docs``), float64 [C]."""
        return self.counts / max(self.num_docs, 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the vocabulary as JSON (``labels``, ``counts``, ``num_docs``).

        Args:
          path: Output file.

        Returns:
          The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": _FORMAT, "num_docs": self.num_docs, "labels": self.labels,
                   "counts": [int(c) for c in self.counts]}
        path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelVocab":
        """Reads a vocabulary written by :meth:`save`.

        Args:
          path: A JSON file.

        Returns:
          The vocabulary.

        Raises:
          ValueError: If the file is not a label vocabulary.
        """
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a label vocabulary (malformed JSON: {e.msg}).") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a label vocabulary. Expected a JSON object with format={_FORMAT!r}.")
        return cls(payload["labels"], payload["counts"], payload["num_docs"])

    def encode(self, label_lists: Iterable[Sequence[str]]) -> tuple[np.ndarray, collections.Counter]:
        """Multi-hot encodes label lists in NumPy (the pipeline does the same in the graph).

        Args:
          label_lists: One list of label names per document.

        Returns:
          ``(multi_hot, unknown)``: float32 ``[N, C]``, and a Counter of label
          names not in the vocabulary (ignored, never mapped onto a class).
        """
        label_lists = list(label_lists)
        out = np.zeros((len(label_lists), len(self)), np.float32)
        unknown: collections.Counter = collections.Counter()
        for row, labels in enumerate(label_lists):
            for name in labels:
                j = self.index.get(name)
                if j is None:
                    unknown[name] += 1
                else:
                    out[row, j] = 1.0
        return out, unknown

    def encode_ids(self, label_lists: Iterable[Sequence[str]]) -> list[np.ndarray]:
        """Label names -> sorted, unique class ids per document (int64 arrays); unknown names are
        dropped. The ragged form of :meth:`encode`, for large label spaces and
        :mod:`fusedfocal.metrics_xmc`."""
        index = self.index
        return [np.unique(np.fromiter((index[n] for n in labels if n in index), np.int64))
                for labels in label_lists]

    def unknown(self, label_lists: Iterable[Sequence[str]]) -> collections.Counter:
        """Counts label names (occurrences) that are not in the vocabulary."""
        return collections.Counter(n for labels in label_lists for n in labels if n not in self.index)

    def decode(self, multi_hot, threshold: float = 0.5) -> list[list[str]]:
        """Label names whose score is above ``threshold``, per row of ``[N, C]`` scores."""
        scores = np.asarray(multi_hot)
        return [[self.labels[j] for j in np.flatnonzero(row > threshold)] for row in scores]


def warn_unknown_labels(unknown: collections.Counter, where: str = "evaluation data", top: int = 5) -> None:
    """Warns with the number of unknown label occurrences and the most common names."""
    if not unknown:
        return
    names = ", ".join(f"{k!r} ({v})" for k, v in unknown.most_common(top))
    warnings.warn(
        f"{sum(unknown.values())} label occurrence(s) of {len(unknown)} name(s) in {where} are not in the "
        f"label vocabulary and are ignored (never mapped onto a class). Most common: {names}",
        UserWarning, stacklevel=3)
