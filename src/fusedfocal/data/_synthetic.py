"""A deterministic, synthetic, long-tailed multi-label text corpus.

The default data of the demo, the tests and the benchmarks when no files are
given. Everything is drawn from one ``np.random.default_rng(seed)``, so the same
arguments give the same corpus on every run and platform.

How a corpus is generated:

1. **Words.** Pronounceable pseudo-words are built from consonant-vowel
   syllables: ``num_filler_words`` shared filler words, and
   ``topic_words_per_label`` topic words for every label. Labels are ordered by
   frequency, ``label_00`` the most frequent. The topic words of a rarer label
   partly overlap those of a more frequent one: the rarest label shares
   ``max_overlap`` of its topic words with a head label, the head shares none.
2. **Label frequencies (Zipf).** Label ``k`` (0-based) is given to
   ``n_k ∝ (k + 1) ** -a`` documents with ``a = ln(head_tail_ratio) / ln(num_labels)``,
   so ``n_0 / n_{L-1} == head_tail_ratio`` before rounding and noise, and
   ``sum(n_k) == num_docs * mean_labels``. No label gets fewer than
   ``min_label_docs`` documents.
3. **Labels per document.** Each document gets ``1 + Poisson(mean_labels - 1)``
   label slots (capped at ``num_labels``), rescaled to the total above. Labels
   are assigned greedily, most frequent first, to the documents with the most
   free slots (random tie-breaks), which meets every ``n_k`` exactly.
4. **Text.** A document has ``Poisson(mean_words)`` filler words (Zipf-like over
   the filler vocabulary), plus, for each of its labels, a number of that
   label's topic words that falls from ``head_signal`` (head) to
   ``tail_signal`` (tail): rare labels are a weaker signal. At least
   ``min_own_words`` of them are the label's own words (not borrowed from a
   head label), so every document of a tail label still carries a word only
   that label owns: the tail is learnable in principle, from few examples.
   Every document also gets ``distractors`` topic words of labels it does not
   have, drawn in proportion to the label frequencies (a tail label's words
   are rarely a distractor, so they stay specific to it). Words are shuffled,
   sentences are capitalised and end with a full stop.
5. **Label noise.** With probability ``flip_rate`` each (document, label) pair is
   replaced, in the observed labels only, by a label drawn from the label
   frequencies, so the long tail survives the noise.

A bag-of-words model learns the head labels easily; the tail labels have a
dozen training documents each, a weak signal (two or three topic words, half
of them shared with a head label) that plain BCE, dominated by the negatives,
under-weights: the gap imbalance-aware losses target.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["synthetic_corpus", "synthetic_splits", "write_jsonl"]

_CONSONANTS = list("bdfgklmnprstvz")
_VOWELS = list("aeiou")


def _pseudo_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """Draws ``count`` distinct pseudo-words of 2-4 syllables not in ``taken``."""
    words: list[str] = []
    while len(words) < count:
        syllables = int(rng.integers(2, 5))
        cons = rng.choice(_CONSONANTS, size=syllables)
        vows = rng.choice(_VOWELS, size=syllables)
        word = "".join(c + v for c, v in zip(cons, vows))
        if rng.random() < 0.3:
            word += str(rng.choice(_CONSONANTS))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def _label_doc_counts(num_docs, num_labels, head_tail_ratio, mean_labels, min_label_docs):
    """Zipf-like number of documents per label, head first."""
    exponent = math.log(head_tail_ratio) / math.log(num_labels) if num_labels > 1 else 0.0
    weights = np.arange(1, num_labels + 1, dtype=np.float64) ** -exponent
    counts = weights * (num_docs * mean_labels / weights.sum())
    counts = np.clip(np.rint(counts), min_label_docs, num_docs).astype(np.int64)
    return counts


def _slots_per_doc(rng, num_docs, num_labels, total):
    """1 + Poisson extra label slots per document, adjusted to sum to ``total``."""
    lam = max(total / num_docs - 1.0, 0.0)
    slots = np.minimum(1 + rng.poisson(lam, size=num_docs), num_labels)
    while slots.sum() != total:
        diff = int(total - slots.sum())
        if diff > 0:
            candidates = np.flatnonzero(slots < num_labels)
        else:
            candidates = np.flatnonzero(slots > 1)
            if candidates.size == 0:  # fewer labels than documents
                candidates = np.flatnonzero(slots > 0)
        pick = rng.choice(candidates, size=min(abs(diff), candidates.size), replace=False)
        slots[pick] += 1 if diff > 0 else -1
    return slots


def _assign_labels(rng, label_counts, slots):
    """Greedy assignment meeting each label's document count exactly."""
    free = slots.astype(np.float64).copy()
    assignment = [[] for _ in range(len(slots))]
    for label, count in enumerate(label_counts):
        # Most free slots first; random jitter breaks ties.
        order = np.argsort(-(free + rng.random(len(free)) * 0.5), kind="stable")
        chosen = order[:count]
        chosen = chosen[free[chosen] > 0]
        for doc in chosen:
            assignment[doc].append(label)
        free[chosen] -= 1
    return assignment


def synthetic_corpus(
    num_docs: int = 4000,
    num_labels: int = 19,
    head_tail_ratio: float = 200.0,
    seed: int = 0,
    *,
    mean_labels: float = 1.4,
    mean_words: float = 60.0,
    num_filler_words: int = 1500,
    topic_words_per_label: int = 12,
    head_signal: int = 6,
    tail_signal: int = 2,
    max_overlap: float = 0.5,
    distractors: int = 2,
    flip_rate: float = 0.02,
    min_label_docs: int = 3,
    min_own_words: int = 1,
) -> tuple[list[str], list[list[str]]]:
    """Generates a long-tailed multi-label corpus (see the module docstring).

    Args:
      num_docs: Number of documents.
      num_labels: Number of labels, named ``label_00``, ``label_01``, ... from
        the most to the least frequent.
      head_tail_ratio: Documents of the most frequent label over documents of
        the least frequent one (before noise), e.g. 100 to 1000.
      seed: Seed of ``np.random.default_rng``.
      mean_labels: Mean number of labels per document (>= 1).
      mean_words: Mean number of filler words per document.
      num_filler_words: Size of the shared filler vocabulary.
      topic_words_per_label: Topic words owned by each label.
      head_signal: Topic words per document for the most frequent label.
      tail_signal: Topic words per document for the least frequent label.
      max_overlap: Fraction of the rarest label's topic words borrowed from a
        head label (linear in the label rank in between).
      distractors: Topic words per document drawn from labels it does not have.
      flip_rate: Probability that an observed (document, label) pair is
        replaced by a label drawn from the label frequencies.
      min_label_docs: Lower bound on documents per label.
      min_own_words: Own (not borrowed) topic words every document of a label
        gets at least.

    Returns:
      ``(texts, label_lists)``: ``num_docs`` strings and, for each, a list of
      label names.
    """
    _check_corpus_args(num_docs, num_labels, head_tail_ratio, mean_labels)
    rng = np.random.default_rng(seed)
    names = [f"label_{k:02d}" for k in range(num_labels)]
    words = _label_words(rng, num_labels, num_filler_words, topic_words_per_label, max_overlap, head_signal,
                         tail_signal)
    counts = _label_doc_counts(num_docs, num_labels, head_tail_ratio, mean_labels, min_label_docs)
    slots = _slots_per_doc(rng, num_docs, num_labels, int(counts.sum()))
    true_labels = _assign_labels(rng, counts, slots)
    freq = counts / counts.sum()

    texts: list[str] = []
    label_lists: list[list[str]] = []
    for doc_labels in true_labels:
        texts.append(_document_text(rng, doc_labels, words, freq, mean_words, min_own_words, distractors))
        label_lists.append([names[k] for k in _observed_labels(rng, doc_labels, freq, flip_rate)])
    return texts, label_lists


def _check_corpus_args(num_docs, num_labels, head_tail_ratio, mean_labels):
    if num_docs < 1 or num_labels < 1:
        raise ValueError(
            f"Expected num_docs >= 1 and num_labels >= 1. Received: num_docs={num_docs}, num_labels={num_labels}"
        )
    if head_tail_ratio < 1:
        raise ValueError(f"Invalid value for argument `head_tail_ratio`. Expected >= 1. Received: {head_tail_ratio}")
    if mean_labels < 1:
        raise ValueError(f"Invalid value for argument `mean_labels`. Expected >= 1. Received: {mean_labels}")


class _Words(NamedTuple):
    """The corpus's words: the filler vocabulary and its Zipf-like probabilities, and per label
    its topic words (own and borrowed), its own words and its signal (topic words a document)."""

    filler: np.ndarray
    filler_p: np.ndarray
    topic: list[np.ndarray]
    specific: list[np.ndarray]
    signal: np.ndarray


def _label_words(rng, num_labels, num_filler_words, topic_words_per_label, max_overlap, head_signal,
                 tail_signal) -> _Words:
    """Step 1 of the module docstring: filler words first, then each label's own words (one draw order)."""
    taken: set[str] = set()
    filler = np.array(_pseudo_words(rng, num_filler_words, taken))
    own = [_pseudo_words(rng, topic_words_per_label, taken) for _ in range(num_labels)]
    rank = np.linspace(0.0, 1.0, num_labels) if num_labels > 1 else np.zeros(1)
    topic, specific = [], []
    for k in range(num_labels):
        borrowed = int(round(max_overlap * rank[k] * topic_words_per_label))
        donor = own[k % max(1, min(3, num_labels))] if k >= 3 else own[0]
        donor = donor if donor is not own[k] else []
        specific.append(np.array(own[k][: max(1, topic_words_per_label - borrowed)]))
        topic.append(np.array(own[k][: topic_words_per_label - borrowed] + list(donor[:borrowed])))
    signal = np.rint(head_signal + (tail_signal - head_signal) * rank).astype(int)
    filler_p = 1.0 / np.arange(1, num_filler_words + 1) ** 0.9
    filler_p /= filler_p.sum()
    return _Words(filler, filler_p, topic, specific, signal)


def _document_text(rng, doc_labels, words: _Words, freq, mean_words, min_own_words, distractors) -> str:
    """Step 4 of the module docstring: filler, each label's topic words, distractors, shuffled, in sentences."""
    out = list(rng.choice(words.filler, size=max(3, int(rng.poisson(mean_words))), p=words.filler_p))
    for k in doc_labels:
        n = max(1, int(rng.poisson(words.signal[k])))
        picked = [str(w) for w in rng.choice(words.topic[k], size=n)]
        have = sum(w in set(words.specific[k]) for w in picked)
        picked += [str(w) for w in rng.choice(words.specific[k], size=max(0, min_own_words - have))]
        out.extend(picked)
    others = np.array([k for k in range(len(freq)) if k not in doc_labels])
    if others.size and distractors:
        p_other = freq[others] / freq[others].sum()
        for k in rng.choice(others, size=distractors, p=p_other):
            out.append(str(rng.choice(words.topic[k])))
    out = [str(w) for w in rng.permutation(out)]
    sentences, i = [], 0
    while i < len(out):
        n = int(rng.integers(6, 16))
        sentence = out[i : i + n]
        sentences.append(" ".join([sentence[0].capitalize()] + sentence[1:]) + ".")
        i += n
    return " ".join(sentences)


def _observed_labels(rng, doc_labels, freq, flip_rate) -> list[int]:
    """Step 5 of the module docstring: each label replaced with probability ``flip_rate``; sorted ids."""
    observed = []
    for k in doc_labels:
        if rng.random() < flip_rate:
            k = int(rng.choice(len(freq), p=freq))
        if k not in observed:
            observed.append(k)
    return sorted(observed)


def synthetic_splits(
    seed: int = 0,
    num_train: int = 4000,
    num_test: int = 1000,
    **corpus_kwargs,
) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    """A train/test split of one :func:`synthetic_corpus`.

    The corpus of ``num_train + num_test`` documents is generated once and split
    by a seeded permutation, so both splits share one label distribution.

    Args:
      seed: Seed of the corpus and of the split.
      num_train: Training documents.
      num_test: Test documents.
      **corpus_kwargs: Passed to :func:`synthetic_corpus` (``num_labels``,
        ``head_tail_ratio``, ...).

    Returns:
      ``((train_texts, train_labels), (test_texts, test_labels))``.
    """
    texts, labels = synthetic_corpus(num_docs=num_train + num_test, seed=seed, **corpus_kwargs)
    order = np.random.default_rng([seed, 1]).permutation(len(texts))
    train, test = order[:num_train], order[num_train:]
    return (
        ([texts[i] for i in train], [labels[i] for i in train]),
        ([texts[i] for i in test], [labels[i] for i in test]),
    )


def write_jsonl(path: str | os.PathLike, texts, label_lists, *, text_field: str = "text",
                labels_field: str = "labels") -> Path:
    """Writes documents as JSON Lines (gzip-compressed if ``path`` ends in ``.gz``).

    Args:
      path: Output file.
      texts: Document strings.
      label_lists: One list of label names per document.
      text_field: JSON key of the text.
      labels_field: JSON key of the labels.

    Returns:
      The path written.
    """
    import gzip

    if len(texts) != len(label_lists):
        raise ValueError(f"Expected as many label lists as texts. Received: {len(texts)} texts, {len(label_lists)} label lists")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as f:
        for i, (text, labels) in enumerate(zip(texts, label_lists)):
            f.write(json.dumps({"id": i, text_field: text, labels_field: list(labels)}, ensure_ascii=False))
            f.write("\n")
    return path
