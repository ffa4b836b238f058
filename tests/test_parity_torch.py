"""rnnkit layers against torch.nn.RNN/LSTM/GRU with converted weights (the independent oracle)."""

import pytest
import torch
from torch import nn

import rnnkit as rk

KINDS = {
    "rnn_tanh": lambda i, h, **kw: nn.RNN(i, h, nonlinearity="tanh", **kw),
    "rnn_relu": lambda i, h, **kw: nn.RNN(i, h, nonlinearity="relu", **kw),
    "lstm": lambda i, h, **kw: nn.LSTM(i, h, **kw),
    "gru": lambda i, h, **kw: nn.GRU(i, h, **kw),
}
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _torch_module(kind, num_layers, bidirectional, seed=0):
    torch.manual_seed(seed)
    m = KINDS[kind](5, 7, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    with torch.no_grad():  # non-zero biases everywhere so the bias conversion is exercised
        for name, p in m.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return m.eval()


def _final_states(torch_states, kind):
    """Last layer's final states from torch's (layers*dirs, B, H) tensors."""
    return torch_states if kind == "lstm" else (torch_states,)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_outputs_and_states_match_torch(kind, num_layers, bidirectional):
    ref = _torch_module(kind, num_layers, bidirectional)
    x = torch.randn(3, 11, 5)
    y_ref, st_ref = ref(x)
    ours = rk.from_torch(ref, return_sequences=True, return_state=True).eval()
    y, *states = ours(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    n_dirs = 2 if bidirectional else 1
    for k, s_ref in enumerate(_final_states(st_ref, kind)):
        s_ref = s_ref[-n_dirs:]  # last layer
        # ours: forward states then backward states, in cell state order (h[, c])
        n_states = 2 if kind == "lstm" else 1
        for d in range(n_dirs):
            torch.testing.assert_close(states[d * n_states + k], s_ref[d], **TOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_initial_state_matches_torch(kind):
    ref = _torch_module(kind, 1, False, seed=1)
    x = torch.randn(4, 6, 5)
    h0 = torch.randn(1, 4, 7)
    c0 = torch.randn(1, 4, 7)
    y_ref, _ = ref(x, (h0, c0) if kind == "lstm" else h0)
    ours = rk.from_torch(ref).eval()
    init = (h0[0], c0[0]) if kind == "lstm" else h0[0]
    torch.testing.assert_close(ours(x, initial_state=init), y_ref, **TOL)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_to_torch_round_trip(kind, num_layers, bidirectional):
    ref = _torch_module(kind, num_layers, bidirectional, seed=2)
    ours = rk.from_torch(ref)
    back = rk.to_torch(ours)
    x = torch.randn(2, 9, 5)
    torch.testing.assert_close(back(x)[0], ref(x)[0], **TOL)
    torch.testing.assert_close(ours(x), ref(x)[0], **TOL)


def test_gru_gate_order_is_keras_z_r_h():
    """torch stores (r, z, n); rnnkit must store (z, r, h): check the update-gate block moved."""
    ref = _torch_module("gru", 1, False)
    ours = rk.from_torch(ref)
    h = 7
    torch_z = ref.weight_ih_l0[h:2 * h]  # torch's second block is z
    torch.testing.assert_close(ours.cell.kernel[:, :h], torch_z.T.detach())


def test_packed_variable_lengths_match_masked_rnnkit():
    """Post-padded batches: torch with packed sequences == rnnkit with lengths (final state)."""
    ref = _torch_module("lstm", 1, True, seed=3)
    lengths = torch.tensor([9, 4, 1])
    x = torch.randn(3, 9, 5)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    y_packed, (h_ref, _) = ref(packed)
    y_ref, _ = nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=True, total_length=9)
    ours = rk.from_torch(ref, return_sequences=True, return_state=True).eval()
    y, h_f, _, h_b, _ = ours(x, lengths=lengths)
    torch.testing.assert_close(y, y_ref, **TOL)  # zeros at padded steps on both sides
    torch.testing.assert_close(h_f, h_ref[0], **TOL)
    torch.testing.assert_close(h_b, h_ref[1], **TOL)
