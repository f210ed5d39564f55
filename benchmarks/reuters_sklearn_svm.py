"""Reference check for README "Results on Reuters-21578": scikit-learn's ``LinearSVC`` (one-vs-rest, C=1)
on sublinear TF-IDF unigrams, the baseline that ``scripts/reuters_svm.sh`` rebuilds inside the CLI.

Needs scikit-learn, which is not a fusedfocal dependency (``pip install scikit-learn``). It holds out a
seeded random 1,000 training documents (its own split, not the CLI's), tunes one global decision
threshold for micro-F1 on them, and reports micro-/macro-F1 on the 3,019 test documents, for regex word
unigrams and for fusedfocal's WordPiece tokens (``--vocab-size 30000``, learnt on the other 6,769).

Usage: .venv/bin/python benchmarks/reuters_sklearn_svm.py [REUTERS_DIR]
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer
    from sklearn.svm import LinearSVC

    from fusedfocal import data

    root = argv[0] if argv else data.reuters_dir()
    train = data.read_records(f"{root}/train.jsonl.gz")
    test = data.read_records(f"{root}/test.jsonl.gz")
    texts, labels = list(train[0]), list(train[1])
    perm = np.random.default_rng(0).permutation(len(texts))
    val_idx, fit_idx = perm[:1000], perm[1000:]
    mlb = MultiLabelBinarizer().fit(labels)
    y, y_test = mlb.transform(labels), mlb.transform(list(test[1]))

    def evaluate(tag, fit, val, tst, **vec_kw):
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, **vec_kw)
        x, x_val, x_test = vec.fit_transform(fit), vec.transform(val), vec.transform(tst)
        s_val, s_test = np.full((len(val), y.shape[1]), -9.0), np.full((len(tst), y.shape[1]), -9.0)
        for c in range(y.shape[1]):
            if y[fit_idx, c].any():
                m = LinearSVC(C=1).fit(x, y[fit_idx, c])
                s_val[:, c], s_test[:, c] = m.decision_function(x_val), m.decision_function(x_test)
        th = max(np.linspace(-1, 0.5, 31),
                 key=lambda t: f1_score(y[val_idx], s_val > t, average="micro", zero_division=0))
        p = s_test > th
        print(f"{tag}: threshold {th:.2f}, test micro-F1 {100 * f1_score(y_test, p, average='micro'):.2f}, "
              f"macro-F1 {100 * f1_score(y_test, p, average='macro', zero_division=0):.2f}", flush=True)

    fit, val = [texts[i] for i in fit_idx], [texts[i] for i in val_idx]
    evaluate("regex word unigrams", fit, val, list(test[0]))

    import tensorflow as tf
    import tensorflow_text as tf_text

    tok = tf_text.FastBertTokenizer(data.build_wordpiece_vocab(fit, 30000, seed=0),
                                    lower_case_nfd_strip_accents=True, token_out_type=tf.string)

    def pieces(ts):
        return [" ".join(t.decode() for t in row) for row in tok.tokenize(ts).to_list()]

    evaluate("WordPiece unigrams", pieces(fit), pieces(val), pieces(list(test[0])),
             token_pattern=r"\S+", lowercase=False)


if __name__ == "__main__":
    main(sys.argv[1:])
