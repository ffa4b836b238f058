"""Training loop: learning, reproducibility, early stopping restoring the best weights,
losses and optimizers against independent oracles (torch.nn, Keras 3), real IMDB data."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnkit as rk
from rnnkit.callbacks import Callback, EarlyStopping, History, TerminateOnNaN
from rnnkit.errors import UserError
from rnnkit.train import (
    RECOMMENDED,
    Adam,
    RMSprop,
    TrainingDiverged,
    binary_crossentropy,
    categorical_crossentropy,
    evaluate,
    fit,
    predict,
    sparse_categorical_crossentropy,
)

ROOT = Path(__file__).resolve().parents[1]


def _sign_task(n: int = 384, t: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, 1, generator=g)
    y = (x.sum((1, 2)) > 0).float()
    return x, y


def _zero_lr_sgd(params):
    return torch.optim.SGD(params, lr=0.0)


def test_learns_sign_of_sum():
    x, y = _sign_task()
    torch.manual_seed(0)
    model = rk.Sequential(rk.SimpleRNN(8), rk.Dense(1, "sigmoid"))  # built lazily by fit
    hist = fit(model, x, y, validation_split=0.25, optimizer="adam", lr=1e-2, batch_size=32,
               epochs=6, seed=0, verbose=0)
    assert hist.epoch == list(range(6))
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.history["val_accuracy"][-1] >= 0.9
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert not model.training


def test_fit_lets_go_of_gradients_and_optimizer_when_done():
    """During training the callbacks see the optimizer; once ``fit`` returns, neither the
    returned History nor any other callback holds it (its state would stay alive with every
    kept History), and the parameters hold no gradients."""
    x, y = _sign_task(64)
    seen = []

    class Probe(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.optimizer)

    model = rk.Sequential(rk.GRU(4, input_size=1), rk.Dense(1, "sigmoid"))
    probe = Probe()
    hist = fit(model, x, y, optimizer="adam", batch_size=16, epochs=2, verbose=0,
               callbacks=[probe])
    assert len(seen) == 2 and seen[0] is not None and seen[0] is seen[1]
    assert seen[0].state  # it did train
    assert hist.optimizer is None and probe.optimizer is None
    assert all(p.grad is None for p in model.parameters())


def test_seeded_fit_is_reproducible():
    x, y = _sign_task(128)

    def run():
        torch.manual_seed(1)
        model = rk.Sequential(rk.LSTM(4, dropout=0.2, recurrent_dropout=0.2, input_size=1),
                              rk.Dropout(0.3), rk.Dense(1, "sigmoid"))
        h = fit(model, x, y, validation_split=0.25, optimizer="rmsprop", lr=1e-2,
                batch_size=16, epochs=2, seed=7, verbose=0)
        return h.history, predict(model, x)

    (h1, p1), (h2, p2) = run(), run()
    assert h1 == h2
    assert torch.equal(p1, p2)
    torch.manual_seed(1)
    model = rk.Sequential(rk.LSTM(4, dropout=0.2, input_size=1), rk.Dense(1, "sigmoid"))
    h3 = fit(model, x, y, validation_split=0.25, optimizer="rmsprop", lr=1e-2, batch_size=16,
             epochs=2, seed=8, verbose=0).history
    assert h3 != h1  # a different seed shuffles differently


def test_train_and_eval_losses_agree_and_validation_split_is_last_fraction():
    x, y = _sign_task(100)
    torch.manual_seed(0)
    model = rk.Sequential(rk.GRU(3, input_size=1), rk.Dense(1, "sigmoid"))
    h = fit(model, x, y, validation_split=0.2, optimizer=_zero_lr_sgd, batch_size=7,
            epochs=1, verbose=0)
    train = evaluate(model, x[:80], y[:80], batch_size=13)
    val = evaluate(model, x[80:], y[80:])
    assert h.history["loss"][0] == pytest.approx(train["loss"], abs=1e-6)
    assert h.history["accuracy"][0] == pytest.approx(train["accuracy"], abs=1e-6)
    assert h.history["val_loss"][0] == pytest.approx(val["loss"], abs=1e-6)
    # independent oracle: torch's BCE on the probabilities
    p = predict(model, x[80:]).squeeze(-1)
    assert val["loss"] == pytest.approx(float(nn.functional.binary_cross_entropy(p, y[80:])),
                                        abs=1e-6)
    assert val["accuracy"] == pytest.approx(float(((p > 0.5).float() == y[80:]).float().mean()))


def test_early_stopping_restores_best_weights():
    # random labels: the model memorises the training set, validation loss gets worse
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(96, 6, 4, generator=g), torch.randint(0, 2, (96,), generator=g).float()
    xv, yv = torch.randn(64, 6, 4, generator=g), torch.randint(0, 2, (64,), generator=g).float()
    torch.manual_seed(0)
    model = rk.Sequential(rk.LSTM(16, input_size=4), rk.Dense(1, "sigmoid"))
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = fit(model, x, y, validation_data=(xv, yv), optimizer="adam", lr=3e-2, batch_size=16,
            epochs=30, callbacks=[es], seed=0, verbose=0)
    vl = h.history["val_loss"]
    best = int(np.argmin(vl))
    assert es.best_epoch == best and es.stopped_epoch == len(vl) - 1 < 29
    assert len(vl) == best + 1 + 2  # stopped after `patience` epochs without improvement
    after = evaluate(model, xv, yv)["loss"]
    assert after == pytest.approx(vl[best], abs=1e-6)
    assert abs(after - vl[-1]) > 1e-3  # really different weights from the last epoch

    # without restoring, the last epoch's weights remain
    torch.manual_seed(0)
    model = rk.Sequential(rk.LSTM(16, input_size=4), rk.Dense(1, "sigmoid"))
    h = fit(model, x, y, validation_data=(xv, yv), optimizer="adam", lr=3e-2, batch_size=16,
            epochs=30, callbacks=[EarlyStopping(patience=2)], seed=0, verbose=0)
    assert evaluate(model, xv, yv)["loss"] == pytest.approx(h.history["val_loss"][-1], abs=1e-6)


def test_early_stopping_keras_semantics_scripted():
    """Patience and min_delta counted as Keras does, mode from the monitored name."""
    model = rk.Sequential(rk.Dense(1, "sigmoid", input_size=1))
    x, y = torch.randn(8, 1), torch.ones(8)
    script = iter([0.60, 0.70, 0.705, 0.69, 0.71, 0.50, 0.5])

    class Acc(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_accuracy"] = next(script)

    es = EarlyStopping(monitor="val_accuracy", patience=3, min_delta=0.01)
    h = fit(model, x, y, epochs=7, callbacks=[Acc(), es], verbose=0, optimizer="sgd")
    # 0.60 best; 0.70 improves by > 0.01; 0.705, 0.69 and 0.71 do not (by more than 0.01)
    assert es.mode == "max" and es.best == 0.70 and es.best_epoch == 1
    assert h.epoch == [0, 1, 2, 3, 4] and es.stopped_epoch == 4
    with pytest.raises(ValueError, match="validation data"):
        fit(model, x, y, epochs=1, callbacks=[EarlyStopping()], verbose=0)


def test_batch_iterables_custom_loss_and_metrics():
    x, y = _sign_task(64)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    torch.manual_seed(0)
    model = rk.Sequential(rk.SimpleRNN(4, input_size=1), rk.Dense(1))
    calls = []

    def loss(out, tgt):
        calls.append(out.shape[0])
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), tgt)

    h = fit(model, train_data=batches, validation_data=batches[:2], loss=loss,
            metrics={"pos": lambda o, t: (o > 0).float().mean()}, optimizer="adam",
            lr=1e-2, epochs=2, verbose=0)
    assert set(h.history) == {"loss", "pos", "val_loss", "val_pos"}
    assert calls.count(16) == 2 * 4 + 2 * 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    fit(model, loader, loss=loss, metrics=None, epochs=1, verbose=0)  # x as batch iterable
    gen = ((a, b) for a, b in batches)
    with pytest.raises(ValueError, match="re-iterable"):
        fit(model, train_data=gen, loss=loss, metrics=None, epochs=2, verbose=0)
    with pytest.raises(ValueError, match="same number of samples"):
        fit(model, x, y[:10], verbose=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(model, x, y, loss="hinge", verbose=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit(model, x, y, optimizer="adagrad", verbose=0)


def test_multi_input_model_and_tuple_predict():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rk.GRU(4, input_size=2)
            self.output_layer = rk.Dense(3, "softmax", input_size=8)

        def forward(self, a, b):
            return self.output_layer(torch.cat([self.rnn(a), self.rnn(b)], -1))

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 5, 2, generator=g), torch.randn(40, 5, 2, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    model = Pair()
    h = fit(model, (a, b), y, loss="sparse_categorical_crossentropy", optimizer="adam",
            lr=1e-2, epochs=3, batch_size=8, verbose=0, clip_norm=1.0, clip_value=0.5)
    assert h.history["loss"][-1] < h.history["loss"][0]
    p = predict(model, (a, b), batch_size=7)
    with torch.no_grad():
        assert torch.allclose(p, model(a, b), atol=1e-6)
    ev = evaluate(model, (a, b), y, loss="sparse_categorical_crossentropy")
    assert ev["loss"] == pytest.approx(float(nn.functional.nll_loss(torch.log(p), y)), abs=1e-5)
    assert ev["accuracy"] == pytest.approx(float((p.argmax(-1) == y).float().mean()))


def test_losses_against_torch_and_clipped_probabilities():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, generator=g)
    p = torch.softmax(z, -1)
    t = torch.randint(0, 4, (6,), generator=g)
    oh = nn.functional.one_hot(t, 4).float()
    ref = float(nn.functional.cross_entropy(z, t))
    for got in (sparse_categorical_crossentropy(p, t, z), sparse_categorical_crossentropy(p, t),
                categorical_crossentropy(p, oh, z), categorical_crossentropy(p, oh)):
        assert float(got) == pytest.approx(ref, abs=1e-6)
    zb = torch.randn(6, 1, generator=g)
    yb = torch.randint(0, 2, (6,), generator=g).float()
    refb = float(nn.functional.binary_cross_entropy_with_logits(zb.squeeze(-1), yb))
    assert float(binary_crossentropy(torch.sigmoid(zb), yb, zb)) == pytest.approx(refb, abs=1e-6)
    assert float(binary_crossentropy(torch.sigmoid(zb), yb)) == pytest.approx(refb, abs=1e-6)
    # saturated probabilities: clipped like Keras, finite
    sat = binary_crossentropy(torch.tensor([[1.0]]), torch.tensor([0.0]))
    assert float(sat) == pytest.approx(-math.log(1 - float(np.float32(1 - 1e-7))), rel=1e-6)
    # from logits the loss stays exact where the probability saturates in float32
    big = torch.tensor([[40.0]])
    assert float(binary_crossentropy(torch.sigmoid(big), torch.tensor([0.0]), big)) == \
        pytest.approx(40.0, rel=1e-6)


def test_terminate_on_nan():
    x, y = _sign_task(64)
    model = rk.Sequential(rk.Dense(1, input_size=1))
    seen = []

    def bad_loss(out, tgt):
        seen.append(1)
        return out.mean() * float("nan")

    h = History()
    with pytest.raises(TrainingDiverged, match="diverged") as e:
        fit(model, x[:, 0], y, loss=bad_loss, metrics=None, batch_size=8, epochs=3,
            callbacks=[TerminateOnNaN(), h], verbose=0, optimizer="sgd")
    assert e.value.epoch == 0 and isinstance(e.value, UserError)
    assert len(seen) == 1 and h.epoch == [0] and math.isnan(h.history["loss"][0])


def test_history_json_round_trip(tmp_path):
    h = History()
    h.on_epoch_end(0, {"loss": 0.5, "val_loss": float("nan")})
    h.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.3})
    h.save(tmp_path / "history.json")
    h2 = History.from_json((tmp_path / "history.json").read_text())
    assert h2.epoch == [0, 1] and h2.history["loss"] == [0.5, 0.25]
    assert math.isnan(h2.history["val_loss"][0]) and h2.best("val_loss") == (1, 0.3)


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras is not on the torch backend in this process")
    return keras


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_optimizers_match_keras(name):
    keras = _keras()
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 3, generator=g, dtype=torch.float64).float()
    grads = [torch.randn(5, 3, generator=g) * 10 ** (-i % 4) for i in range(8)]
    lr = 0.01
    p = nn.Parameter(w0.clone())
    opt = RMSprop([p], lr=lr) if name == "rmsprop" else Adam([p], lr=lr)
    kopt = (keras.optimizers.RMSprop(learning_rate=lr) if name == "rmsprop"
            else keras.optimizers.Adam(learning_rate=lr))
    kv = keras.Variable(w0.numpy().copy())
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        kopt.apply_gradients([(keras.ops.convert_to_tensor(gr.numpy()), kv)])
    kw = torch.as_tensor(keras.ops.convert_to_numpy(kv.value))
    assert torch.allclose(p.detach(), kw, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(p.detach(), w0)  # it did move


# -- real data ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imdb_subset():
    data_dir = Path(os.environ.get("RNNKIT_DATA_DIR", ROOT.parent / "shared" / "data"))
    path = data_dir / "imdb_keras_subset.npz"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} is missing "
                    "(set RNNKIT_DATA_DIR to the directory holding imdb_keras_subset.npz)")
    # legacy Keras format: object arrays of int lists (allow_pickle only for this file)
    with np.load(path, allow_pickle=True) as d:
        return [d[k] for k in ("x_train", "y_train", "x_test", "y_test")]


def _pad_pre(seqs, maxlen: int) -> torch.Tensor:
    """Pad and truncate at the front (Keras pad_sequences defaults)."""
    out = np.zeros((len(seqs), maxlen), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s)[-maxlen:]
        if s:
            out[i, -len(s):] = s
    return torch.from_numpy(out)


def test_seed_model_learns_real_imdb_subset(imdb_subset):
    x_train, y_train, x_test, y_test = imdb_subset
    x, xv = _pad_pre(x_train, 100), _pad_pre(x_test, 100)
    y = torch.as_tensor(y_train.astype(np.float32))
    yv = torch.as_tensor(y_test.astype(np.float32))
    torch.manual_seed(0)
    model = rk.Sequential(rk.Embedding(500, 16), rk.SimpleRNN(8), rk.Dense(1, "sigmoid"),
                          input_shape=(100,))

    class StopAtTarget(Callback):  # bounded run: stop as soon as the target is reached
        def on_epoch_end(self, epoch, logs=None):
            self.stop_training = logs["val_accuracy"] > 0.70

    h = fit(model, x, y, validation_data=(xv, yv), epochs=MAX_EPOCHS,
            callbacks=[StopAtTarget()], seed=0, verbose=0, **RECOMMENDED)
    assert h.history["val_accuracy"][-1] > 0.70, h.history
    assert evaluate(model, xv, yv)["accuracy"] == pytest.approx(h.history["val_accuracy"][-1])


#: bound on the epochs of the real-data test (measured: 0.72 after 3 epochs)
MAX_EPOCHS = 6


def test_progress_output(capsys):
    import io

    x, y = _sign_task(32)
    model = rk.Sequential(rk.Dense(1, "sigmoid", input_size=1))
    fit(model, x[:, 0], y, epochs=2, verbose=0, optimizer="sgd")
    assert capsys.readouterr() == ("", "")
    fit(model, x[:, 0], y, epochs=2, verbose=2, optimizer="sgd", validation_split=0.5)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("Epoch 1/2") and "val_accuracy:" in lines[1]
    stream = io.StringIO()
    bar = rk.callbacks.ProgressBar(one_line=False, stream=stream)
    fit(model, x[:, 0], y, epochs=1, batch_size=8, verbose=1, callbacks=[bar], optimizer="sgd")
    assert "4/4" in stream.getvalue() and "loss:" in stream.getvalue()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_compiled_update_equals_torch_ops(name, dtype):
    """On the CPU the RMSprop/Adam update runs in one compiled pass; a non-contiguous
    gradient takes the torch ops instead. Both give the same weights after 5 steps."""
    from rnnkit.train import Adam, RMSprop

    cls = {"rmsprop": RMSprop, "adam": Adam}[name]
    g0 = torch.Generator().manual_seed(1)
    p1 = torch.nn.Parameter(torch.randn(300, 7, dtype=dtype, generator=g0))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1, o2 = cls([p1], lr=1e-2), cls([p2], lr=1e-2)
    for _ in range(5):
        g = torch.randn(300, 7, dtype=dtype, generator=g0)
        p1.grad, p2.grad = g.clone(), g.T.contiguous().T  # contiguous vs a transposed view
        assert not p2.grad.is_contiguous()
        o1.step()
        o2.step()
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(p1, p2, atol=tol, rtol=tol)
    assert not torch.equal(p1, torch.nn.Parameter(torch.randn(300, 7, dtype=dtype,
                                                              generator=torch.Generator()
                                                              .manual_seed(1))))


class _LogitsNet(nn.Module):
    """Two-class scores without a softmax (as SeriesClassifierModel returns)."""

    def __init__(self, declare: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)
        if declare:
            self.outputs = "logits"

    def forward(self, x):
        return self.lin(x)


def test_string_loss_on_logits_is_refused_or_exact():
    """The trap of issue 15: a logits model with a string cross-entropy trained silently wrong
    (the logits were clipped to [1e-7, 1]). Undeclared: a clear error; declared: the exact
    cross-entropy from logits, equal to torch's, and the metrics see probabilities."""
    torch.manual_seed(0)
    x = torch.randn(64, 1) * 3
    y = (x[:, 0] > 0).long()
    with pytest.raises(ValueError, match="returns logits"):
        fit(_LogitsNet(False), x, y, loss="sparse_categorical_crossentropy", epochs=1,
            verbose=0)
    m = _LogitsNet(True)
    res = evaluate(m, x, y, loss="sparse_categorical_crossentropy")
    want = nn.functional.cross_entropy(m(x), y).item()
    assert res["loss"] == pytest.approx(want, rel=1e-6)
    h = fit(m, x, y, loss="sparse_categorical_crossentropy", epochs=30, lr=0.05,
            optimizer="adam", verbose=0, seed=0)
    assert h.history["accuracy"][-1] > 0.9


def test_predict_fills_one_output_tensor_and_falls_back_to_a_list():
    """predict's outputs equal the per-batch outputs concatenated: one-tensor outputs (copied
    into one buffer), tuple outputs, and outputs whose first dimension is not the batch's
    (the buffer would overflow: predict falls back to concatenating a list)."""
    from torch import nn

    from rnnkit.train import predict

    x = torch.randn(23, 4)

    class Pair(nn.Module):
        def forward(self, v):
            return v * 2, v.sum(1)

    class Doubled(nn.Module):
        def forward(self, v):
            return torch.cat([v, -v])

    lin = nn.Linear(4, 3)
    for model, want in ((lin, lin(x)), (Doubled(), torch.cat([torch.cat([b, -b])
                                                              for b in x.split(5)]))):
        got = predict(model, x, batch_size=5)
        torch.testing.assert_close(got, want.detach())
    a, b = predict(Pair(), x, batch_size=5)
    torch.testing.assert_close(a, x * 2)
    torch.testing.assert_close(b, x.sum(1))


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_compiled_update_of_a_large_tensor_is_the_same_on_any_thread_count(name):
    """A tensor large enough for the compiled update's threaded loop (>= 65,536 entries)
    gets bitwise the same update on one and on two threads, and the torch-ops update of the
    same optimizer (the path taken without the kernels) within float32 rounding."""
    from rnnkit.kernels import native, optim

    if not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.why_unavailable()}")
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(300, 257, generator=g)
    grads = [torch.randn(300, 257, generator=g) for _ in range(3)]
    cls = RMSprop if name == "rmsprop" else Adam

    def run(threads: int, compiled: bool) -> torch.Tensor:
        p = nn.Parameter(w0.clone())
        opt = cls([p], lr=0.01)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with pytest.MonkeyPatch.context() as mp:
                if not compiled:
                    mp.setattr(optim.native, "available", lambda: False)
                for gr in grads:
                    p.grad = gr.clone()
                    opt.step()
        finally:
            torch.set_num_threads(old)
        return p.detach()

    one, two = run(1, True), run(2, True)
    assert torch.equal(one, two)
    torch.testing.assert_close(one, run(1, False), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one, w0)
