"""A deterministic synthetic extreme multi-label (XMC) corpus, at any label count.

The long-tailed corpus of :mod:`fusedfocal.data._synthetic` loops over labels
in Python and gives every label its own words, which does not scale past a few
thousand labels. This one is vectorised NumPy throughout (the only Python loop
runs over documents, to join their words), so 131,072 labels and 100,000
documents take a few seconds, and 3,000,000 labels stay practical.

How a corpus is generated (everything from one ``np.random.default_rng(seed)``):

1. **Label frequencies (power law).** Label ``l`` (0-based, ``label_0`` the
   most frequent) is drawn with probability ``p_l ∝ (l + 1) ** -exponent``, the
   Zipf law of XMC data sets (Amazon-670K, Wikipedia: ``exponent`` near 1).
   Rare labels may get no document at all, as in real XMC splits.
2. **Labels per document.** ``1 + Poisson(mean_labels - 1)`` draws from ``p``
   (capped at ``num_labels``); duplicates in a document are dropped, so a
   document has slightly fewer than ``mean_labels`` labels when the head is
   heavy. Ids are sorted within a document.
3. **Label words.** A topic vocabulary of ``topic_words`` pseudo-words is
   shared by the labels: label ``l`` owns a distinct *combination* of
   ``words_per_label`` of them (a seeded draw without replacement from all
   ``topic_words ** words_per_label`` combinations), so every label is
   identified by its words while each word stays frequent enough to be a
   whole WordPiece token (the default vocabulary of 8,192 topic words plus
   ``filler_words`` fits a WordPiece vocabulary of about 10,000).
4. **Text.** A document holds ``Poisson(mean_filler)`` filler words (Zipf over
   the filler vocabulary), every word of each of its labels, and
   ``distractors`` topic words drawn uniformly (noise), shuffled. Words are
   lower-case pseudo-words separated by spaces; no punctuation.

Learnable: a label's words always occur with it, so a bag-of-words encoder
with a wide enough layer can rank a document's labels first; the rarer a
label, the fewer its training documents, which is the XMC tail.
"""

from __future__ import annotations

import math

import numpy as np

from fusedfocal.data._labels import LabelVocab

__all__ = ["synthetic_xmc_corpus", "synthetic_xmc_splits", "xmc_label_names", "xmc_label_vocab"]

_SYLLABLES = np.array([c + v for c in "bdfgklmnprstvz" for v in "aeiou"])  # 70


def _words(indices: np.ndarray, prefix: str) -> np.ndarray:
    """Distinct pseudo-words for distinct non-negative ``indices`` (base-70 syllables)."""
    indices = np.asarray(indices, np.int64)
    digits = max(2, int(math.ceil(math.log(max(int(indices.max(initial=0)) + 1, 2), 70))))
    out = np.full(indices.shape, prefix, dtype=object)
    rest = indices.copy()
    for _ in range(digits):  # a handful of vectorised passes, not one per word
        out = out + _SYLLABLES[rest % 70].astype(object)
        rest //= 70
    return out.astype(str)


def xmc_label_names(num_labels: int) -> list[str]:
    """The label names of :func:`synthetic_xmc_corpus`: ``label_0``, ``label_1``, ... zero-padded."""
    width = len(str(max(num_labels - 1, 0)))
    return np.char.add("label_", np.char.zfill(np.arange(num_labels).astype(str), width)).tolist()


def xmc_label_vocab(label_lists, num_labels: int) -> LabelVocab:
    """A :class:`LabelVocab` of all ``num_labels`` labels in id order (``label_0`` first), with
    their document counts in ``label_lists``.

    ``LabelVocab.build`` keeps only the labels the training split has (about 8,000 of 131,072
    in 4,096 documents); this one gives the head every label, and class ``k`` is the corpus's
    label ``k``. Names not of the corpus raise a ``ValueError``.
    """
    names = xmc_label_names(_check_int("num_labels", num_labels, 1))
    index = {n: i for i, n in enumerate(names)}
    label_lists = list(label_lists)
    try:
        flat = np.fromiter((index[n] for labels in label_lists for n in set(labels)), np.int64)
    except KeyError as e:
        raise ValueError(f"Invalid value for argument `label_lists`. Expected names of the {num_labels} "
                         f"synthetic XMC labels. Received: {e.args[0]!r}") from None
    return LabelVocab(names, np.bincount(flat, minlength=num_labels), len(label_lists))


def _check_int(name, value, low):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid value for argument `{name}`. Expected an int >= {low}. Received: {name}={value!r}")
    return int(value)


def synthetic_xmc_corpus(
    num_docs: int = 20000,
    num_labels: int = 131072,
    seed: int = 0,
    *,
    exponent: float = 1.0,
    mean_labels: float = 5.0,
    words_per_label: int = 2,
    topic_words: int | None = None,
    filler_words: int = 1000,
    mean_filler: float = 20.0,
    distractors: int = 3,
    label_ids: bool = False,
) -> tuple[list[str], list]:
    """Generates a synthetic XMC corpus (see the module docstring).

    Args:
      num_docs: Number of documents.
      num_labels: Number of labels ``C``.
      seed: Seed of ``np.random.default_rng``.
      exponent: Power-law exponent of the label frequencies (``> 0``).
      mean_labels: Mean number of label draws per document (``>= 1``).
      words_per_label: Topic words that identify a label.
      topic_words: Size of the shared topic vocabulary. ``None``:
        ``min(8192, max(32, ceil(2 * num_labels * words_per_label / 64)))``,
        i.e. about 32-64 labels share a word. Must satisfy
        ``topic_words ** words_per_label >= num_labels``.
      filler_words: Size of the filler vocabulary.
      mean_filler: Mean number of filler words per document.
      distractors: Random topic words per document.
      label_ids: Return each document's labels as a sorted int64 array of
        ids instead of a list of names (``xmc_label_names(num_labels)[id]``).

    Returns:
      ``(texts, labels)``: ``num_docs`` strings and, per document, its label
      names (or ids with ``label_ids=True``), most frequent label first in id
      order.
    """
    num_docs, num_labels, words_per_label, filler_words, distractors, topic_words = _check_corpus_args(
        num_docs, num_labels, words_per_label, filler_words, distractors, exponent, mean_labels, mean_filler,
        topic_words)
    rng = np.random.default_rng(seed)
    label_doc, label_val = _draw_labels(rng, num_docs, num_labels, exponent, mean_labels)
    label_splits = np.searchsorted(label_doc, np.arange(num_docs + 1))

    # 3. Each label's combination of topic words: a seeded injective draw, then base-`topic_words` digits.
    combos = rng.choice(topic_words ** words_per_label, size=num_labels, replace=False)
    label_words = np.stack([(combos // topic_words ** j) % topic_words for j in range(words_per_label)], axis=1)

    tok, tok_doc = _draw_tokens(rng, num_docs, topic_words, filler_words, mean_filler, distractors,
                                label_words[label_val].ravel(), np.repeat(label_doc, words_per_label))
    vocab = np.concatenate([_words(np.arange(topic_words), "t"), _words(np.arange(filler_words), "f")])
    splits = np.searchsorted(tok_doc, np.arange(num_docs + 1))
    words = vocab[tok].tolist()
    texts = [" ".join(words[splits[i]:splits[i + 1]]) for i in range(num_docs)]

    if label_ids:
        out = np.split(label_val, label_splits[1:-1])
    else:
        names = np.asarray(xmc_label_names(num_labels))[label_val].tolist()
        out = [names[label_splits[i]:label_splits[i + 1]] for i in range(num_docs)]
    return texts, out


def _check_corpus_args(num_docs, num_labels, words_per_label, filler_words, distractors, exponent, mean_labels,
                       mean_filler, topic_words):
    """The arguments of :func:`synthetic_xmc_corpus` checked, ints as ``int``, ``topic_words`` resolved:
    ``(num_docs, num_labels, words_per_label, filler_words, distractors, topic_words)``."""
    num_docs = _check_int("num_docs", num_docs, 1)
    num_labels = _check_int("num_labels", num_labels, 1)
    words_per_label = _check_int("words_per_label", words_per_label, 1)
    filler_words = _check_int("filler_words", filler_words, 1)
    distractors = _check_int("distractors", distractors, 0)
    if not exponent > 0:
        raise ValueError(f"Invalid value for argument `exponent`. Expected > 0. Received: exponent={exponent!r}")
    if not mean_labels >= 1:
        raise ValueError(f"Invalid value for argument `mean_labels`. Expected >= 1. Received: mean_labels={mean_labels!r}")
    if not mean_filler >= 0:
        raise ValueError(f"Invalid value for argument `mean_filler`. Expected >= 0. Received: mean_filler={mean_filler!r}")
    if topic_words is None:
        topic_words = min(8192, max(32, -(-2 * num_labels * words_per_label // 64)))
    topic_words = _check_int("topic_words", topic_words, 1)
    if topic_words ** words_per_label < num_labels:
        raise ValueError(
            "Invalid value for argument `topic_words`. Expected topic_words ** words_per_label >= num_labels, "
            f"so that every label owns a distinct combination. Received: topic_words={topic_words}, "
            f"words_per_label={words_per_label}, num_labels={num_labels}")
    return num_docs, num_labels, words_per_label, filler_words, distractors, topic_words


def _draw_labels(rng, num_docs, num_labels, exponent, mean_labels):
    """Steps 1-2 of the module docstring: power-law draws per document, duplicates dropped, sorted by
    (document, label); returns each pair's document and label id."""
    weights = np.arange(1, num_labels + 1, dtype=np.float64) ** -float(exponent)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    draws = np.minimum(1 + rng.poisson(mean_labels - 1.0, size=num_docs), num_labels)
    doc_of = np.repeat(np.arange(num_docs, dtype=np.int64), draws)
    labels = np.minimum(np.searchsorted(cdf, rng.random(doc_of.size), side="right"), num_labels - 1)
    key = np.unique(doc_of * num_labels + labels)  # sorted by (document, label), deduplicated
    return key // num_labels, key % num_labels


def _draw_tokens(rng, num_docs, topic_words, filler_words, mean_filler, distractors, label_tok, label_tok_doc):
    """Step 4 of the module docstring: every document's tokens as indices into one vocabulary
    ``[topic words | filler words]``, grouped by document and shuffled within it: ``(tok, tok_doc)``."""
    n_filler = rng.poisson(mean_filler, size=num_docs)
    filler_p = 1.0 / np.arange(1, filler_words + 1) ** 0.9
    filler_cdf = np.cumsum(filler_p) / filler_p.sum()
    filler_tok = topic_words + np.minimum(
        np.searchsorted(filler_cdf, rng.random(int(n_filler.sum())), side="right"), filler_words - 1)
    filler_doc = np.repeat(np.arange(num_docs, dtype=np.int64), n_filler)
    noise_tok = rng.integers(0, topic_words, size=num_docs * distractors)
    noise_doc = np.repeat(np.arange(num_docs, dtype=np.int64), distractors)
    tok = np.concatenate([filler_tok, label_tok, noise_tok])
    tok_doc = np.concatenate([filler_doc, label_tok_doc, noise_doc])
    order = np.lexsort((rng.random(tok.size), tok_doc))  # by document, shuffled within it
    return tok[order], tok_doc[order]


def synthetic_xmc_splits(seed: int = 0, num_train: int = 20000, num_test: int = 5000, **corpus_kwargs):
    """A train/test split of one :func:`synthetic_xmc_corpus` (seeded permutation).

    Returns:
      ``((train_texts, train_labels), (test_texts, test_labels))``.
    """
    texts, labels = synthetic_xmc_corpus(num_docs=num_train + num_test, seed=seed, **corpus_kwargs)
    order = np.random.default_rng([seed, 1]).permutation(len(texts))
    train, test = order[:num_train], order[num_train:]
    return (([texts[i] for i in train], [labels[i] for i in train]),
            ([texts[i] for i in test], [labels[i] for i in test]))
