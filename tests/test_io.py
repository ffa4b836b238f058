"""Model persistence: bitwise round trips, atomic files, checkpoints, one-line user errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import rnnkit as rk
from rnnkit.callbacks import ModelCheckpoint
from rnnkit.errors import UserError
from rnnkit.io import (
    CONFIG_FILE,
    MODEL_REGISTRY,
    WEIGHTS_FILE,
    atomic_write_text,
    load_model,
    register_model,
    save_model,
)
from rnnkit.train import fit, predict


def _models():
    yield rk.Sequential(rk.Embedding(60, 5, mask_zero=True), rk.SimpleRNN(4, activation="relu"),
                        rk.Dense(1, "sigmoid"), input_shape=(9,))
    yield rk.Sequential(rk.OneHot(60), rk.LSTM(3, return_sequences=True, go_backwards=True),
                        rk.Dropout(0.2), rk.GRU(4, use_bias=True), rk.Dense(3, "softmax"))
    yield rk.Sequential(rk.Embedding(60, 6),
                        rk.Bidirectional(rk.GRU(3, return_sequences=True), merge_mode="sum"),
                        rk.RNN(rk.LSTMCell(2, unit_forget_bias=False)), rk.Dense(2))


@pytest.mark.parametrize("i", range(3))
def test_round_trip_bitwise(tmp_path, i):
    torch.manual_seed(i)
    model = list(_models())[i]
    x = torch.randint(0, 60, (5, 9))
    x[:, :3] = 0
    model.eval()
    with torch.no_grad():
        want = model(x)  # builds lazily-sized layers too
    save_model(tmp_path / "m", model, task="unit", extra={"labels": ["neg", "pos"]})
    loaded, cfg = load_model(tmp_path / "m")
    assert not loaded.training
    assert cfg["task"] == "unit" and cfg["labels"] == ["neg", "pos"] and cfg["format"] == "rnnkit"
    assert torch.equal(predict(loaded, x), want)
    assert str(loaded) == str(model)
    # only the two files, no temporaries left behind
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_config_is_plain_json(tmp_path):
    model = list(_models())[0]
    save_model(tmp_path, model, task="imdb")
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    layers = cfg["model"]["config"]["layers"]
    assert cfg["model"]["type"] == "Sequential"
    assert [la["type"] for la in layers] == ["Embedding", "SimpleRNN", "Dense"]
    assert layers[2]["config"] == {"units": 1, "activation": "sigmoid", "input_size": 4,
                                   "use_bias": True}
    assert b"pickle" not in (tmp_path / WEIGHTS_FILE).read_bytes()[:200]
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path, model, task="imdb", extra={"model": 1})


def test_custom_registered_model(tmp_path):
    @register_model("TestTwoTower")
    class TwoTower(nn.Module):
        def __init__(self, vocab: int, units: int):
            super().__init__()
            self.vocab, self.units = vocab, units
            self.emb = rk.Embedding(vocab, 4)
            self.rnn = rk.GRU(units, input_size=4)

        def get_config(self):
            return {"vocab": self.vocab, "units": self.units}

        def forward(self, a, b):
            return (self.rnn(self.emb(a)) * self.rnn(self.emb(b))).sum(-1)

    torch.manual_seed(0)
    m = TwoTower(20, 3)
    a, b = torch.randint(0, 20, (4, 6)), torch.randint(0, 20, (4, 6))
    save_model(tmp_path, m, task="siamese")
    m2, _ = load_model(tmp_path)
    assert torch.equal(predict(m2, (a, b)), predict(m, (a, b)))

    class Unregistered(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="register_model"):
        save_model(tmp_path / "u", rk.Sequential(Unregistered()), task="x")
    with pytest.raises(ValueError, match="already registered"):
        register_model("TestTwoTower")(Unregistered)
    MODEL_REGISTRY.pop("TestTwoTower")


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing")
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path)
    model = list(_models())[0]
    d = tmp_path / "m"
    save_model(d, model, task="t")
    good = (d / WEIGHTS_FILE).read_bytes()

    (d / WEIGHTS_FILE).write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        load_model(d)
    assert "\n" not in str(e.value)
    (d / WEIGHTS_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_model(d)
    (d / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="weights file not found"):
        load_model(d)

    # weights of a differently shaped model
    other = rk.Sequential(rk.Embedding(60, 5), rk.SimpleRNN(7), rk.Dense(1, "sigmoid"),
                          input_shape=(9,))
    save_model(tmp_path / "o", other, task="t")
    (d / WEIGHTS_FILE).write_bytes((tmp_path / "o" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(UserError, match="shape"):
        load_model(d)
    # weights of a model with other layers
    save_model(tmp_path / "p", rk.Sequential(rk.Dense(1, input_size=3)), task="t")
    (d / WEIGHTS_FILE).write_bytes((tmp_path / "p" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(UserError, match="does not match"):
        load_model(d)

    (d / CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="corrupt JSON"):
        load_model(d)
    (d / CONFIG_FILE).write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not an rnnkit"):
        load_model(d)
    (d / CONFIG_FILE).write_text('{"format": "rnnkit", "task": "t", '
                                 '"model": {"type": "NoSuchLayer", "config": {}}}')
    with pytest.raises(UserError, match="unknown model type"):
        load_model(d)
    (d / CONFIG_FILE).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="corrupt JSON"):
        load_model(d)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    import os

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_model_checkpoint_saves_only_on_improvement(tmp_path):
    torch.manual_seed(0)
    model = rk.Sequential(rk.Dense(1, "sigmoid", input_size=2))
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).float()
    vals = iter([0.5, 0.6, 0.4, 0.45, 0.3])

    class FakeVal(rk.callbacks.Callback):  # overrides val_loss with a scripted sequence
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(vals)

    ck = ModelCheckpoint(tmp_path / "ck", monitor="val_loss", task="toy", extra={"note": "x"})
    weights_at = {}

    class Spy(rk.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights_at[epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}

    fit(model, x, y, epochs=5, callbacks=[FakeVal(), ck, Spy()], verbose=0, seed=0,
        optimizer="sgd", lr=0.5)
    assert ck.saved_epochs == [0, 2, 4]
    loaded, cfg = load_model(tmp_path / "ck")
    assert cfg["checkpoint"] == {"epoch": 4, "monitor": "val_loss", "value": 0.3}
    assert cfg["note"] == "x" and cfg["task"] == "toy"
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, weights_at[4][k])
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]

    every = ModelCheckpoint(tmp_path / "all", save_best_only=False, monitor="loss")
    fit(model, x, y, epochs=3, callbacks=[every], verbose=0, optimizer="sgd")
    assert every.saved_epochs == [0, 1, 2]

    # a task's own saver replaces the default save (model + its own files)
    calls = []

    def task_save(m, d):
        calls.append(d)
        save_model(d, m, task="mytask", extra={"labels": ["a", "b"]})
        atomic_write_text(d / "text.json", "{}")

    own = ModelCheckpoint(tmp_path / "own", monitor="loss", save_fn=task_save)
    fit(model, x, y, epochs=2, callbacks=[own], verbose=0, optimizer="sgd", lr=0.1)
    assert calls == [tmp_path / "own"] * len(own.saved_epochs) and own.saved_epochs
    _, cfg = load_model(tmp_path / "own")
    assert cfg["task"] == "mytask" and "checkpoint" not in cfg
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == [CONFIG_FILE, "text.json",
                                                                    WEIGHTS_FILE]


def test_checkpoint_missing_monitor(tmp_path):
    model = rk.Sequential(rk.Dense(1, "sigmoid", input_size=2))
    x, y = torch.randn(8, 2), torch.ones(8)
    with pytest.raises(ValueError, match="validation data"):
        fit(model, x, y, callbacks=[ModelCheckpoint(tmp_path)], verbose=0)
