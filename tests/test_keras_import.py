"""Keras Sequential files imported as rnnkit models give Keras's outputs (Keras 3 on its
torch backend builds and saves them, in .keras and legacy .h5); unsupported layers and
options are one-line errors naming the layer; a corrupt file is refused."""

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from rnnkit.cli import main  # noqa: E402
from rnnkit.io import load_model  # noqa: E402
from rnnkit.keras_import import import_keras  # noqa: E402

L = keras.layers


def _models():
    yield "seed", [keras.Input((12,), dtype="int64"), L.Embedding(60, 16),
                   L.SimpleRNN(8), L.Dense(1, activation="sigmoid")]
    yield "masked stack", [keras.Input((12,), dtype="int64"), L.Embedding(60, 8, mask_zero=True),
                           L.LSTM(6, return_sequences=True), L.Dropout(0.3),
                           L.Bidirectional(L.GRU(5)), L.Dense(4, activation="softmax")]
    yield "relu, backwards, sum", [keras.Input((12,), dtype="int64"), L.Embedding(60, 8),
                                   L.SimpleRNN(7, activation="relu", go_backwards=True,
                                               return_sequences=True),
                                   L.Bidirectional(L.LSTM(3), merge_mode="sum"),
                                   L.Dense(2)]
    yield "tagger", [keras.Input((12,), dtype="int64"), L.Embedding(60, 8, mask_zero=True),
                     L.Bidirectional(L.LSTM(4, return_sequences=True)),
                     L.Dense(5, activation="softmax")]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name,layers", list(_models()), ids=[n for n, _ in _models()])
def test_imported_model_equals_keras(tmp_path, suffix, name, layers):
    keras.utils.set_random_seed(0)
    km = keras.Sequential(layers)
    rng = np.random.default_rng(0)
    x = rng.integers(1, 60, (9, 12))
    for i, n in enumerate([12, 7, 3, 1, 12, 5, 9, 2, 11]):
        x[i, n:] = 0  # post-padded with the masked id 0
    path = tmp_path / f"m{suffix}"
    km.save(path)
    want = np.asarray(km(x, training=False).detach().cpu())
    model = import_keras(path)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    if name == "tagger":  # rnnkit returns zeros at masked steps; compare the real ones
        real = x != 0
        np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_cli_import_then_summary_and_load(tmp_path, capsys):
    keras.utils.set_random_seed(1)
    km = keras.Sequential([keras.Input((10,), dtype="int64"), L.Embedding(30, 4),
                           L.GRU(3), L.Dense(1, activation="sigmoid")])
    km.save(tmp_path / "k.keras")
    out = tmp_path / "imported"
    assert main(["import-keras", str(tmp_path / "k.keras"), "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["parameters"] == km.count_params()
    assert main(["summary", str(out)]) == 0
    assert f"{km.count_params():,}" in capsys.readouterr().out
    model, cfg = load_model(out)
    assert cfg["task"] == "keras" and cfg["source"]["name"] == "k.keras"
    x = np.random.default_rng(1).integers(0, 30, (4, 10))
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(),
                                   np.asarray(km(x).detach().cpu()), atol=1e-5)


def test_unsupported_layers_and_options_name_the_layer(tmp_path, capsys):
    cases = [
        ([keras.Input((10, 3)), L.Conv1D(4, 3, name="conv"), L.Flatten(), L.Dense(1)], "conv"),
        ([keras.Input((10, 3)), L.GRU(4, reset_after=False, name="old_gru")], "reset_after"),
        ([keras.Input((10, 3)), L.LSTM(4, recurrent_activation="hard_sigmoid", name="hs")],
         "hard_sigmoid"),
    ]
    for i, (layers, word) in enumerate(cases):
        f = tmp_path / f"bad{i}.keras"
        keras.Sequential(layers).save(f)
        assert main(["import-keras", str(f), "--out", str(tmp_path / f"o{i}")]) == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1, err
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["import-keras", str(junk), "--out", str(tmp_path / "j")]) == 2
    assert "junk.keras" in capsys.readouterr().err


def test_shape_mismatch_in_the_weights_is_refused(tmp_path):
    import zipfile

    import h5py

    keras.utils.set_random_seed(2)
    f = tmp_path / "m.keras"
    keras.Sequential([keras.Input((5,), dtype="int64"), L.Embedding(20, 4), L.SimpleRNN(3),
                      L.Dense(1)]).save(f)
    with zipfile.ZipFile(f) as z:
        cfg, weights = z.read("config.json"), z.read("model.weights.h5")
    (tmp_path / "w.h5").write_bytes(weights)
    with h5py.File(tmp_path / "w.h5", "a") as h:
        del h["layers/dense/vars/0"]
        h["layers/dense/vars/0"] = np.zeros((7, 1), np.float32)
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("config.json", cfg)
        z.writestr("model.weights.h5", (tmp_path / "w.h5").read_bytes())
    from rnnkit.errors import UserError

    with pytest.raises(UserError, match="shape"):
        import_keras(bad)
