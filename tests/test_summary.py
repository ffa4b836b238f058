"""Summary table: exact parameter counts of the seed models, shapes, nesting, plots."""

from __future__ import annotations

import re

import pytest
import torch

import rnnkit as rk
from rnnkit.callbacks import History
from rnnkit.plots import plot_history
from rnnkit.summary import count_params, summary


def _row(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(name):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {name!r} in\n{text}")


def test_seed_onehot_model():
    model = rk.Sequential(rk.OneHot(500), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"))
    text = summary(model, input_shape=(100,))
    assert _row(text, "one_hot (OneHot)") == ["one_hot (OneHot)", "(None, 100, 500)", "0"]
    assert _row(text, "simple_rnn (SimpleRNN)") == ["simple_rnn (SimpleRNN)", "(None, 8)",
                                                    "4,072"]
    assert _row(text, "dense (Dense)") == ["dense (Dense)", "(None, 1)", "9"]
    assert "Total params: 4,081" in text
    assert "Trainable params: 4,081" in text
    assert "Non-trainable params: 0" in text


def test_seed_embedding_model():
    model = rk.Sequential(rk.Embedding(500, 16), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"),
                          input_shape=(100,))
    text = summary(model)  # input_shape taken from the Sequential
    assert _row(text, "embedding (Embedding)")[1:] == ["(None, 100, 16)", "8,000"]
    assert _row(text, "simple_rnn (SimpleRNN)")[1:] == ["(None, 8)", "200"]
    assert _row(text, "dense (Dense)")[1:] == ["(None, 1)", "9"]
    assert "Total params: 8,209" in text


def test_nested_and_frozen_and_duplicates():
    model = rk.Sequential(rk.Embedding(100, 4), rk.Bidirectional(rk.LSTM(3, return_sequences=True)),
                          rk.LSTM(2), rk.Dense(1, "sigmoid"), input_shape=(7,))
    model[0].weight.requires_grad_(False)
    text = summary(model)
    # Bidirectional shows the total of both directions: 2 * 4*3*(4+3+1)
    assert _row(text, "bidirectional (Bidirectional)")[1:] == ["(None, 7, 6)", "192"]
    assert _row(text, "lstm (LSTM)")[1:] == ["(None, 2)", str(4 * 2 * (6 + 2 + 1))]
    total = 400 + 192 + 72 + 3
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total - 400:,}" in text
    assert "Non-trainable params: 400" in text
    assert count_params(model) == {"total": total, "trainable": total - 400,
                                   "non_trainable": 400}
    two = rk.Sequential(rk.Dense(3, input_size=2), rk.Dense(1, input_size=3))
    text = summary(two, input_shape=(2,))
    assert "dense (Dense)" in text and "dense_1 (Dense)" in text


def test_unbuilt_without_shape_and_return_state():
    text = summary(rk.Sequential(rk.SimpleRNN(8), rk.Dense(1)))
    assert _row(text, "simple_rnn (SimpleRNN)")[1:] == ["?", "0"]
    lstm = rk.LSTM(5, return_state=True, return_sequences=True)
    text = summary(rk.Sequential(lstm), example=torch.zeros(2, 4, 3))
    assert "[(None, 4, 5), (None, 5), (None, 5)]" in text


def test_plot_history(tmp_path):
    h = History()
    for e, (lo, a) in enumerate([(0.7, 0.5), (0.5, 0.7), (0.4, 0.8)]):
        h.on_epoch_end(e, {"loss": lo, "accuracy": a, "val_loss": lo + 0.1,
                           "val_accuracy": a - 0.1})
    out = plot_history(h, tmp_path / "sub" / "history.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["history.png"]  # no temp left
    with pytest.raises(ValueError, match="metric"):
        plot_history(h, tmp_path / "x.png", metric="f1")
    with pytest.raises(ValueError, match="loss"):
        plot_history({}, tmp_path / "y.png")
