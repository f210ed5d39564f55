"""Smoke run of FocalHeadModel at 131,072 labels on the synthetic XMC corpus (issue 19).

Keras 3, jit_compile, padded label ids, B=256, H=128, 8,192 training documents, 4 epochs; prints
the loss per epoch, P@k/nDCG@k/PSP@k on 512 test documents and the process peak RSS.
Run: PYTHONPATH=src python benchmarks/xmc_head_smoke.py
"""
import time, resource, numpy as np, keras
from fusedfocal import data, metrics_xmc
from fusedfocal.keras import FocalHead, FocalHeadModel
t0=time.time()
(tx, ty), (ex, ey) = data.synthetic_xmc_splits(num_labels=131072, num_train=8192, num_test=512)
cfg = data.PipelineConfig(label_format="padded_ids", fixed_shape=True, max_length=64, batch_size=256)
pipe = data.TextPipeline(cfg, data.build_wordpiece_vocab(tx, 10000, max_sample=2000), data.xmc_label_vocab(ty, 131072))
print("labels in vocab", pipe.num_labels, "prep s", round(time.time()-t0,1))
tokens = keras.Input((None,), dtype="int32", name="token_ids")
hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(pipe.wordpiece_vocab), 128)(tokens))
model = FocalHeadModel(keras.Model({"token_ids": tokens}, hidden), FocalHead(pipe.num_labels, gamma=2.0, top_k=5))
model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
for e in range(4):
    t=time.time(); h=model.fit(pipe.dataset(tx, ty, training=True), epochs=1, verbose=0).history["loss"]; print("epoch", e, h, round(time.time()-t,1), "s")
top = model.predict(pipe.dataset(ex, ey, training=False), verbose=0)
print(metrics_xmc.xmc_metrics(top["ids"], pipe.label_vocab.encode_ids(ey), label_counts=pipe.label_vocab.counts, num_docs=len(tx)))
print("maxrss GiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)
