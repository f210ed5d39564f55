"""``fusedfocal.hub`` and the pipeline's tokenizer argument on a tiny local KerasHub preset (a 2-layer
BERT with random weights, built here: nothing is downloaded)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="KerasHub is the optional [hub] extra")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from hubtools import tiny_preset  # noqa: E402

from fusedfocal import data, hub  # noqa: E402
from fusedfocal.keras import FocalHead, FocalHeadModel, SigmoidFocalLoss  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    (tx, ty), _ = data.synthetic_splits(seed=0)
    return tx[:256], ty[:256]


@pytest.fixture(scope="module")
def preset(corpus, tmp_path_factory):
    return tiny_preset(tmp_path_factory.mktemp("hub") / "tiny_bert", corpus[0])


def _pipe(tokenizer, ty, **cfg):
    config = data.PipelineConfig(**{"max_length": 32, "batch_size": 16, "fixed_shape": True, **cfg})
    return data.TextPipeline(config, None, data.LabelVocab.build(ty), tokenizer=tokenizer)


def test_pipeline_packs_the_preset_tokenizer_ids(preset, corpus):
    tx, ty = corpus
    _, tok = hub.load_preset(preset, load_weights=False)
    assert (tok.start_token_id, tok.end_token_id, tok.pad_token_id) == (2, 3, 0)
    pipe = _pipe(tok, ty, max_length=64)
    ids = pipe.tokenize(tx[:4]).numpy()
    for row, text in zip(ids, tx[:4]):
        pieces = tok(tf.constant([text]))[0]
        pieces = list(np.asarray(pieces)[:62])
        assert list(row[: len(pieces) + 2]) == [tok.start_token_id, *pieces, tok.end_token_id]
        assert (row[len(pieces) + 2:] == tok.pad_token_id).all()
    # both routes of the pipeline (tokenize per batch / cache per document) give the same elements
    uncached = list(_pipe(tok, ty, cache=False).dataset(tx[:40], ty[:40], training=False))
    cached = list(_pipe(tok, ty, cache=True).dataset(tx[:40], ty[:40], training=False))
    for (a, ya), (b, yb) in zip(uncached, cached):
        np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
        np.testing.assert_array_equal(ya, yb)


def test_a_tensorflow_text_tokenizer_needs_its_special_ids(corpus):
    import tensorflow_text as tf_text

    tx, ty = corpus
    vocab = data.build_wordpiece_vocab(tx, 200, max_sample=500)
    tok = tf_text.FastBertTokenizer(vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=True)
    with pytest.raises(ValueError, match="`start_id`"):
        _pipe(tok, ty)
    config = data.PipelineConfig(max_length=32, batch_size=16, cache=False)
    same = data.TextPipeline(config, vocab, data.LabelVocab.build(ty))  # today's learnt-WordPiece path
    with_ids = data.TextPipeline(config, None, same.label_vocab, tokenizer=tok,
                                 special_ids={"start_id": 2, "end_id": 3, "pad_id": 0})
    np.testing.assert_array_equal(with_ids.tokenize(tx[:8]), same.tokenize(tx[:8]))
    with pytest.raises(TypeError, match="`tokenizer`"):
        _pipe(object(), ty)


def test_load_preset_errors_name_the_preset(preset, tmp_path):
    with pytest.raises(ValueError, match=r"argument `preset`.*'no_such_preset'"):
        hub.load_preset("no_such_preset")
    backbone_only = tmp_path / "backbone_only"
    keras_hub.models.Backbone.from_preset(preset).save_to_preset(str(backbone_only))
    with pytest.raises(ValueError, match=r"no tokenizer \(tokenizer.json missing\)"):
        hub.load_preset(backbone_only)
    with pytest.raises(ValueError, match="has none"):
        hub.load_tokenizer(backbone_only)
    with pytest.raises(ValueError, match="does not exist"):
        hub.load_preset(tmp_path / "absent")


def test_backbone_output_must_be_b_h_or_b_t_h():
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(10, 4)(ids)
    four = keras.Model({"token_ids": ids}, keras.layers.Reshape((-1, 2, 2))(x))
    with pytest.raises(ValueError, match=r"\[B, H\] or \[B, T, H\]. Received: shape \[None, None, 2, 2\]"):
        hub.backbone_encoder(four)
    seq = keras.Model({"token_ids": ids}, x)  # [B, T, H]: the first token's features
    enc = hub.backbone_encoder(seq, dropout=0)
    out = enc({"token_ids": tf.constant([[3, 1, 0]])})
    np.testing.assert_allclose(out, seq({"token_ids": tf.constant([[3, 1, 0]])})[:, 0, :])


def test_fine_tuning_schedule_warms_up_then_decays():
    s = hub.fine_tuning_schedule(1e-3, 100, warmup_fraction=0.1)
    values = [float(s(i)) for i in (0, 5, 10, 55, 100)]
    assert values[0] == 0.0 and values[1] == pytest.approx(5e-4) and values[2] == pytest.approx(1e-3)
    assert values[3] == pytest.approx(5e-4, rel=1e-3) and values[4] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="warmup_fraction"):
        hub.fine_tuning_schedule(1e-3, 100, warmup_fraction=1.0)


def test_missing_keras_hub_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r"pip install fusedfocal\[hub\]"):
        hub.load_preset("bert_base_en_uncased")


@pytest.mark.slow
def test_classifier_and_focal_head_train_save_and_load(preset, corpus, tmp_path):
    tx, ty = corpus
    keras.utils.set_random_seed(0)
    backbone, tok = hub.load_preset(preset)
    pipe = _pipe(tok, ty)
    ds = pipe.dataset(tx, ty, training=True)
    priors = np.full(pipe.num_labels, 0.1)
    model = hub.build_classifier(backbone, pipe.num_labels, pad_token_id=tok.pad_token_id, priors=priors)
    np.testing.assert_allclose(model.get_layer("logits").bias.numpy(), np.log(0.1 / 0.9), rtol=1e-6)
    model.compile(keras.optimizers.Adam(hub.fine_tuning_schedule(3e-3, 16)), SigmoidFocalLoss(gamma=2.0))
    hist = model.fit(ds.repeat(), epochs=2, steps_per_epoch=8, verbose=0).history["loss"]
    assert hist[1] < hist[0]
    model.save(tmp_path / "m.keras")
    x, _ = next(iter(ds))
    again = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6, atol=1e-6)

    backbone, _ = hub.load_preset(preset)
    fpipe = _pipe(tok, ty, label_format="padded_ids")
    fmodel = FocalHeadModel(hub.backbone_encoder(backbone, pad_token_id=tok.pad_token_id),
                            FocalHead(fpipe.num_labels, gamma=2.0, top_k=3))
    fmodel.compile(keras.optimizers.Adam(3e-3))
    hist = fmodel.fit(fpipe.dataset(tx, ty, training=True).repeat(), epochs=2, steps_per_epoch=8,
                      verbose=0).history["loss"]
    assert hist[1] < hist[0]
    fmodel.save(tmp_path / "f.keras")
    again = keras.saving.load_model(tmp_path / "f.keras", compile=False)
    np.testing.assert_array_equal(again(x)["ids"], fmodel(x)["ids"])


def _fold_split_ranges():
    """FOLD_SPLIT_RANGES recomputed: code points whose NFKC case folding splits differently."""
    import unicodedata

    def kind(ch):
        o, cat = ord(ch), unicodedata.category(ch)
        if ch.isspace() or cat in ("Cc", "Cf"):
            return "space"
        if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or cat.startswith("P"):
            return "punct"
        if any(a <= o <= b for a, b in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2CEAF), (0xF900, 0xFAFF),
                                        (0x2F800, 0x2FA1F))):
            return "cjk"
        return "word"

    out = []
    for o in range(sys.maxunicode + 1):
        if 0xD800 <= o <= 0xDFFF:
            continue
        c = chr(o)
        f = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", c).casefold())
        if f == c:
            continue
        k, fk = kind(c), [kind(x) for x in f]
        if not ((len(f) == 1 and fk[0] == k) if k != "word" else all(x == "word" for x in fk)):
            if out and out[-1][1] == o - 1:
                out[-1] = (out[-1][0], o)
            else:
                out.append((o, o))
    return tuple(out)


def test_fold_split_ranges_are_what_unicode_says():
    from fusedfocal.data._tokenizers import FOLD_SPLIT_RANGES

    assert FOLD_SPLIT_RANGES == _fold_split_ranges()


@pytest.mark.parametrize("lowercase,strip_accents", [(True, False), (True, True), (False, False)])
def test_fast_wordpiece_gives_keras_hub_ids(corpus, lowercase, strip_accents):
    from fusedfocal.data._tokenizers import FOLD_SPLIT_RANGES, fast_wordpiece

    tx, _ = corpus
    vocab = data.build_wordpiece_vocab(tx, 400, max_sample=500)
    vocab += [t for t in ("é", "##é", "ß", "日", "本", "…", "ﬁ", ".", "##.") if t not in vocab]
    tok = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=lowercase, strip_accents=strip_accents)
    fast = fast_wordpiece(tok)
    tricky = ["Café NAÏVE résumé", "日本語 中文,字", "emoji 😀 ok", "ctrl\x07char tab\tnew\nline\r end", "ﬁne Straße",
              "a\u200bb soft\u00adhyphen", "«quotes» — dash ‘x’", "ΑΒΓ σς", "x\ufffdy", "nul\x00after"]
    tricky += [f"w{chr(a)}x {chr(b)}y" for a, b in FOLD_SPLIT_RANGES]  # each goes through KerasHub's own path
    texts = list(tx[:200]) + tricky
    sig = [tf.TensorSpec([None], tf.string)]
    fast, slow = tf.function(fast, input_signature=sig), tf.function(tok.tokenize, input_signature=sig)
    for i in range(0, len(texts), 64):  # batches, as the pipeline calls it
        assert fast(tf.constant(texts[i:i + 64])).to_list() == slow(tf.constant(texts[i:i + 64])).to_list()
    for text in tricky[:9]:  # alone: these take the fast path itself
        assert fast(tf.constant([text])).to_list() == slow(tf.constant([text])).to_list(), text


def test_a_dataset_with_a_fold_split_character_takes_keras_hub_path(preset, corpus):
    tx, ty = corpus
    _, tok = hub.load_preset(preset, load_weights=False)
    texts, labels = list(tx[:31]) + ["prices … rose ＄5"], list(ty[:32])
    spec = data.tokenizer_spec(tok)
    assert spec.tokenize_for(texts[:31]) is spec.fast_tokenize and spec.tokenize_for(texts) is spec.tokenize
    pipes = {fast: data.TextPipeline(data.PipelineConfig(max_length=64, batch_size=32, cache=False), None,
                                     data.LabelVocab.build(ty), tokenizer=tok) for fast in (True, False)}
    pipes[False].tokenizer_spec = data.tokenizer_spec(tok, fast=False)
    pipes[False]._tokenize_fn = pipes[False].tokenizer_spec.tokenize
    (a, _), = pipes[True].dataset(texts, labels, training=False)
    (b, _), = pipes[False].dataset(texts, labels, training=False)
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    np.testing.assert_array_equal(pipes[True].tokenize(texts), pipes[False].tokenize(texts))
