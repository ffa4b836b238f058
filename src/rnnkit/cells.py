"""Recurrent cells: one time step each.

A cell owns the weights and computes a single step of its recurrence. The time loop
lives in one place, :class:`rnnkit.recurrent.RNN`, which runs any cell over a sequence.

Weights are stored in the Keras layout, one matrix per role with the gates side by side:

* ``kernel``            ``(input_size, gates * units)``  -- ``W_x``
* ``recurrent_kernel``  ``(units, gates * units)``       -- ``W_h``
* ``bias``              ``(gates * units,)``             -- ``b`` (GRU: ``(2, 3 * units)``)

Each step is split in two so that the input part of every step can be computed in one
matrix product before the loop (it does not depend on the state):

* :meth:`RNNCellBase.project_inputs` -- ``x_t W_x (+ b)`` for all ``t`` at once;
* :meth:`RNNCellBase.step`           -- the recurrence given that projection.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def glorot_uniform_(w: Tensor) -> Tensor:
    """Glorot (Xavier) uniform on a Keras-layout ``(fan_in, fan_out)`` matrix."""
    fan_in, fan_out = w.shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return w.uniform_(-limit, limit)


def orthogonal_(w: Tensor) -> Tensor:
    """Orthogonal initialisation (Keras ``Orthogonal``, gain 1)."""
    return nn.init.orthogonal_(w)


def _affine(x: Tensor, w: Tensor, b: Tensor | None, out: Tensor | None = None) -> Tensor:
    """``x w + b`` over the last axis of ``x``, as one GEMM with the bias added in it
    (``addmm``: no second pass over the result, which for a whole sequence batch is tens of
    MB); into ``out`` (contiguous, ``x.numel() // x.shape[-1] * w.shape[1]`` elements or
    more, no autograd) when given."""
    shape = (*x.shape[:-1], w.shape[1])
    x2 = x.reshape(-1, x.shape[-1])
    if out is not None:
        o2 = out.view(-1)[: x2.shape[0] * w.shape[1]].view(x2.shape[0], w.shape[1])
        if b is None:
            torch.mm(x2, w, out=o2)
        else:
            torch.addmm(b, x2, w, out=o2)
        return o2.view(shape)
    return (x2 @ w if b is None else torch.addmm(b, x2, w)).view(shape)


class RNNCellBase(nn.Module):
    """Shared machinery of a cell: weights in Keras layout, built lazily.

    Subclasses set ``gates`` (number of gate blocks in the kernel), ``state_names`` and
    implement :meth:`step`. ``input_size=None`` defers weight creation to the first call.
    """

    gates: int = 1
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, units: int, input_size: int | None = None, use_bias: bool = True):
        super().__init__()
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = units
        self.use_bias = use_bias
        self.input_size: int | None = None
        if input_size is not None:
            self.build(input_size)

    # -- weights -------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.input_size is not None

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def build(self, input_size: int, device=None, dtype=None) -> None:
        """Create the weights for ``input_size`` input features."""
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
        g = self.gates * self.units
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.kernel = nn.Parameter(torch.empty(input_size, g, **kw))
        self.recurrent_kernel = nn.Parameter(torch.empty(self.units, g, **kw))
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self._bias_shape(), **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras defaults: glorot-uniform kernel, orthogonal recurrent kernel, zero bias."""
        glorot_uniform_(self.kernel)
        orthogonal_(self.recurrent_kernel)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # -- computation ---------------------------------------------------------------------
    def initial_state(self, batch: int, like: Tensor) -> State:
        """Zeros for every state tensor, shape ``(batch, units)``."""
        return tuple(like.new_zeros(batch, self.units) for _ in self.state_names)

    def project_inputs(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``x W_x + b`` for every step: ``(..., input_size) -> (..., gates * units)``;
        written into ``out`` (a contiguous scratch tensor at least that large, outside
        autograd) when given."""
        return _affine(x, self.kernel, self.input_bias(), out)

    def input_bias(self) -> Tensor | None:
        """The ``b`` of :meth:`project_inputs` (None without a bias)."""
        return self.bias

    def step(self, xp: Tensor, state: State, rec_mask: Tensor | None = None) -> State:
        """One step: projected input ``xp`` (batch, gates*units) and state -> new state.

        ``rec_mask`` (batch, units), if given, multiplies ``h_{t-1}`` before the recurrent
        product (recurrent dropout). The output of the step is the first state, ``h_t``.
        """
        raise NotImplementedError

    def activations(self, xp: Tensor, state: State, rec_mask: Tensor | None = None
                    ) -> dict[str, tuple[str, Tensor]]:
        """The activations of one :meth:`step` (computed by the same code), each with its
        kind ``"sigmoid"``, ``"tanh"`` or ``"relu"``: what diagnostics count as saturated."""
        raise TypeError(f"no gate equations for {type(self).__name__}")

    def extra_repr(self) -> str:
        return f"units={self.units}, input_size={self.input_size}"


class SimpleRNNCell(RNNCellBase):
    """Elman cell: ``h_t = act(x_t W_x + h_{t-1} W_h + b)``, act = tanh (default) or relu.

    One bias, as Keras stores it: parameters = ``units * (input_size + units + 1)``.
    """

    gates = 1
    state_names = ("h",)

    def __init__(self, units: int, input_size: int | None = None, activation: str = "tanh",
                 use_bias: bool = True):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        super().__init__(units, input_size, use_bias)

    def _h(self, xp: Tensor, state: State, rec_mask: Tensor | None) -> Tensor:
        h = state[0]
        hr = h if rec_mask is None else h * rec_mask
        return _ACTIVATIONS[self.activation](xp + hr @ self.recurrent_kernel)

    def step(self, xp: Tensor, state: State, rec_mask: Tensor | None = None) -> State:
        return (self._h(xp, state, rec_mask),)

    def activations(self, xp: Tensor, state: State, rec_mask: Tensor | None = None
                    ) -> dict[str, tuple[str, Tensor]]:
        return {"h": (self.activation, self._h(xp, state, rec_mask))}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}"


class LSTMCell(RNNCellBase):
    """Long short-term memory, gates in the order i, f, c, o (Keras and PyTorch order)::

        [i, f, g, o] = x_t W_x + h_{t-1} W_h + b
        i, f, o      = sigmoid(i), sigmoid(f), sigmoid(o)
        c_t          = f * c_{t-1} + i * tanh(g)
        h_t          = o * tanh(c_t)

    One bias of ``4 * units``; its forget block is initialised to 1 (``unit_forget_bias``).
    Parameters = ``4 * units * (input_size + units + 1)``.
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(self, units: int, input_size: int | None = None, use_bias: bool = True,
                 unit_forget_bias: bool = True):
        self.unit_forget_bias = unit_forget_bias
        super().__init__(units, input_size, use_bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None and self.unit_forget_bias:
            with torch.no_grad():
                self.bias[self.units : 2 * self.units].fill_(1.0)

    def _gates(self, xp: Tensor, state: State, rec_mask: Tensor | None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``sigmoid(i), sigmoid(f), tanh(g), sigmoid(o), c_t, tanh(c_t)`` of one step."""
        h, c = state
        hr = h if rec_mask is None else h * rec_mask
        z = torch.addmm(xp, hr, self.recurrent_kernel)  # xp + hr W_h
        i, f, _, o = torch.sigmoid(z).chunk(4, dim=-1)  # (the g block's sigmoid is unused)
        g = torch.tanh(z[..., 2 * self.units : 3 * self.units])
        c = torch.addcmul(f * c, i, g)  # f * c + i * g
        return i, f, g, o, c, torch.tanh(c)

    def step(self, xp: Tensor, state: State, rec_mask: Tensor | None = None) -> State:
        _, _, _, o, c, tc = self._gates(xp, state, rec_mask)
        return o * tc, c

    def activations(self, xp: Tensor, state: State, rec_mask: Tensor | None = None
                    ) -> dict[str, tuple[str, Tensor]]:
        i, f, g, o, _, tc = self._gates(xp, state, rec_mask)
        return {"input gate": ("sigmoid", i), "forget gate": ("sigmoid", f),
                "output gate": ("sigmoid", o), "candidate": ("tanh", g),
                "tanh(c)": ("tanh", tc)}


class GRUCell(RNNCellBase):
    """Gated recurrent unit, reset-after form (cuDNN, Keras 3 default, PyTorch)::

        [xz, xr, xh] = x_t W_x + b_x
        [hz, hr, hh] = h_{t-1} W_h + b_h
        z   = sigmoid(xz + hz)                 # update gate
        r   = sigmoid(xr + hr)                 # reset gate
        n   = tanh(xh + r * hh)                # candidate
        h_t = z * h_{t-1} + (1 - z) * n

    Gate blocks are stored in the order z, r, h (Keras). The bias has shape
    ``(2, 3 * units)``: row 0 the input bias ``b_x``, row 1 the recurrent bias ``b_h``.
    Parameters = ``3 * units * (input_size + units + 2)``.
    """

    gates = 3
    state_names = ("h",)

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units)

    def input_bias(self) -> Tensor | None:
        """The input bias ``b_x`` (row 0 of ``bias``); row 1 is the recurrent ``b_h``."""
        return None if self.bias is None else self.bias[0]

    def _gates(self, xp: Tensor, state: State, rec_mask: Tensor | None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """``z, r, n`` of one step."""
        h = state[0]
        hr_in = h if rec_mask is None else h * rec_mask
        hp = hr_in @ self.recurrent_kernel
        if self.bias is not None:
            hp = hp + self.bias[1]
        xz, xr, xh = xp.chunk(3, dim=-1)
        hz, hr, hh = hp.chunk(3, dim=-1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        return z, r, torch.tanh(xh + r * hh)

    def step(self, xp: Tensor, state: State, rec_mask: Tensor | None = None) -> State:
        z, _, n = self._gates(xp, state, rec_mask)
        h = state[0]
        return (z * h + (1 - z) * n,)

    def activations(self, xp: Tensor, state: State, rec_mask: Tensor | None = None
                    ) -> dict[str, tuple[str, Tensor]]:
        z, r, n = self._gates(xp, state, rec_mask)
        return {"update gate": ("sigmoid", z), "reset gate": ("sigmoid", r),
                "candidate": ("tanh", n)}


CELLS: dict[str, type[RNNCellBase]] = {
    "simple": SimpleRNNCell,
    "lstm": LSTMCell,
    "gru": GRUCell,
}
