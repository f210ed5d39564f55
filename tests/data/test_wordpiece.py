"""WordPiece vocabulary: learn (tensorflow-text), save, load, tokenize."""

from __future__ import annotations

import time

import pytest

from fusedfocal.data import (SPECIAL_TOKENS, LabelVocab, PipelineConfig, TextPipeline, build_wordpiece_vocab,
                             load_vocab, save_vocab, synthetic_corpus)


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(num_docs=300, seed=3)


@pytest.fixture(scope="module")
def vocab(corpus):
    start = time.perf_counter()
    tokens = build_wordpiece_vocab(corpus[0], 400, max_sample=200)
    return tokens, time.perf_counter() - start


def test_build_special_tokens_first_and_size_bound(vocab):
    tokens, seconds = vocab
    assert tuple(tokens[:5]) == SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert 200 < len(tokens) <= 400
    assert len(set(tokens)) == len(tokens)
    assert any(t.startswith("##") for t in tokens)
    assert seconds < 30, f"vocab build took {seconds:.1f}s on 200 texts"


def test_build_is_deterministic_and_sample_limited(corpus):
    first = build_wordpiece_vocab(corpus[0], 200, max_sample=40, seed=1)
    assert build_wordpiece_vocab(corpus[0], 200, max_sample=40, seed=1) == first
    assert len(first) <= 200


def test_save_load_round_trip(tmp_path, vocab):
    path = save_vocab(vocab[0], tmp_path / "vocab.txt")
    assert load_vocab(path) == vocab[0]
    assert path.read_text(encoding="utf-8").splitlines()[0] == "[PAD]"


def test_load_rejects_vocab_without_special_tokens(tmp_path):
    (tmp_path / "v.txt").write_text("[UNK]\na\nb\n")
    with pytest.raises(ValueError, match=r"v\.txt: expected the vocabulary to start with"):
        load_vocab(tmp_path / "v.txt")
    with pytest.raises(ValueError, match="Tokens must be non-empty"):
        save_vocab(["[PAD]", "a b\n"], tmp_path / "w.txt")


def test_learned_vocab_tokenizes_training_text_without_unk(corpus, vocab):
    pipe = TextPipeline(PipelineConfig(max_length=512), vocab[0], LabelVocab.build(corpus[1]))
    ids = pipe.tokenize(corpus[0][:20]).numpy()
    assert ids.shape[0] == 20
    assert (ids[:, 0] == 2).all()  # [CLS]
    assert (ids == 1).sum() == 0  # every character was seen in the sample
    assert ids.max() < len(vocab[0])
