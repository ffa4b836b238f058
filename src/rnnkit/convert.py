"""Weight conversions between rnnkit and ``torch.nn.RNN/LSTM/GRU`` (and Keras weight lists).

PyTorch stores ``weight_ih (gates*H, in)``, ``weight_hh (gates*H, H)`` and two biases
``bias_ih``, ``bias_hh``; rnnkit stores the transposes and, for SimpleRNN and LSTM, one
bias. The maps are::

    kernel = weight_ih.T          recurrent_kernel = weight_hh.T
    bias   = bias_ih + bias_hh                       (SimpleRNN, LSTM: same gate order)
    GRU: torch gate order (r, z, n) <-> rnnkit (z, r, h); bias = stack(bias_ih, bias_hh)

Going back, the single bias is put in ``bias_ih`` and ``bias_hh`` is zero: the network
computes the same function. Keras ``layer.get_weights()`` is already rnnkit's layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .cells import GRUCell, LSTMCell, SimpleRNNCell
from .layers import Sequential
from .recurrent import GRU, LSTM, RNN, Bidirectional, SimpleRNN


def _swap_zr(w: Tensor, units: int) -> Tensor:
    """Swap the first two gate blocks along dim 0 ((z, r, h) <-> (r, z, n))."""
    a, b, c = w.split(units, dim=0)
    return torch.cat([b, a, c], dim=0)


def _layer_from_torch(module: nn.RNNBase, layer: int, suffix: str, **kwargs) -> RNN:
    sd = {k: v.detach() for k, v in module.state_dict().items()}
    w_ih, w_hh = sd[f"weight_ih_l{layer}{suffix}"], sd[f"weight_hh_l{layer}{suffix}"]
    b_ih = sd.get(f"bias_ih_l{layer}{suffix}")
    b_hh = sd.get(f"bias_hh_l{layer}{suffix}")
    h, n_in = module.hidden_size, w_ih.shape[1]
    bias = module.bias
    if isinstance(module, nn.LSTM):
        if module.proj_size:
            raise ValueError("LSTM with proj_size has no rnnkit equivalent")
        out: RNN = LSTM(h, input_size=n_in, use_bias=bias, **kwargs)
    elif isinstance(module, nn.GRU):
        out = GRU(h, input_size=n_in, use_bias=bias, **kwargs)
        w_ih, w_hh = _swap_zr(w_ih, h), _swap_zr(w_hh, h)
        if bias:
            b_ih, b_hh = _swap_zr(b_ih, h), _swap_zr(b_hh, h)
    elif isinstance(module, nn.RNN):
        act = "tanh" if module.nonlinearity == "tanh" else "relu"
        out = SimpleRNN(h, activation=act, input_size=n_in, use_bias=bias, **kwargs)
    else:
        raise TypeError(f"expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    cell = out.cell
    with torch.no_grad():
        cell.kernel.copy_(w_ih.T)
        cell.recurrent_kernel.copy_(w_hh.T)
        if bias:
            if isinstance(cell, GRUCell):
                cell.bias.copy_(torch.stack([b_ih, b_hh]))
            else:
                cell.bias.copy_(b_ih + b_hh)
    return out.to(dtype=w_ih.dtype, device=w_ih.device)


def from_torch(module: nn.RNNBase, return_sequences: bool = True,
               return_state: bool = False) -> RNN | Bidirectional | Sequential:
    """An rnnkit layer (or a :class:`Sequential` stack) computing what ``module`` computes.

    ``module`` must be ``batch_first``-agnostic: rnnkit always takes ``(batch, time, features)``.
    The last layer gets ``return_sequences`` and ``return_state``; inner layers return
    sequences. Dropout between torch layers is not carried over (set it on the layers).
    """
    layers: list[nn.Module] = []
    for i in range(module.num_layers):
        last = i == module.num_layers - 1
        kw = {"return_sequences": return_sequences or not last,
              "return_state": return_state and last}
        fwd = _layer_from_torch(module, i, "", **kw)
        if module.bidirectional:
            bwd = _layer_from_torch(module, i, "_reverse", go_backwards=True, **kw)
            layers.append(Bidirectional(fwd, "concat", backward_layer=bwd))
        else:
            layers.append(fwd)
    return layers[0] if len(layers) == 1 else Sequential(*layers)


def _unwrap(model: nn.Module) -> list[RNN | Bidirectional]:
    if isinstance(model, (RNN, Bidirectional)):
        return [model]
    layers = list(model)
    if not layers or not all(isinstance(m, (RNN, Bidirectional)) for m in layers):
        raise TypeError("to_torch expects an RNN, a Bidirectional or a Sequential of them")
    return layers


def to_torch(model: nn.Module) -> nn.RNNBase:
    """A ``torch.nn.RNN/LSTM/GRU`` (``batch_first=True``) with the same weights as ``model``
    (one rnnkit layer, a Bidirectional, or a Sequential stack of identical kinds)."""
    layers = _unwrap(model)
    bidir = isinstance(layers[0], Bidirectional)
    first = layers[0].forward_layer if bidir else layers[0]
    cell = first.cell
    if not cell.built:
        raise ValueError("the layer has no weights yet: call it once or give input_size")
    kind = {SimpleRNNCell: nn.RNN, LSTMCell: nn.LSTM, GRUCell: nn.GRU}[type(cell)]
    kw = {}
    if kind is nn.RNN:
        kw["nonlinearity"] = cell.activation
    ref = kind(cell.input_size, cell.units, num_layers=len(layers), bias=cell.use_bias,
               batch_first=True, bidirectional=bidir, **kw)
    sd = {}
    for i, layer in enumerate(layers):
        pairs = [(layer.forward_layer, ""), (layer.backward_layer, "_reverse")] if bidir \
            else [(layer, "")]
        for sub, suffix in pairs:
            c = sub.cell
            if type(c) is not type(cell) or c.units != cell.units:
                raise ValueError("to_torch needs layers of one kind and one size")
            w_ih, w_hh = c.kernel.detach().T, c.recurrent_kernel.detach().T
            if isinstance(c, GRUCell):
                w_ih, w_hh = _swap_zr(w_ih, c.units), _swap_zr(w_hh, c.units)
            sd[f"weight_ih_l{i}{suffix}"] = w_ih
            sd[f"weight_hh_l{i}{suffix}"] = w_hh
            if c.use_bias:
                b = c.bias.detach()
                if isinstance(c, GRUCell):
                    sd[f"bias_ih_l{i}{suffix}"] = _swap_zr(b[0], c.units)
                    sd[f"bias_hh_l{i}{suffix}"] = _swap_zr(b[1], c.units)
                else:
                    sd[f"bias_ih_l{i}{suffix}"] = b
                    sd[f"bias_hh_l{i}{suffix}"] = torch.zeros_like(b)
    ref.load_state_dict(sd)
    return ref.to(device=cell.kernel.device, dtype=cell.kernel.dtype)


def set_keras_weights(layer: RNN, weights: Sequence[np.ndarray]) -> None:
    """Load ``keras_layer.get_weights()`` (``[kernel, recurrent_kernel, bias]``) into ``layer``."""
    cell = layer.cell
    if not cell.built:
        cell.build(int(np.asarray(weights[0]).shape[0]))
    params = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
    if len(weights) != len(params):
        raise ValueError(f"expected {len(params)} weight arrays, got {len(weights)}")
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(p.shape):
                raise ValueError(f"weight of shape {tuple(w.shape)} does not match the "
                                 f"layer's {tuple(p.shape)}")
            p.copy_(torch.as_tensor(w, dtype=p.dtype))


def get_keras_weights(layer: RNN) -> list[np.ndarray]:
    """``[kernel, recurrent_kernel, bias]`` as numpy arrays, for ``keras_layer.set_weights``."""
    cell = layer.cell
    params = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
    return [p.detach().cpu().numpy() for p in params]
