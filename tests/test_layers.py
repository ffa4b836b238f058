"""Behaviour of the layers: gradients, masking, dropout semantics, shapes, errors."""

import pytest
import torch

import rnnkit as rk

LAYERS = {
    "simple_tanh": lambda u, **kw: rk.SimpleRNN(u, **kw),
    "simple_relu": lambda u, **kw: rk.SimpleRNN(u, activation="relu", **kw),
    "lstm": lambda u, **kw: rk.LSTM(u, **kw),
    "gru": lambda u, **kw: rk.GRU(u, **kw),
}


def _randomise(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)
    return layer


# -- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(LAYERS))
def test_gradients_match_finite_differences(kind):
    torch.manual_seed(0)
    layer = _randomise(LAYERS[kind](3, input_size=2, return_sequences=True)).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    n_states = 2 if kind == "lstm" else 1
    h0 = [torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(n_states)]
    names = [n for n, _ in layer.named_parameters()]
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])

    def f(x, *rest):
        states, weights = rest[:n_states], rest[n_states:]
        return torch.func.functional_call(layer, dict(zip(names, weights, strict=True)), (x,),
                                          {"initial_state": tuple(states), "mask": mask})

    weights = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, *h0, *weights), eps=1e-6, atol=1e-6)


# -- masking --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_padding_does_not_change_final_state(kind, go_backwards):
    torch.manual_seed(1)
    layer = _randomise(LAYERS[kind](4, input_size=3, go_backwards=go_backwards,
                                    return_state=True)).eval()
    x = torch.randn(1, 5, 3)
    ref = layer(x)
    for k, pad in ((1, None), (4, None), (3, "random")):
        # zero padding as the text pipeline makes it; any values at masked steps are ignored
        pad = torch.randn(1, k, 3) + 2 if pad == "random" else torch.zeros(1, k, 3)
        for padding, xp in (("pre", torch.cat([pad, x], 1)), ("post", torch.cat([x, pad], 1))):
            got = layer(xp, lengths=[5], padding=padding)
            for a, b in zip(got, ref, strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
            if k == 3:  # without the mask the padding does change the result
                assert not torch.allclose(layer(xp)[1], ref[1], atol=1e-4)


def test_embedding_mask_zero_equals_explicit_mask_and_zeroes_outputs():
    torch.manual_seed(2)
    emb = rk.Embedding(30, 6, mask_zero=True)
    rnn = rk.GRU(5, return_sequences=True)
    model = rk.Sequential(emb, rnn).eval()
    ids = torch.tensor([[0, 0, 4, 5, 6], [7, 8, 9, 0, 0]])
    y = model(ids)
    torch.testing.assert_close(y, rnn(emb(ids), mask=ids != 0))
    assert torch.all(y[0, :2] == 0) and torch.all(y[1, 3:] == 0)
    assert torch.all(y[0, 2:] != 0)


def test_sequential_mask_through_stack_and_bidirectional():
    torch.manual_seed(3)
    model = rk.Sequential(rk.Embedding(20, 4, mask_zero=True),
                          rk.Bidirectional(rk.LSTM(3, return_sequences=True)),
                          rk.LSTM(3), rk.Dense(1, "sigmoid")).eval()
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[0, 0, 5, 6, 7]])
    torch.testing.assert_close(model(padded), model(short), atol=1e-6, rtol=1e-6)
    padded_post = torch.tensor([[5, 6, 7, 0, 0]])
    torch.testing.assert_close(model(padded_post), model(short), atol=1e-6, rtol=1e-6)


# -- dropout --------------------------------------------------------------------------------
def _accumulator(rate_kw):
    """SimpleRNN(relu) with W_x = I, W_h = I: h_t = relu(x_t * m_in + (h_{t-1} * m_rec))."""
    layer = rk.SimpleRNN(64, activation="relu", input_size=64, **rate_kw)
    with torch.no_grad():
        layer.cell.kernel.copy_(torch.eye(64))
        layer.cell.recurrent_kernel.copy_(torch.eye(64))
        layer.cell.bias.zero_()
    return layer


def test_recurrent_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(4)
    p, steps = 0.3, 6
    layer = _accumulator({"recurrent_dropout": p}).train()
    h = layer(torch.ones(200, steps, 64))
    s = 1 / (1 - p)
    kept_all_steps = sum(s**k for k in range(steps))
    # one mask for all steps: a unit is either dropped at every step (h = 1) or never
    dropped = torch.isclose(h, torch.tensor(1.0))
    kept = torch.isclose(h, torch.tensor(kept_all_steps))
    assert torch.all(dropped | kept)
    frac = dropped.float().mean().item()
    assert abs(frac - p) < 4 * (p * (1 - p) / h.numel()) ** 0.5
    # eval mode: no dropout, deterministic
    layer.eval()
    out = layer(torch.ones(3, steps, 64))
    torch.testing.assert_close(out, torch.full_like(out, float(steps)))


def test_input_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(5)
    p = 0.25
    layer = _accumulator({"dropout": p, "return_sequences": True})
    with torch.no_grad():
        layer.cell.recurrent_kernel.zero_()  # h_t = relu(x_t * m): constant in t iff one mask
    y = layer.train()(torch.ones(100, 5, 64))
    torch.testing.assert_close(y, y[:, :1].expand_as(y))
    zeros = (y[:, 0] == 0).float().mean().item()
    assert abs(zeros - p) < 4 * (p * (1 - p) / (100 * 64)) ** 0.5
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))


# -- shapes, options, errors ------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(LAYERS))
def test_unbatched_equals_batch_of_one(kind):
    torch.manual_seed(6)
    layer = LAYERS[kind](4, return_sequences=True, return_state=True).eval()
    x = torch.randn(7, 3)
    a = layer(x)
    b = layer(x.unsqueeze(0))
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v.squeeze(0))
    assert a[0].shape == (7, 4)


def test_shapes_of_options():
    x = torch.randn(2, 5, 3)
    assert rk.LSTM(4)(x).shape == (2, 4)
    assert rk.LSTM(4, return_sequences=True)(x).shape == (2, 5, 4)
    y, h, c = rk.LSTM(4, return_state=True)(x)
    assert y.shape == h.shape == c.shape == (2, 4)
    torch.testing.assert_close(y, h)
    assert rk.Bidirectional(rk.GRU(4))(x).shape == (2, 8)
    assert rk.Bidirectional(rk.GRU(4), merge_mode="sum")(x).shape == (2, 4)
    out = rk.Bidirectional(rk.LSTM(4, return_state=True))(x)
    assert len(out) == 5


def test_go_backwards_is_forward_on_reversed_input():
    torch.manual_seed(7)
    fwd = rk.GRU(4, input_size=3, return_sequences=True).eval()
    bwd = rk.GRU(4, input_size=3, return_sequences=True, go_backwards=True).eval()
    bwd.load_state_dict(fwd.state_dict())
    x = torch.randn(2, 6, 3)
    torch.testing.assert_close(bwd(x), fwd(x.flip(1)))


def test_stacked_layers_have_their_own_weights():
    model = rk.Sequential(rk.LSTM(4, return_sequences=True), rk.LSTM(4), input_shape=(5, 3))
    a, b = model[0].cell, model[1].cell
    assert a.kernel.shape == (3, 16) and b.kernel.shape == (4, 16)
    assert a.recurrent_kernel.data_ptr() != b.recurrent_kernel.data_ptr()


def test_keras_default_initialisation():
    torch.manual_seed(8)
    layer = rk.LSTM(16, input_size=10)
    rk_ = layer.cell.recurrent_kernel.detach()  # (16, 64) with orthonormal rows
    torch.testing.assert_close(rk_ @ rk_.T, torch.eye(16), atol=1e-5, rtol=1e-5)
    bias = layer.cell.bias.detach()
    assert torch.all(bias[16:32] == 1) and torch.all(bias[:16] == 0) and torch.all(bias[32:] == 0)
    limit = (6 / (10 + 64)) ** 0.5
    assert layer.cell.kernel.abs().max() <= limit


def test_wrong_rank_and_feature_size_raise_clear_errors():
    layer = rk.SimpleRNN(4, input_size=3)
    with pytest.raises(ValueError, match=r"expects input of shape .*got shape \(2, 5, 3, 1\)"):
        layer(torch.randn(2, 5, 3, 1))
    with pytest.raises(ValueError, match=r"expects 3 input features, got .*\(2, 5, 7\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="initial state must have shape"):
        layer(torch.randn(2, 5, 3), initial_state=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="token ids outside"):
        rk.Embedding(10, 2)(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="Dense expects 4 input features"):
        rk.Dense(1, input_size=4)(torch.randn(2, 5))


def test_input_size_inferred_on_first_call():
    layer = rk.GRU(5)
    assert len(list(layer.parameters())) == 0
    layer(torch.randn(1, 2, 7))
    assert layer.cell.kernel.shape == (7, 15)


def test_one_hot_and_clip_gradients():
    oh = rk.one_hot(torch.tensor([[0, 2]]), 3)
    torch.testing.assert_close(oh, torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]]))
    with pytest.raises(ValueError):
        rk.one_hot(torch.tensor([3]), 3)
    w = torch.nn.Parameter(torch.ones(4))
    w.grad = torch.full((4,), 3.0)
    norm = rk.clip_gradients([w], max_norm=1.0)
    assert norm.item() == pytest.approx(6.0)
    assert w.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    w.grad = torch.tensor([5.0, -5.0, 0.1, 0.0])
    rk.clip_gradients([w], clip_value=0.5)
    torch.testing.assert_close(w.grad, torch.tensor([0.5, -0.5, 0.1, 0.0]))
