"""The ``torch`` backend: PyTorch's own fused RNN ops (cuDNN on CUDA), weights converted from
the Keras layout on every call (so gradients flow back to the rnnkit parameters)::

    W_ih = W_x^T,  W_hh = W_h^T                     (gate blocks permuted for GRU:
    b_ih = b (LSTM/SimpleRNN; GRU b_x),  b_hh = 0 (GRU b_h)     Keras z,r,h -> torch r,z,n)

It runs the same equations as the reference. Supported: no recurrent dropout (input dropout
is applied before the call); masks only as post-padding (each row True then False).

Masks on CUDA go through a packed sequence (not with ``go_backwards``). On the CPU, where a
packed sequence leaves oneDNN's fused LSTM for a slower loop, the padded batch runs whole
and the result is exact anyway, without ``return_state``: with post-padding every real step
comes before the padding, so its output does not depend on the padded steps; the outputs
are then masked (padded steps give 0) and the last one is the output at step ``len - 1``.
With ``go_backwards`` each sequence is reversed within its length first (so it is
post-padded again) and the outputs are moved to where the reference puts them (its padded
steps come first in processing order)::

    x'_b = (x_{b,len-1}, ..., x_{b,0}, pad...);   y_{b,s} = y'_{b, s-(T-len)}  (s >= T-len)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .fused import cell_kind


def _post_lengths(mask: Tensor) -> Tensor | None:
    """Lengths if ``mask`` is post-padding (True prefix per row), else None."""
    lengths = mask.sum(1)
    pos = torch.arange(mask.shape[1], device=mask.device)
    return lengths if torch.equal(mask, pos[None] < lengths[:, None]) else None


def _padded_ok(layer, x: Tensor) -> bool:
    """Masks run on the padded batch (module docstring): CPU, no ``return_state``."""
    return x.device.type == "cpu" and not layer.return_state


def unsupported(layer, x: Tensor, mask: Tensor | None, rec_mask: Tensor | None) -> str | None:
    if rec_mask is not None:
        return "recurrent dropout"
    if mask is not None:
        lengths = _post_lengths(mask)
        if lengths is None:
            return "mask that is not post-padding"
        if _padded_ok(layer, x):
            return None
        if layer.go_backwards:
            return "mask with go_backwards"
        if bool((lengths == 0).any()):
            return "empty sequences in the mask"
    return None


def _reverse_within(lengths: Tensor, t: int) -> Tensor:
    """Index ``(B, T)`` that reverses each row's first ``len`` steps (the rest unchanged)."""
    pos = torch.arange(t, device=lengths.device)[None]
    rev = lengths[:, None] - 1 - pos
    return torch.where(pos < lengths[:, None], rev, pos)


def _run_padded(fn, layer, x: Tensor, hx, args, lengths: Tensor, kind: str):
    """The masked call on the whole padded batch (module docstring); returns ``(y, final)``
    with ``y`` in the reference's layout and ``final`` holding the last real output as h
    (the other state entries are not the last real step's: the caller has no
    ``return_state``, so it discards them)."""
    t = x.shape[1]
    back = layer.go_backwards
    if back:  # each sequence reversed within its length (x is in input order)
        x = x.gather(1, _reverse_within(lengths, t)[..., None].expand(-1, -1, x.shape[2]))
    out = fn(x, hx if kind == "lstm" else hx[0], *args, True)
    y = out[0]
    pos = torch.arange(t, device=x.device)[None]
    real = (pos < lengths[:, None]).unsqueeze(-1).to(y.dtype)
    last = (y.gather(1, (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, y.shape[2]))
            .squeeze(1) * (lengths > 0)[:, None].to(y.dtype))
    y = y * real
    if back:  # to processing order: the padded steps first
        shift = (pos - (t - lengths[:, None])).clamp(min=0)
        y = y.gather(1, shift[..., None].expand(-1, -1, y.shape[2])) * \
            (pos >= (t - lengths[:, None])).unsqueeze(-1).to(y.dtype)
    rest = tuple(h.squeeze(0) for h in (out[1:] if kind == "lstm" else (out[1],)))
    return y, (last, *rest[1:])


def _gru_perm(w: Tensor, units: int) -> Tensor:
    """Keras (z, r, h) gate blocks on the first axis -> torch (r, z, n)."""
    z, r, h = w.split(units, dim=0)
    return torch.cat([r, z, h], dim=0)


def _params(cell) -> list[Tensor]:
    """The cell's weights in torch's layout: ``W_ih, W_hh[, b_ih, b_hh]`` (module
    docstring), computed from the rnnkit parameters by differentiable ops (transposed
    copies, views) so gradients reach them."""
    kind, units = cell_kind(cell), cell.units
    w_ih, w_hh = cell.kernel.T, cell.recurrent_kernel.T
    if kind == "gru":  # (the permutation's torch.cat already writes contiguous copies)
        w_ih, w_hh = _gru_perm(w_ih, units), _gru_perm(w_hh, units)
    else:  # contiguous copies (autograd carries the gradients back through them): oneDNN's
        # weight reorder from a transposed view made an LSTM(256) training step 2-6 % slower
        w_ih, w_hh = w_ih.contiguous(), w_hh.contiguous()
    params = [w_ih, w_hh]
    if cell.bias is not None:
        if kind == "gru":
            params += [_gru_perm(cell.bias[0], units), _gru_perm(cell.bias[1], units)]
        else:
            params += [cell.bias, torch.zeros_like(cell.bias)]
    return params


def run(layer, x, state, mask, in_mask, rec_mask):
    cell = layer.cell
    kind = cell_kind(cell)
    if in_mask is not None:
        x = x * in_mask
    params = _params(cell)
    hx = tuple(s.unsqueeze(0).contiguous() for s in state)
    has_bias = cell.bias is not None
    fn = {"lstm": torch.lstm, "gru": torch.gru}.get(kind)
    if kind == "simple":
        fn = torch.rnn_relu if cell.activation == "relu" else torch.rnn_tanh
    args = (params, has_bias, 1, 0.0, layer.training, False)
    lengths = None if mask is None else _post_lengths(mask)
    if lengths is not None and _padded_ok(layer, x):
        y, final = _run_padded(fn, layer, x, hx, args, lengths, kind)
        return (y, final) if layer.return_sequences else (final[0], final)
    if layer.go_backwards:
        x = x.flip(1)
    if lengths is None:
        out = fn(x, hx if kind == "lstm" else hx[0], *args, True)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h_in = hx if kind == "lstm" else hx[0]
        if kind == "lstm":
            h_in = tuple(h.index_select(1, packed.sorted_indices) for h in h_in)
        else:
            h_in = h_in.index_select(1, packed.sorted_indices)
        out = fn(packed.data, packed.batch_sizes, h_in, *args)
    y, hn = out[0], out[1:]
    hn = tuple(hn) if kind == "lstm" else (hn[0],)
    if lengths is not None:
        hn = tuple(h.index_select(1, packed.unsorted_indices) for h in hn)
        y = pad_packed_sequence(packed._replace(data=y), batch_first=True,
                                total_length=x.shape[1])[0]
    final = tuple(h.squeeze(0) for h in hn)
    if layer.return_sequences:
        return y, final
    return final[0], final


def bidirectional_lstm(bi, x: Tensor) -> Tensor:
    """Both directions of a ``Bidirectional(LSTM)`` in one ``torch.lstm(...,
    bidirectional=True)`` call, as ``torch.nn.LSTM(bidirectional=True)`` makes it (oneDNN on
    the CPU), for a call :func:`rnnkit.kernels.dispatch.run_bidirectional` accepted (no
    mask, no initial state, no dropout). The output is the layer's: ``[f_t, b_t]`` per input
    step with ``return_sequences``, else ``[f_T, b_1]`` (each direction's last processed
    step)."""
    f, b = bi.forward_layer, bi.backward_layer
    params = _params(f.cell) + _params(b.cell)
    zeros = x.new_zeros((2, x.shape[0], f.cell.units))
    y, h_n, _ = torch.lstm(x, (zeros, zeros), params, f.cell.bias is not None, 1, 0.0,
                           bi.training, True, True)
    return y if f.return_sequences else torch.cat([h_n[0], h_n[1]], dim=-1)
