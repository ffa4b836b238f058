"""rnnkit layers against Keras 3 (torch backend) with copied weights: an independent oracle."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")

import rnnkit as rk  # noqa: E402

if keras.backend.backend() != "torch":  # pragma: no cover - depends on the environment
    pytest.skip("Keras must run on its torch backend for these tests", allow_module_level=True)

PAIRS = {
    "simple": (keras.layers.SimpleRNN, rk.SimpleRNN),
    "lstm": (keras.layers.LSTM, rk.LSTM),
    "gru": (keras.layers.GRU, rk.GRU),
}


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _pair(kind, units=6, features=4, **opts):
    k_cls, r_cls = PAIRS[kind]
    k_layer = k_cls(units, zero_output_for_mask=True, **opts)
    k_layer.build((None, None, features))
    rng = np.random.default_rng(0)
    # random non-trivial weights (including biases) copied into both implementations
    k_layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype("float32")
                         for w in k_layer.get_weights()])
    r_layer = r_cls(units, **opts)
    rk.set_keras_weights(r_layer, k_layer.get_weights())
    return k_layer, r_layer.eval()


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_matches_keras(kind, go_backwards, return_sequences):
    k_layer, r_layer = _pair(kind, go_backwards=go_backwards, return_sequences=return_sequences,
                             return_state=True)
    x = np.random.default_rng(1).normal(size=(3, 8, 4)).astype("float32")
    k_out = k_layer(x)
    r_out = r_layer(torch.from_numpy(x))
    assert len(k_out) == len(r_out)
    for a, b in zip(k_out, r_out, strict=True):
        np.testing.assert_allclose(b.detach().numpy(), _np(a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_masked_zero_padded_input_matches_keras(kind, go_backwards, padding):
    """Embedding(mask_zero=True) on zero-padded ids, in both libraries, all steps returned."""
    vocab, dim, units = 20, 4, 5
    ids = np.array([[3, 5, 7, 9, 0, 0, 0], [4, 4, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])
    if padding == "pre":
        ids = np.stack([np.concatenate([np.zeros((r == 0).sum(), int), r[r != 0]]) for r in ids])
    table = np.random.default_rng(2).normal(size=(vocab, dim)).astype("float32")

    k_emb = keras.layers.Embedding(vocab, dim, mask_zero=True)
    k_emb.build((None, None))
    k_emb.set_weights([table])
    k_rnn, r_rnn = _pair(kind, units, dim, go_backwards=go_backwards, return_sequences=True,
                         return_state=True)
    k_in = keras.Input((None,), dtype="int32")
    k_model = keras.Model(k_in, k_rnn(k_emb(k_in)))
    k_out = k_model(ids)

    r_emb = rk.Embedding(vocab, dim, mask_zero=True)
    with torch.no_grad():
        r_emb.weight.copy_(torch.from_numpy(table))
    t_ids = torch.from_numpy(ids)
    r_out = r_rnn(r_emb(t_ids), mask=r_emb.compute_mask(t_ids, None))
    for a, b in zip(k_out, r_out, strict=True):
        np.testing.assert_allclose(b.detach().numpy(), _np(a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_parameter_counts_match_keras(kind):
    for features, units in [(500, 8), (16, 8), (3, 5)]:
        k_cls, r_cls = PAIRS[kind]
        k_layer = k_cls(units)
        k_layer.build((None, None, features))
        r_layer = r_cls(units, input_size=features)
        assert sum(p.numel() for p in r_layer.parameters()) == k_layer.count_params()


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_matches_keras(merge_mode):
    k_fwd, r_fwd = _pair("lstm", return_sequences=True)
    k_bwd, r_bwd = _pair("lstm", return_sequences=True, go_backwards=True)
    with torch.no_grad():  # give the backward layer different weights
        for w in r_bwd.parameters():
            w.mul_(-0.7)
    k_bi = keras.layers.Bidirectional(k_fwd, backward_layer=k_bwd, merge_mode=merge_mode)
    k_bi.build((None, None, 4))  # Keras rebuilds its sub-layers: copy the weights in again
    k_bi.forward_layer.set_weights(rk.get_keras_weights(r_fwd))
    k_bi.backward_layer.set_weights(rk.get_keras_weights(r_bwd))
    r_bi = rk.Bidirectional(r_fwd, merge_mode=merge_mode, backward_layer=r_bwd).eval()
    x = np.random.default_rng(3).normal(size=(2, 6, 4)).astype("float32")
    np.testing.assert_allclose(r_bi(torch.from_numpy(x)).detach().numpy(), _np(k_bi(x)),
                               atol=1e-5, rtol=1e-5)


def test_seed_model_parameter_counts_match_keras():
    """The seed's two IMDB models: one-hot SimpleRNN (4,072 + 9) and embedding (8,000+200+9)."""
    k1 = keras.Sequential([keras.Input((100, 500)), keras.layers.SimpleRNN(8),
                           keras.layers.Dense(1, activation="sigmoid")])
    r1 = rk.Sequential(rk.OneHot(500), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"),
                       input_shape=(100,))
    assert [sum(p.numel() for p in m.parameters()) for m in r1] == [0, 4072, 9]
    assert sum(p.numel() for p in r1.parameters()) == k1.count_params() == 4081
    k2 = keras.Sequential([keras.Input((100,)), keras.layers.Embedding(500, 16),
                           keras.layers.SimpleRNN(8), keras.layers.Dense(1, activation="sigmoid")])
    r2 = rk.Sequential(rk.Embedding(500, 16), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"),
                       input_shape=(100,))
    assert [sum(p.numel() for p in m.parameters()) for m in r2] == [8000, 200, 9]
    assert sum(p.numel() for p in r2.parameters()) == k2.count_params() == 8209
