"""Fused kernels (rnnkit.kernels) against the reference time loop.

Oracle: ``backend="reference"`` (rnnkit.recurrent.reference_scan, itself tested against
torch.nn and Keras). Same weights, same inputs, same dropout masks (same torch seed before
each call: RNN.forward samples the masks before dispatch). Outputs within 1e-5, gradients
of x, initial state and every parameter within 1e-4 relative (float64).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import GRU, LSTM, Bidirectional, SimpleRNN, lengths_to_mask, train
from rnnkit.kernels import LANES_MAX_UNITS, select

CELLS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


def _mask(kind: str, lengths: list[int], time: int, gen: torch.Generator):
    if kind == "none":
        return None
    if kind == "random":
        return torch.rand(len(lengths), time, generator=gen) > 0.3
    return lengths_to_mask(lengths, time, padding=kind)


def _grads(layer, x, h0, mask, seed):
    torch.manual_seed(seed)
    out = layer(x, initial_state=h0, mask=mask)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    wrt = [x, *(h0 or ()), *layer.parameters()]
    return outs, torch.autograd.grad(loss, wrt, allow_unused=True)


def assert_same(layer_ref, layer_fused, x, h0=None, mask=None, seed=0, out_tol=1e-5):
    xr = x.detach().clone().requires_grad_(True)
    xf = x.detach().clone().requires_grad_(True)
    h0r = None if h0 is None else [s.detach().clone().requires_grad_(True) for s in h0]
    h0f = None if h0 is None else [s.detach().clone().requires_grad_(True) for s in h0]
    o_ref, g_ref = _grads(layer_ref, xr, h0r, mask, seed)
    o_fus, g_fus = _grads(layer_fused, xf, h0f, mask, seed)
    for a, b in zip(o_ref, o_fus, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=out_tol)
    for a, b in zip(g_ref, g_fus, strict=True):
        if a is None:
            assert b is None or not b.abs().any()
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))


def _pair(cls, backend, **kw):
    ref = cls(**kw, backend="reference")
    fused = copy.deepcopy(ref)
    fused.backend = backend
    return ref, fused


def _build_same(ref, fused, input_size, dtype):
    ref.build(input_size, dtype=dtype)
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial biases too
            p.normal_(0, 0.5)
    fused.build(input_size, dtype=dtype)
    fused.load_state_dict(ref.state_dict())


@SETTINGS
@given(cell=st.sampled_from(sorted(CELLS)), backend=st.sampled_from(["lanes", "blas"]),
       batch=st.integers(1, 4), time=st.integers(1, 6), feat=st.integers(1, 4),
       units=st.integers(1, 5), seq=st.booleans(), back=st.booleans(),
       mask_kind=st.sampled_from(["none", "post", "pre", "random"]),
       dropout=st.sampled_from([0.0, 0.3]), rec_dropout=st.sampled_from([0.0, 0.4]),
       init=st.booleans(), relu=st.booleans(), data=st.data())
def test_fused_matches_reference(cell, backend, batch, time, feat, units, seq, back, mask_kind,
                                 dropout, rec_dropout, init, relu, data):
    kw = {"units": units, "return_sequences": seq, "return_state": True, "go_backwards": back,
          "dropout": dropout, "recurrent_dropout": rec_dropout}
    if cell == "simple" and relu:
        kw["activation"] = "relu"
    ref, fused = _pair(CELLS[cell], backend, **kw)
    _build_same(ref, fused, feat, torch.float64)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    x = torch.randn(batch, time, feat, generator=gen, dtype=torch.float64)
    lengths = [data.draw(st.integers(0, time)) for _ in range(batch)]
    mask = _mask(mask_kind, lengths, time, gen)
    h0 = None
    if init:
        h0 = [torch.randn(batch, units, generator=gen, dtype=torch.float64)
              for _ in ref.cell.state_names]
    assert_same(ref, fused, x, h0, mask)
    assert fused.last_backend == backend


@SETTINGS
@given(cell=st.sampled_from(sorted(CELLS)), batch=st.integers(1, 5), time=st.integers(2, 7),
       feat=st.integers(1, 4), units=st.integers(1, 6), seq=st.booleans(),
       mask_kind=st.sampled_from(["none", "post", "pre", "random"]), relu=st.booleans(),
       bias=st.booleans(), fold=st.booleans(), data=st.data())
def test_bidirectional_inference_matches_reference(cell, batch, time, feat, units, seq,
                                                   mask_kind, relu, bias, fold, data):
    """kernels.blas.bidirectional (one projection for both directions, the backward one
    walked in reverse in place, each writing its half of the output; with ``fold`` read
    from the Embedding's kept table, rnnkit.fold) against the reference loop, float64."""
    from rnnkit.kernels import blas

    kw = {"return_sequences": seq, "use_bias": bias}
    if cell == "simple" and relu:
        kw["activation"] = "relu"
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    lengths = [data.draw(st.integers(0, time)) for _ in range(batch)]
    mask = _mask(mask_kind, lengths, time, gen)
    ref = Bidirectional(CELLS[cell](units, backend="reference", **kw))
    ref.build(feat, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.5, generator=gen)
    bi = copy.deepcopy(ref)
    bi.forward_layer.backend = bi.backward_layer.backend = "auto"
    calls = []
    real = blas.bidirectional
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blas, "bidirectional", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
        with torch.no_grad():
            if fold:  # Embedding -> Bidirectional: enough tokens to keep a table at once
                vocab = 3
                emb = rnnkit.Embedding(vocab, feat).double()
                ids = torch.randint(0, vocab, (batch, time), generator=gen)
                got = rnnkit.Sequential(emb, bi)(ids)
                want = rnnkit.Sequential(emb, ref)(ids)
                assert bi.forward_layer.embedding_folded == (batch * time >= vocab)
            else:
                x = torch.randn(batch, time, feat, generator=gen, dtype=torch.float64)
                got, want = bi(x, mask=mask), ref(x, mask=mask)
    assert calls == [1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("backend", ["lanes", "blas"])
def test_one_step_last_output(cell, backend):
    """T = 1 with only the last output: the backward's "no per-step gradients" marker must
    not be mistaken for a one-step gradient (it once was, and gradients read past an array
    and came out NaN at random)."""
    ref, fused = _pair(CELLS[cell], backend, units=3, return_state=True)
    _build_same(ref, fused, 2, torch.float64)
    for seed in range(3):
        x = torch.randn(5, 1, 2, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
        assert_same(ref, fused, x)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_auto_runs_one_step_calls_on_the_reference_cell(cell):
    """dispatch.select: a call of one time step (generation) takes the reference cell, in
    float32 and float64, with or without state; a call of two steps takes a kernel."""
    layer = CELLS[cell](8, return_sequences=True, return_state=True)
    for dtype in (torch.float32, torch.float64):
        layer.to(dtype)
        _, *state = layer(torch.randn(3, 1, 2, dtype=dtype))
        assert layer.last_backend == "reference"
        layer(torch.randn(3, 1, 2, dtype=dtype), initial_state=state)
        assert layer.last_backend == "reference"
        layer(torch.randn(3, 2, 2, dtype=dtype), initial_state=state)
        assert layer.last_backend != "reference"


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_float32_auto_with_mask_and_dropout_uses_blas(cell):
    ref, fused = _pair(CELLS[cell], "auto", units=6, return_sequences=True,
                       recurrent_dropout=0.2)
    _build_same(ref, fused, 3, torch.float32)
    x = torch.randn(5, 7, 3)
    mask = lengths_to_mask([7, 3, 5, 1, 6], 7)
    assert_same(ref, fused, x, mask=mask)
    assert fused.last_backend == "blas"


def test_auto_cpu_order_small_lstm_takes_blas():
    """LSTM layers up to dispatch.BLAS_LSTM_MAX_UNITS take blas even where oneDNN could run."""
    from rnnkit.kernels import dispatch

    for units in (6, dispatch.BLAS_LSTM_MAX_UNITS):
        layer = LSTM(units, input_size=2)
        layer(torch.randn(32, 8, 2))
        assert layer.last_backend == "blas", units


@pytest.mark.parametrize("units", [6, LANES_MAX_UNITS + 1])
def test_auto_cpu_order(units):
    """dispatch.CPU_ORDER: blas for SimpleRNN and GRU; torch.nn's oneDNN path for unmasked
    float32 LSTM above dispatch.BLAS_LSTM_MAX_UNITS (equal to the reference), blas for
    masked or float64 LSTM."""
    from rnnkit.kernels import dispatch

    for cls in (SimpleRNN, GRU):
        layer = cls(units)
        layer(torch.randn(2, 3, 2))
        assert layer.last_backend == "blas"
    if units <= dispatch.BLAS_LSTM_MAX_UNITS:
        return  # (the small LSTM: test_auto_cpu_order_small_lstm_takes_blas)
    ref, fused = _pair(LSTM, "auto", units=units, return_sequences=True)
    _build_same(ref, fused, 2, torch.float32)
    assert_same(ref, fused, torch.randn(32, 8, 2))  # 256 sequence-steps: dispatch.ONEDNN_MIN_STEPS
    assert fused.last_backend == "torch"
    fused(torch.randn(32, 7, 2))
    assert fused.last_backend == "blas"
    fused(torch.randn(32, 8, 2), mask=lengths_to_mask([8, 2, 3, 1] * 8, 8))
    assert fused.last_backend == "torch"  # post-padded: the padded batch through oneDNN
    fused(torch.randn(32, 8, 2), mask=lengths_to_mask([8, 2, 3, 1] * 8, 8, padding="pre"))
    assert fused.last_backend == "blas"
    fused.double()(torch.randn(32, 8, 2, dtype=torch.float64))
    assert fused.last_backend == "blas"


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_bidirectional(cell, mode):
    ref_f = CELLS[cell](4, return_sequences=True, recurrent_dropout=0.3, backend="reference")
    ref = Bidirectional(ref_f, merge_mode=mode)
    ref.build(3, dtype=torch.float64)
    fused = copy.deepcopy(ref)
    fused.forward_layer.backend = fused.backward_layer.backend = "auto"
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    mask = lengths_to_mask([5, 2, 4], 5, padding="pre")
    assert_same(ref, fused, x, mask=mask)
    assert fused.last_backend == "blas"
    assert fused.backward_layer.last_backend == "blas"


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_stacked_with_embedding_mask(cell):
    def model(backend):
        torch.manual_seed(3)
        m = rnnkit.Sequential(
            rnnkit.Embedding(11, 4, mask_zero=True),
            CELLS[cell](5, return_sequences=True, dropout=0.2, recurrent_dropout=0.2,
                        backend=backend),
            CELLS[cell](3, go_backwards=True, backend=backend),
            rnnkit.Dense(2), input_shape=(6,))
        return m.double()

    ref, fused = model("reference"), model("auto")
    fused.load_state_dict(ref.state_dict())
    ids = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0], [7, 8, 9, 10, 1, 2]])
    out = []
    for m in (ref, fused):
        torch.manual_seed(11)
        y = m(ids)
        grads = torch.autograd.grad((y * y).sum(), list(m.parameters()))
        out.append((y, grads))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=0, atol=1e-5)
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))
    assert fused[1].last_backend == fused[2].last_backend == "blas"


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("back", [False, True])
@pytest.mark.parametrize("seq", [False, True])
def test_torch_backend_masks_on_cpu_run_the_padded_batch(cell, back, seq):
    """Post-padded masks on the CPU: the whole padded batch through torch's op, outputs
    masked and moved (kernels.torch_nn), equal to the reference in values and gradients,
    with an empty row, a one-step row and go_backwards."""
    ref, fused = _pair(CELLS[cell], "torch", units=5, return_sequences=seq, go_backwards=back)
    _build_same(ref, fused, 3, torch.float64)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 7, 3, generator=gen, dtype=torch.float64)
    mask = lengths_to_mask([7, 3, 0, 1, 6, 7], 7)
    assert_same(ref, fused, x, mask=mask)
    assert fused.last_backend == "torch"


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("back", [False, True])
def test_torch_backend_forced_on_cpu(cell, back):
    ref, fused = _pair(CELLS[cell], "torch", units=4, return_sequences=True,
                       return_state=True, go_backwards=back, dropout=0.25)
    _build_same(ref, fused, 3, torch.float64)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    h0 = [torch.randn(4, 4, dtype=torch.float64) for _ in ref.cell.state_names]
    mask = None if back else lengths_to_mask([5, 2, 4, 1], 5)
    assert_same(ref, fused, x, h0, mask)
    assert fused.last_backend == "torch"


def test_torch_backend_refuses_unsupported_calls():
    layer = LSTM(3, recurrent_dropout=0.5, backend="torch")
    with pytest.raises(ValueError, match="recurrent dropout"):
        layer(torch.randn(2, 4, 3))
    layer = GRU(3, backend="torch")
    with pytest.raises(ValueError, match="post-padding"):
        layer(torch.randn(2, 4, 3), lengths=[4, 2], padding="pre")


def test_unknown_backend_and_fallbacks():
    with pytest.raises(ValueError, match="unknown backend"):
        SimpleRNN(3, backend="nope")(torch.randn(1, 2, 3))

    class MyCell(rnnkit.SimpleRNNCell):
        pass

    layer = rnnkit.RNN(MyCell(3))
    layer(torch.randn(2, 4, 3))
    assert layer.last_backend == "reference"
    x = torch.randn(2, 3, 2, dtype=torch.float16)
    assert select(GRU(2, input_size=2), x, None, None, None) == "reference"


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("back", [False, True])
def test_embedding_fold_matches_reference(cell, back):
    def model(backend, units=5):
        torch.manual_seed(5)
        m = rnnkit.Sequential(
            rnnkit.Embedding(13, 4, mask_zero=True),
            CELLS[cell](units, recurrent_dropout=0.3, go_backwards=back, backend=backend),
            rnnkit.Dense(1), input_shape=(7,))
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.5)
        return m.double()

    ref, fused = model("reference"), model("auto")
    fused.load_state_dict(ref.state_dict())
    ids = _fold_ids()
    ids[3, 2] = 5
    out = []
    for m in (ref, fused):
        torch.manual_seed(11)
        y = m(ids)
        out.append((y, torch.autograd.grad((y * y).sum(), list(m.parameters()))))
    assert fused[1].embedding_folded and fused[1].last_backend == "blas"
    torch.testing.assert_close(out[1][0], out[0][0], rtol=0, atol=1e-5)
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))
    fused.eval()
    torch.testing.assert_close(fused(ids), ref.eval()(ids), rtol=0, atol=1e-5)


def test_embedding_not_folded_with_input_dropout():
    m = rnnkit.Sequential(rnnkit.Embedding(9, 3), GRU(4, dropout=0.5), input_shape=(5,))
    m.train()
    m(torch.randint(0, 9, (8, 5)))
    assert m[1].last_backend == "blas" and not m[1].embedding_folded
    m.eval()
    m(torch.randint(0, 9, (8, 5)))
    assert m[1].embedding_folded


def _fold_model(cell, backend="auto", seq=False, back=False, vocab=13, mask=True,
                bidirectional=False):
    torch.manual_seed(5)
    rnn = CELLS[cell](5, return_sequences=seq, go_backwards=back, backend=backend)
    m = rnnkit.Sequential(
        rnnkit.Embedding(vocab, 4, mask_zero=mask),
        Bidirectional(rnn) if bidirectional else rnn,
        rnnkit.Dense(1), input_shape=(7,))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


def _fold_ids():
    """Ids for the :func:`_fold_model` tests (vocabulary 13, time 7), with padding after
    and before."""
    ids = torch.randint(1, 13, (8, 7), generator=torch.Generator().manual_seed(1))
    ids[1, 4:] = 0
    ids[2, :3] = 0
    return ids


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("back", [False, True])
@pytest.mark.parametrize("seq", [False, True])
def test_inference_table_matches_reference(cell, back, seq):
    """Without autograd the folded table T = E W_x + b is kept on the layer and read by the
    blas kernel row by row (rnnkit.fold); outputs equal the reference loop's, and a change
    of any weight in place (an optimizer step of the compiled optimizer, load_state_dict)
    rebuilds it."""
    ref, fused = _fold_model(cell, "reference", seq, back), _fold_model(cell, "auto", seq, back)
    fused.load_state_dict(ref.state_dict())
    ids = _fold_ids()
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), ref(ids), rtol=0, atol=1e-5)
    assert fused[1].embedding_folded and fused[1].last_backend == "blas"
    table = fused[1].__dict__["_fold_table"][1]
    assert table.shape == (13, fused[1].cell.gates * 5)
    y = torch.randn(8, 7, 1) if seq else torch.randn(8, 1)
    train.fit(fused, ids, y, loss="mse", metrics=None, optimizer="adam", epochs=1, batch_size=4,
              verbose=0)
    ref.load_state_dict(fused.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), ref(ids), rtol=0, atol=1e-5)
        assert fused[1].__dict__["_fold_table"][1] is not table
        table = fused[1].__dict__["_fold_table"][1]
        fresh = _fold_model(cell, "reference", seq, back)
        fused.load_state_dict(fresh.state_dict())
        torch.testing.assert_close(fused(ids), fresh(ids), rtol=0, atol=1e-5)
        assert fused[1].__dict__["_fold_table"][1] is not table


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_inference_table_for_a_bidirectional_layer(cell, seq, mask_zero):
    """Embedding -> Bidirectional folds too, for inference: one table [T_f | T_b] (V, 2G) on
    the Bidirectional layer, read by both directions' walks; outputs equal the reference
    loop's, and a weight changed in place rebuilds it. While training nothing is kept."""
    ref, fused = (_fold_model(cell, backend, seq, mask=mask_zero, bidirectional=True)
                  for backend in ("reference", "auto"))
    fused.load_state_dict(ref.state_dict())
    fused.eval()
    ids = _fold_ids()
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), ref(ids), rtol=0, atol=1e-5)
    bi = fused[1]
    assert bi.forward_layer.embedding_folded and bi.backward_layer.embedding_folded
    assert bi.forward_layer.last_backend == "blas"
    table = bi.__dict__["_fold_table"][1]
    assert table.shape == (13, 2 * bi.forward_layer.cell.gates * 5)
    with torch.no_grad():
        bi.backward_layer.cell.kernel.mul_(-1.0)  # in place: bumps the version counter
        ref[1].backward_layer.cell.kernel.mul_(-1.0)
        torch.testing.assert_close(fused(ids), ref(ids), rtol=0, atol=1e-5)
        assert bi.__dict__["_fold_table"][1] is not table
    fused.train()
    fused(ids).sum().backward()  # training: the table is freed, the layers run as usual
    assert "_fold_table" not in bi.__dict__
    assert not bi.forward_layer.embedding_folded
    fused.eval()
    with torch.no_grad():
        fused(ids)
        assert bi.forward_layer.embedding_folded
        with pytest.MonkeyPatch.context() as mp:  # a cap lowered below a kept table frees it
            mp.setattr(rnnkit.fold, "TABLE_CACHE_MAX_BYTES", 0)
            torch.testing.assert_close(fused(ids), ref(ids), rtol=0, atol=1e-5)
            assert "_fold_table" not in bi.__dict__
            assert not bi.forward_layer.embedding_folded


def test_inference_table_after_fused_training_steps():
    """The fused training step (rnnkit.planner) writes the weights from compiled code; it
    bumps their version counters, so the inference table made before it is rebuilt."""
    torch.manual_seed(0)
    m = rnnkit.Sequential(rnnkit.Embedding(40, 6), LSTM(32), rnnkit.Dense(1, "sigmoid"),
                          input_shape=(11,))
    ids = torch.randint(1, 40, (64, 11), generator=torch.Generator().manual_seed(0))
    y = (ids[:, 0] > 20).float()
    for _ in range(2):
        hist = train.fit(m, ids, y, epochs=1, batch_size=16, verbose=0)
        assert "fused_step_why_not" not in hist.params
        pair = rnnkit.Sequential(m[0], m[1])  # not the planner's shape: the fold runs
        out = train.predict(pair, ids, batch_size=64)
        assert m[1].embedding_folded and m[1].last_backend == "blas"
        ref = copy.deepcopy(pair)
        ref[1].backend = "reference"
        with torch.no_grad():
            torch.testing.assert_close(out, ref(ids), rtol=1e-5, atol=1e-6)


def test_inference_table_waits_for_a_second_call_when_small(monkeypatch):
    """A call with fewer tokens than the vocabulary has rows builds the table only when the
    same weights come again; a table above TABLE_CACHE_MAX_BYTES is never kept."""
    from rnnkit import fold

    m = _fold_model("gru", vocab=50)
    ref = copy.deepcopy(m)
    ref[1].backend = "reference"
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for folded in (False, True, True):
            torch.testing.assert_close(m(ids), ref(ids), rtol=0, atol=1e-5)
            assert m[1].embedding_folded == folded
        monkeypatch.setattr(fold, "TABLE_CACHE_MAX_BYTES", 50 * 15 * 4 - 1)
        m[1].__dict__.pop("_fold_table")
        for _ in range(3):
            torch.testing.assert_close(m(ids), ref(ids), rtol=0, atol=1e-5)
            assert not m[1].embedding_folded
        torch.testing.assert_close(m(torch.zeros(2, 7, dtype=torch.long)),
                                   ref(torch.zeros(2, 7, dtype=torch.long)), rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="outside"):
            monkeypatch.setattr(fold, "TABLE_CACHE_MAX_BYTES", 1 << 20)
            m(ids)
            m(ids + 50)


def test_inference_table_hands_free_heap_back_once_per_build(monkeypatch):
    """The free heap goes back to the OS before a table is built, once per build, not on
    the calls that read a kept table."""
    from rnnkit import fold

    calls = []
    monkeypatch.setattr(fold, "_release_free_heap", lambda: calls.append(1))
    m = _fold_model("gru", vocab=50)
    ids = torch.randint(1, 50, (8, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for _ in range(3):
            m(ids)
    assert m[1].embedding_folded and calls == [1]
    with torch.no_grad():
        m[0].weight.add_(0.0)  # a new weight version: the table is rebuilt
        m(ids)
    assert calls == [1, 1]
    monkeypatch.undo()
    fold._release_free_heap()  # the real call runs (glibc) or is a no-op, without error


def test_inference_table_not_kept_for_weights_made_in_inference_mode():
    """Weights created under torch.inference_mode have no version counter: no table is kept
    for them (the per-call paths run), and outputs still equal the reference loop's."""
    with torch.inference_mode():
        m = rnnkit.Sequential(rnnkit.Embedding(50, 4), GRU(70), rnnkit.Dense(1),
                              input_shape=(7,))
        ids = torch.randint(1, 50, (300, 7), generator=torch.Generator().manual_seed(0))
        out = m(ids)
        ref = copy.deepcopy(m)
        ref[1].backend = "reference"
        torch.testing.assert_close(out, ref(ids), rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(m(ids), out, rtol=0, atol=1e-5)
    assert "_fold_table" not in m[1].__dict__


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_inference_table_keeps_recurrent_dropout_in_training_mode(cell):
    """A layer in training mode called without autograd (Monte Carlo dropout) still drops:
    the table path samples the recurrent-dropout mask as RNN.forward does."""
    torch.manual_seed(5)
    m = rnnkit.Sequential(rnnkit.Embedding(13, 4),
                          CELLS[cell](5, recurrent_dropout=0.4), rnnkit.Dense(1),
                          input_shape=(7,))
    ref = copy.deepcopy(m)
    ref[1].backend = "reference"
    ids = torch.randint(1, 13, (8, 7), generator=torch.Generator().manual_seed(1))
    m.train()
    ref.train()
    with torch.no_grad():
        for _ in range(2):
            torch.manual_seed(3)
            y = m(ids)
            torch.manual_seed(3)
            torch.testing.assert_close(y, ref(ids), rtol=0, atol=1e-5)
        assert m[1].embedding_folded and m[1].__dict__["_fold_table"][1] is not None
        m.eval()
        torch.testing.assert_close(m(ids), ref.eval()(ids), rtol=0, atol=1e-5)

def test_double_backward_raises():
    layer = GRU(3, backend="lanes")
    x = torch.randn(2, 4, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(layer(x).sum(), x, create_graph=True)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("backend", ["lanes", "blas"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("back", [False, True])
def test_inference_without_saved_gates_matches_reference(cell, backend, dtype, back):
    """Inference keeps no states or gates, and on ``blas`` the projection GEMM leaves the
    input bias to the kernel (float32: the kernels' own GEMM where it is theirs)."""
    ref, fused = _pair(CELLS[cell], backend, units=5, return_sequences=True, return_state=True,
                       go_backwards=back)
    _build_same(ref, fused, 3, dtype)
    x = torch.randn(4, 6, 3, dtype=dtype)
    mask = lengths_to_mask([6, 2, 0, 5], 6, padding="pre")
    with torch.no_grad():
        for a, b in zip(ref(x, mask=mask), fused(x, mask=mask), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    assert fused.last_backend == backend


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bidirectional_inference_is_one_projection_and_two_walks_in_place(cell, seq, dtype,
                                                                           monkeypatch):
    """Inference of a Bidirectional layer (any built-in cell, masked or not, lengths too)
    runs kernels.blas.bidirectional: one projection GEMM for both directions, the backward
    one walked in reverse where it lies, each writing its half of the merged output; equal
    to the reference loop. Calls that need a gradient, or dropout while training, run the
    two layers apart."""
    from rnnkit.kernels import blas

    calls = []
    real = blas.bidirectional
    monkeypatch.setattr(blas, "bidirectional", lambda *a: (calls.append(1), real(*a))[1])
    ref = Bidirectional(CELLS[cell](6, return_sequences=seq, backend="reference"))
    ref.build(3, dtype=dtype)
    with torch.no_grad():
        for p in ref.parameters():  # non-trivial biases too
            p.normal_(0, 0.5)
    bi = copy.deepcopy(ref)
    bi.forward_layer.backend = bi.backward_layer.backend = "auto"
    x = torch.randn(40, 9, 3, dtype=dtype)  # 360 sequence-steps: LSTM's auto would be oneDNN
    lengths = [9, 1, 5, 0] * 10
    for kw in ({}, {"mask": lengths_to_mask(lengths, 9)}, {"lengths": lengths},
               {"lengths": lengths, "padding": "pre"},
               {"mask": torch.rand(40, 9, generator=torch.Generator().manual_seed(2)) > 0.4}):
        calls.clear()
        with torch.no_grad():
            got, want = bi(x, **kw), ref(x, **kw)
        assert calls == [1], kw
        assert bi.forward_layer.last_backend == bi.backward_layer.last_backend == "blas"
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    calls.clear()
    bi(x.requires_grad_(True))  # a gradient is wanted: the layers run apart (or oneDNN)
    drop = copy.deepcopy(bi)
    drop.forward_layer.recurrent_dropout = 0.5
    with torch.no_grad():
        drop.train()(x)
        drop.eval()(x)
    assert calls == [1]  # only the eval call


def test_post_lengths_answer_follows_the_mask_in_place():
    """torch_nn._post_lengths reads the mask it is given: a mask changed in place (or
    another one) gets its own answer."""
    from rnnkit.kernels import torch_nn

    mask = lengths_to_mask([3, 1, 2], 3)
    assert torch_nn._post_lengths(mask).tolist() == [3, 1, 2]
    mask[1, 2] = True  # row 1 is now [T, F, T]: not post-padding
    assert torch_nn._post_lengths(mask) is None
    assert torch_nn._post_lengths(lengths_to_mask([2, 2], 3)).tolist() == [2, 2]


@pytest.mark.parametrize("return_sequences", [True, False])
def test_unmasked_bidirectional_lstm_is_one_fused_call_equal_to_the_reference(
        return_sequences, monkeypatch):
    """An unmasked Bidirectional(LSTM) on the CPU runs both directions in one torch.lstm
    call (kernels.dispatch.run_bidirectional; layers above dispatch.BLAS_LSTM_MAX_UNITS),
    with the reference loop's outputs and gradients; with a mask, an initial state or
    dropout while training it runs the two directions apart, as before."""
    calls = []
    real = torch.lstm
    monkeypatch.setattr(torch, "lstm", lambda *a: (calls.append(a[7] if len(a) == 9 else None),
                                                   real(*a))[1])
    torch.manual_seed(3)
    bi = Bidirectional(LSTM(72, return_sequences=return_sequences))
    bi(torch.randn(1, 2, 5))  # builds (a 2-step call: too small for oneDNN)
    ref = copy.deepcopy(bi)
    ref.forward_layer.backend = ref.backward_layer.backend = "reference"
    x = torch.randn(16, 30, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    calls.clear()
    y, want = bi(x), ref(x2)
    assert calls == [True]  # one call, bidirectional
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    (want * torch.linspace(-1, 1, want.numel()).view_as(want)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-6)
    for p, q in zip(bi.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    mask = torch.arange(30)[None] < torch.randint(1, 31, (16, 1))
    for kw in ({"mask": mask}, {"initial_state": [torch.zeros(16, 72)] * 4}):
        calls.clear()
        bi(x, **kw)
        assert True not in calls, kw
    drop = Bidirectional(LSTM(72, dropout=0.2))
    drop(x)
    calls.clear()
    drop.train()(x)
    assert True not in calls
