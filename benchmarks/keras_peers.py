"""The plain Keras scripts the accuracy suite sets beside rnnkit (Keras 3, torch backend).

Each is what a user would write from the Keras guides in twenty lines: a vocabulary of the
most frequent whitespace tokens (TextVectorization needs TensorFlow, which the torch backend
does not have, so the same standardisation -- lowercase, split on whitespace -- is done in
Python), Embedding, (Bi)LSTM, a softmax head, the optimizer the guides use. They return
``None`` when Keras is not installed (the ``[test]`` or ``[bench]`` extra).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return None
    return keras


def _vocab(token_lists: Sequence[Sequence[str]], size: int) -> dict[str, int]:
    counts = Counter(t for toks in token_lists for t in toks)
    return {w: i + 2 for i, (w, _) in enumerate(counts.most_common(size - 2))}  # 0 pad, 1 OOV


def _ids(token_lists: Sequence[Sequence[str]], vocab: dict[str, int], maxlen: int,
         padding: str = "post") -> np.ndarray:
    out = np.zeros((len(token_lists), maxlen), np.int64)
    for i, toks in enumerate(token_lists):
        ids = [vocab.get(t, 1) for t in toks][:maxlen]
        if padding == "post":
            out[i, :len(ids)] = ids
        elif ids:
            out[i, -len(ids):] = ids
    return out


def text_classifier_f1(train: tuple[list[str], list[str]], test: tuple[list[str], list[str]],
                       epochs: int = 5, seed: int = 42) -> float | None:
    """TextVectorization-style ids (20k words, 95th-percentile length) -> Embedding(128) ->
    LSTM(64) -> Dense(softmax), RMSprop 1e-3, batch 64: macro F1 on ``test``."""
    keras = _keras()
    if keras is None:
        return None
    from sklearn.metrics import f1_score

    keras.utils.set_random_seed(seed)
    tr_tok = [t.lower().split() for t in train[0]]
    te_tok = [t.lower().split() for t in test[0]]
    vocab = _vocab(tr_tok, 20_000)
    maxlen = max(8, int(np.percentile([len(t) for t in tr_tok], 95)))
    names = sorted(set(train[1]))
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[v] for v in train[1]])
    model = keras.Sequential([
        keras.Input((maxlen,), dtype="int64"),
        keras.layers.Embedding(len(vocab) + 2, 128, mask_zero=True),
        keras.layers.LSTM(64),
        keras.layers.Dense(len(names), activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(_ids(tr_tok, vocab, maxlen), y, batch_size=64, epochs=epochs, verbose=0)
    pred = model.predict(_ids(te_tok, vocab, maxlen), verbose=0).argmax(-1)
    gold = np.array([index.get(v, -1) for v in test[1]])
    return float(f1_score(gold, pred, average="macro"))


def tagger_accuracy(train: Sequence[tuple[list[str], list[str]]],
                    test: Sequence[tuple[list[str], list[str]]], epochs: int = 10,
                    seed: int = 42) -> float | None:
    """Word ids -> Embedding(100, mask_zero) -> Bidirectional(LSTM(64), sequences) ->
    Dense(softmax) per word, Adam 1e-3, batch 32: token accuracy on ``test``."""
    keras = _keras()
    if keras is None:
        return None
    keras.utils.set_random_seed(seed)
    vocab = _vocab([w for w, _ in train], 20_000)
    tags = sorted({t for _, ts in train for t in ts})
    tindex = {t: i + 1 for i, t in enumerate(tags)}  # 0 = padding
    maxlen = max(len(w) for w, _ in [*train, *test])
    x = _ids([w for w, _ in train], vocab, maxlen)
    y = _ids([t for _, t in train], tindex, maxlen)
    model = keras.Sequential([
        keras.Input((maxlen,), dtype="int64"),
        keras.layers.Embedding(len(vocab) + 2, 100, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True)),
        keras.layers.Dense(len(tags) + 1, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, sample_weight=(y > 0).astype("f4"))
    xt = _ids([w for w, _ in test], vocab, maxlen)
    yt = _ids([t for _, t in test], tindex, maxlen)
    pred = model.predict(xt, verbose=0)[..., 1:].argmax(-1) + 1
    real = yt > 0
    return float((pred[real] == yt[real]).mean())
