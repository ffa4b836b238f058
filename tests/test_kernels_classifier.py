"""The fused classifier (kernels/classifier.py) against the autograd reference.

Training: ``fit`` with the fused step and ``fit`` with ``backend="reference"`` (the readable
loop, autograd, the optimizers of rnnkit.train) from the same weights and seed must give the
same losses, outputs and weights. Inference: ``model(ids)`` without gradients through the
fused call equals the reference forward.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import rnnkit
from rnnkit import callbacks, train
from rnnkit import planner as classifier
from rnnkit.kernels import LANES_MAX_UNITS
from rnnkit.layers import OneHot

CELLS = {"simple": rnnkit.SimpleRNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def _model(cell: str, source: str, units: int = 5, classes: int = 1, vocab: int = 40,
           time: int = 11, **rnn_kw) -> rnnkit.Sequential:
    first = (rnnkit.Embedding(vocab, 6, mask_zero=True) if source == "embedding"
             else OneHot(vocab, mask_zero=True))
    head = rnnkit.Dense(1, "sigmoid") if classes == 1 else rnnkit.Dense(classes, "softmax")
    return rnnkit.Sequential(first, CELLS[cell](units, **rnn_kw), head, input_shape=(time,))


def _data(n: int = 53, time: int = 11, vocab: int = 40, classes: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, time), generator=g)
    lengths = torch.randint(0, time + 1, (n,), generator=g)
    ids[torch.arange(time) < (time - lengths).unsqueeze(1)] = 0  # pre-padding, some empty
    if classes == 1:
        y = torch.randint(0, 2, (n, 1), generator=g).float()
    else:
        y = torch.randint(0, classes, (n,), generator=g)
    return ids, y


def _reference(model: rnnkit.Sequential) -> rnnkit.Sequential:
    ref = copy.deepcopy(model)
    ref[1].backend = "reference"
    return ref


def _fit(model, ids, y, **kw):
    return train.fit(model, ids, y, batch_size=16, epochs=2, verbose=0, seed=3, **kw)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("source", ["embedding", "onehot"])
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
@pytest.mark.parametrize("units", [5, 20])
def test_training_equals_reference(one_thread, cell, source, optimizer, units):
    """5 units: recurrent products in the compiled loop; 20: through BLAS (lanes.GEMM_MIN)."""
    torch.manual_seed(0)
    model = _model(cell, source, units=units)
    ref = _reference(model)
    ids, y = _data()
    kw = {"optimizer": optimizer, "lr": 1e-2, "clip_norm": 0.3}
    h = _fit(model, ids, y, **kw)
    h_ref = _fit(ref, ids, y, **kw)
    assert h.params["fused_step"] and not h_ref.params["fused_step"]
    assert h.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-5)
    assert h.history["accuracy"] == pytest.approx(h_ref.history["accuracy"], abs=1e-9)
    # with BLAS the float32 sums run in another order than torch's; Adam's normalised steps
    # carry that into weights whose gradients are near zero, hence the wider atol at 20 units
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=2e-6 if units == 5 else 2e-5, rtol=1e-4)
    assert model[1].last_backend == "lanes"


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_softmax_head_recurrent_dropout_and_backwards(one_thread, cell):
    torch.manual_seed(1)
    model = _model(cell, "embedding", units=9, classes=3, recurrent_dropout=0.3,
                   go_backwards=True)
    ref = _reference(model)
    ids, y = _data(classes=3)
    kw = {"loss": "sparse_categorical_crossentropy", "clip_value": 0.05}
    h = _fit(model, ids, y, **kw)
    h_ref = _fit(ref, ids, y, **kw)
    assert h.params["fused_step"]
    assert h.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_step_sequences(one_thread, cell):
    """Sequences of one token: the step's backward gets no per-step output gradients."""
    torch.manual_seed(6)
    model = _model(cell, "embedding", time=1)
    ref = _reference(model)
    ids, y = _data(time=1)
    ids[ids == 0] = 1  # every sequence one real token
    h = _fit(model, ids, y)
    h_ref = _fit(ref, ids, y)
    assert h.params["fused_step"]
    assert h.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-4)


def test_float64_and_relu(one_thread):
    torch.manual_seed(2)
    model = _model("simple", "embedding", units=4).double()
    model[1].cell.activation = "relu"
    ref = _reference(model)
    ids, y = _data()
    h = _fit(model, ids, y.double())
    h_ref = _fit(ref, ids, y.double())
    assert h.params["fused_step"]
    assert h.history["loss"] == pytest.approx(h_ref.history["loss"], rel=1e-10)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-10)


class _EveryBatch(callbacks.Callback):
    """Acts on every batch, so fit must run the fused step one batch per call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, float]] = []

    def on_batch_end(self, batch, logs=None):
        self.seen.append((batch, logs["loss"]))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_spans_equal_single_batch_steps(one_thread, cell, monkeypatch):
    """fit trains spans of full batches in one compiled call each (here 2 per span, then a
    partial batch of 5 of the 53 samples); with a callback acting on every batch it calls
    the step batch by batch. Same shuffle, recurrent-dropout masks, Adam steps, clipping,
    metrics: the same history and weights."""
    monkeypatch.setattr(train, "SPAN_BATCHES", 2)
    torch.manual_seed(4)
    model = _model(cell, "embedding", units=7, recurrent_dropout=0.25, go_backwards=True)
    other = copy.deepcopy(model)
    ids, y = _data()
    kw = {"optimizer": "adam", "lr": 1e-2, "clip_norm": 0.5}
    h = _fit(model, ids, y, **kw)
    every = _EveryBatch()
    h1 = _fit(other, ids, y, callbacks=[every], **kw)
    assert h.params["fused_step"] and h1.params["fused_step"]
    assert (h.params["batches_per_call"], h1.params["batches_per_call"]) == (2, 1)
    assert [b for b, _ in every.seen] == [0, 1, 2, 3] * 2
    assert h.history["loss"] == pytest.approx(h1.history["loss"], rel=1e-6)
    assert h.history["accuracy"] == pytest.approx(h1.history["accuracy"], abs=1e-9)
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_spans_keep_progress_and_epoch_callbacks(one_thread, monkeypatch):
    """The progress bar (told of each batch after its span) and callbacks without batch
    hooks (early stopping) leave fit on spans; every batch still reaches the bar."""
    monkeypatch.setattr(train, "SPAN_BATCHES", 3)
    model = _model("gru", "embedding")
    ids, y = _data(n=70)  # 4 full batches of 16 and one of 6: spans 0-2, 3, then 4
    stream = io.StringIO()
    h = _fit(model, ids, y, callbacks=[callbacks.ProgressBar(one_line=False, stream=stream),
                                       callbacks.EarlyStopping(monitor="loss", patience=5)])
    assert h.params["batches_per_call"] == 3
    assert "5/5" in stream.getvalue()
    assert len(h.history["loss"]) == 2


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("lanes", [8, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_predict_in_one_call_equals_reference(cell, lanes, threads, monkeypatch):
    """``predict`` runs all sequences in one compiled call whatever its batch size, in
    chunks of ``INFER_LANES`` (45 = 5 x 8 + 5: a partial last chunk; or one chunk of 48
    lanes, 3 of them padding), on one thread or two."""
    calls = []
    kernel = classifier.infer_kernel

    def counted(dtype, *args):
        calls.append(args[5])  # the number of sequences
        return kernel(dtype, *args)
    monkeypatch.setattr(classifier, "infer_kernel", counted)
    monkeypatch.setattr(classifier, "INFER_LANES", lanes)
    torch.manual_seed(5)
    model = _model(cell, "embedding", units=6, classes=3, go_backwards=True)
    ids, _ = _data(n=45)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = train.predict(model, ids, batch_size=16)
    finally:
        torch.set_num_threads(old)
    assert calls == [45]
    with torch.no_grad():
        model[1].backend = "reference"
        expected = model.eval()(ids)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("batch", [1, 7, 40])
@pytest.mark.parametrize("units", [6, 20])
@pytest.mark.parametrize("source", ["embedding", "onehot"])
def test_inference_equals_reference(one_thread, cell, batch, units, source):
    """6 units: recurrent products in the compiled loop; 20: through BLAS."""
    torch.manual_seed(3)
    model = _model(cell, source, units=units, classes=4).eval()
    ids, _ = _data(n=batch)
    with torch.no_grad():
        out = model(ids)
        assert model[1].last_backend == "lanes" and model[1].embedding_folded
        model[1].backend = "reference"
        expected = model(ids)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_not_fused_when_unsupported(one_thread):
    ids, y = _data()
    # input dropout, momentum, a custom loss, an explicit backend: the autograd loop runs
    cases = [(_model("lstm", "embedding", dropout=0.2), {}, "input dropout"),
             (_model("lstm", "embedding"), {"optimizer": "sgd"}, "optimizer SGD"),
             (_model("lstm", "embedding"), {"loss": "mse"}, "loss 'mse'"),
             (_model("lstm", "embedding", backend="reference"), {}, "backend 'reference'")]
    for model, kw, why in cases:
        params = _fit(model, ids, y, **kw).params
        assert not params["fused_step"]
        assert why in params["fused_step_why_not"]  # one line saying why
    fused = _fit(_model("lstm", "embedding"), ids, y).params
    assert fused["fused_step"] and "fused_step_why_not" not in fused
    assert isinstance(classifier.parts(rnnkit.Sequential(rnnkit.Dense(1))), str)
    model = _model("gru", "embedding")
    w = model[1].cell.recurrent_kernel.detach()  # a transposed view: not fused, still right
    model[1].cell.recurrent_kernel = torch.nn.Parameter(w.T.contiguous().T)
    assert classifier.parts(model) == "a parameter is not contiguous"
    assert not _fit(model, ids, y).params["fused_step"]


def test_bad_class_ids_are_rejected(one_thread):
    model = _model("gru", "embedding", classes=3)
    ids, _ = _data()
    with pytest.raises(ValueError, match="class ids"):
        _fit(model, ids, torch.full((ids.shape[0],), 5), loss="sparse_categorical_crossentropy")


def test_lstm_inference_in_one_call_up_to_lanes_max_units(monkeypatch):
    """An LSTM classifier of up to LANES_MAX_UNITS units, masked or not, infers in one
    compiled call; one unit more leaves it to the layers, one by one: there the Embedding
    folds into a cached table read by the blas kernel (rnnkit.fold), or, without that
    table, the LSTM runs on oneDNN. Every output equals the reference loop's."""
    from rnnkit import fold

    calls = []
    kernel = classifier.infer_kernel
    monkeypatch.setattr(classifier, "infer_kernel",
                        lambda dtype, *a: (calls.append(a[5]), kernel(dtype, *a))[1])
    ids = torch.randint(1, 40, (300, 11), generator=torch.Generator().manual_seed(0))
    for units, mask, fused in ((32, False, True), (LANES_MAX_UNITS, False, True),
                               (LANES_MAX_UNITS, True, True), (LANES_MAX_UNITS + 1, False, False)):
        torch.manual_seed(1)
        model = rnnkit.Sequential(rnnkit.Embedding(40, 6, mask_zero=mask),
                                  rnnkit.LSTM(units), rnnkit.Dense(1, "sigmoid"),
                                  input_shape=(11,))
        calls.clear()
        out = train.predict(model, ids, batch_size=256)
        assert (calls == [300]) == fused, (units, mask, calls)
        if not fused:
            assert model[1].last_backend == "blas" and model[1].embedding_folded
        with torch.no_grad():
            expected = _reference(model).eval()(ids)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        if not fused:
            with monkeypatch.context() as m:
                m.setattr(fold, "TABLE_CACHE_MAX_BYTES", 0)
                model[1].__dict__.pop("_fold_table")
                out = train.predict(model, ids, batch_size=256)
            assert model[1].last_backend == "torch" and not model[1].embedding_folded
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch, units, want", [(16, 8, 1), (256, 32, 2)])
def test_a_batch_too_small_to_chunk_trains_on_one_thread(batch, units, want, monkeypatch):
    """lanes.chunking keeps a small batch in one chunk; the whole compiled step then runs
    on one thread (forks and joins of its table, scatter and GEMM passes cost more than they
    save there), while a batch split into chunks keeps every thread."""
    from rnnkit.kernels import lanes, native

    monkeypatch.setattr(native, "threads", lambda: 2)
    seen = []
    real = native.fn

    def spy(name, dtype):
        f = real(name, dtype)
        if name != "rk_train_span":
            return f

        def call(arg):
            seen.append(arg._obj.nthreads)
            return f(arg)
        return call

    monkeypatch.setattr(classifier.native, "fn", spy)
    model = _model("lstm", "embedding", units=units, time=100)
    ids, y = _data(n=batch, time=100)
    h = train.fit(model, ids, y, batch_size=batch, epochs=1, verbose=0, seed=3,
                  optimizer="adam")
    assert h.params["fused_step"]
    assert lanes.chunking(batch, 100, 4 * units, units)[0] == want
    assert seen and set(seen) == {want}
