"""The one time loop: :class:`RNN` runs any cell over a sequence.

For inputs ``x_1 .. x_T`` and a cell ``step``::

    s_0 = initial_state (zeros by default)
    s_t = step(x_t W_x + b, s_{t-1})            if step t is not masked
    s_t = s_{t-1}                               if step t is masked (padding)
    y_t = h_t (first state)  or 0 at a masked step

The layer returns ``y_T`` (``return_sequences=False``) or all ``y_t``, and with
``return_state=True`` also the final state(s), as Keras does: ``(y, h)`` or ``(y, h, c)``.

Options, with Keras semantics: ``go_backwards`` (run from ``x_T`` to ``x_1``; sequences are
returned in processing order), ``dropout`` on the inputs and ``recurrent_dropout`` on
``h_{t-1}`` -- one mask per sequence, reused at every step, inverted scaling, training only.

Masks come from ``mask=`` (bool ``(batch, time)``, True = real step), ``lengths=`` (real
steps per sequence; padding at the end, or at the front with ``padding="pre"``) or an
upstream ``Embedding(mask_zero=True)`` inside :class:`rnnkit.layers.Sequential`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .cells import CELLS, GRUCell, LSTMCell, RNNCellBase, SimpleRNNCell, State


def lengths_to_mask(lengths: Tensor | Sequence[int], time: int, padding: str = "post",
                    device=None) -> Tensor:
    """Bool mask ``(batch, time)`` from sequence lengths; ``padding`` says where pads are."""
    lengths = torch.as_tensor(lengths, device=device).reshape(-1, 1)
    if (lengths < 0).any() or (lengths > time).any():
        raise ValueError(f"lengths must lie in [0, {time}], got {lengths.flatten().tolist()}")
    pos = torch.arange(time, device=lengths.device).reshape(1, -1)
    if padding == "post":
        return pos < lengths
    if padding == "pre":
        return pos >= time - lengths
    raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")


def dropout_mask(shape: tuple[int, ...], rate: float, like: Tensor) -> Tensor:
    """Inverted-dropout mask: each entry 0 with probability ``rate``, else ``1/(1-rate)``."""
    keep = torch.rand(shape, device=like.device, dtype=like.dtype) >= rate
    return keep.to(like.dtype) / (1.0 - rate)


def reference_scan(cell: RNNCellBase, xp: Tensor, state: State, mask: Tensor | None,
                   rec_mask: Tensor | None, return_sequences: bool) -> tuple[Tensor, State]:
    """The readable time loop (the reference every fused kernel is tested against).

    ``xp``: projected inputs ``(batch, time, gates*units)`` already in processing order.
    Returns ``(outputs, final_state)``; outputs are ``(batch, time, units)`` or the last.
    """
    outputs = []
    out = state[0].new_zeros(state[0].shape) if mask is not None else state[0]
    for t in range(xp.shape[1]):
        new = cell.step(xp[:, t], state, rec_mask)
        if mask is not None:
            m = mask[:, t, None]
            new = tuple(torch.where(m, n, s) for n, s in zip(new, state, strict=True))
            y = torch.where(m, new[0], torch.zeros_like(new[0]))
            out = torch.where(m, new[0], out)  # last real output
        else:
            y = out = new[0]
        if return_sequences:
            outputs.append(y)
        state = new
    if return_sequences:
        return (outputs[0].unsqueeze(1) if len(outputs) == 1
                else torch.stack(outputs, dim=1)), state
    return (out if mask is not None else state[0]), state


#: the backend dispatch :meth:`RNN.forward` calls, registered by :mod:`rnnkit.kernels`
#: (which this module does not import): ``run(layer, x, state, mask, in_mask, rec_mask) ->
#: (outputs, final_state)``; without it every layer runs :func:`reference_scan`.
BACKEND_RUNNER: dict[str, Callable[..., tuple[Tensor, State]]] = {}


def register_backend_runner(run: Callable[..., tuple[Tensor, State]],
                            bidirectional: Callable[..., Tensor | None] | None = None) -> None:
    """Plug in the kernel dispatch (see :data:`BACKEND_RUNNER`); ``bidirectional(layer, x, mask)``
    optionally runs both directions of a :class:`Bidirectional` in one call, or returns
    None for a call it does not take."""
    BACKEND_RUNNER["run"] = run
    if bidirectional is not None:
        BACKEND_RUNNER["bidirectional"] = bidirectional


class RNN(nn.Module):
    """Runs a cell over time (see the module docstring for the equations and options).

    ``backend``: ``"auto"`` (fused kernel where it supports the call, else reference),
    ``"reference"`` or a named kernel backend (see :mod:`rnnkit.kernels`). The backend
    used by the last call is in ``last_backend``.
    """

    supports_masking = True

    def __init__(self, cell: RNNCellBase, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        for name, p in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.cell = cell
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.backend = backend
        self.last_backend: str | None = None

    @property
    def units(self) -> int:
        return self.cell.units

    def build(self, input_size: int, device=None, dtype=None) -> None:
        self.cell.build(input_size, device=device, dtype=dtype)

    def compute_mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """Mask passed downstream: kept only when the whole sequence is returned."""
        if mask is None or not self.return_sequences:
            return None
        return mask.flip(1) if self.go_backwards else mask

    def output_size(self) -> int:
        return self.cell.units

    def _check_input(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, time, features) or "
                f"(time, features), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects floating-point input, got {x.dtype}"
                             " (use Embedding or one_hot for token ids)")
        if self.cell.built and x.shape[-1] != self.cell.input_size:
            raise ValueError(
                f"{type(self).__name__} expects {self.cell.input_size} input features, "
                f"got input of shape {tuple(x.shape)} with {x.shape[-1]} features")

    def _initial_state(self, initial_state, batch: int, x: Tensor) -> State:
        n = len(self.cell.state_names)
        if initial_state is None:
            return self.cell.initial_state(batch, x)
        if isinstance(initial_state, Tensor):
            initial_state = (initial_state,)
        initial_state = tuple(initial_state)
        if len(initial_state) != n:
            raise ValueError(f"{type(self).__name__} expects {n} initial state tensor(s) "
                             f"{self.cell.state_names}, got {len(initial_state)}")
        want = (batch, self.cell.units)
        for s in initial_state:
            if tuple(s.shape) != want:
                raise ValueError(f"initial state must have shape {want}, got {tuple(s.shape)}")
        return initial_state

    def forward(self, x: Tensor, initial_state: Tensor | Sequence[Tensor] | None = None,
                mask: Tensor | None = None, lengths: Tensor | Sequence[int] | None = None,
                padding: str = "post"):
        self._check_input(x)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
            if mask is not None:
                mask = mask.unsqueeze(0)
            if initial_state is not None:
                st = (initial_state,) if isinstance(initial_state, Tensor) else initial_state
                initial_state = tuple(s.unsqueeze(0) for s in st)
        if not self.cell.built:
            self.build(x.shape[-1], device=x.device, dtype=x.dtype)
        batch, time = x.shape[0], x.shape[1]
        if lengths is not None:
            if mask is not None:
                raise ValueError("give either mask or lengths, not both")
            mask = lengths_to_mask(lengths, time, padding, device=x.device)
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
            if tuple(mask.shape) != (batch, time):
                raise ValueError(f"mask must have shape {(batch, time)}, got {tuple(mask.shape)}")
        state = self._initial_state(initial_state, batch, x)

        in_mask = rec_mask = None
        if self.training and self.dropout > 0:
            in_mask = dropout_mask((batch, 1, x.shape[-1]), self.dropout, x)
        if self.training and self.recurrent_dropout > 0:
            rec_mask = dropout_mask((batch, self.cell.units), self.recurrent_dropout, x)

        run = BACKEND_RUNNER.get("run")  # rnnkit.kernels' dispatch, or the reference loop
        if run is not None:
            out, state = run(self, x, state, mask, in_mask, rec_mask)
        else:
            self.last_backend = "reference"
            out, state = self.run_reference(x, state, mask, in_mask, rec_mask)

        if unbatched:
            out = out.squeeze(0)
            state = tuple(s.squeeze(0) for s in state)
        if self.return_state:
            return (out, *state)
        return out

    def run_reference(self, x: Tensor, state: State, mask: Tensor | None,
                      in_mask: Tensor | None, rec_mask: Tensor | None) -> tuple[Tensor, State]:
        """Reference path: input dropout, one projection GEMM, then :func:`reference_scan`."""
        if in_mask is not None:
            x = x * in_mask
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        xp = self.cell.project_inputs(x)
        return reference_scan(self.cell, xp, state, mask, rec_mask, self.return_sequences)

    def _layer_config(self) -> dict:
        return {"return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "backend": self.backend}

    def get_config(self) -> dict:
        """JSON-safe configuration (see :mod:`rnnkit.io`); the generic ``RNN`` stores its
        cell as ``{"type": "simple"|"lstm"|"gru", ...}``."""
        cell = self.cell
        kinds = {c: k for k, c in CELLS.items()}
        if type(cell) not in kinds:
            raise TypeError(f"cannot serialise RNN with cell {type(cell).__name__}")
        cfg = {"type": kinds[type(cell)], "units": cell.units, "input_size": cell.input_size,
               "use_bias": cell.use_bias}
        for k in ("activation", "unit_forget_bias"):
            if hasattr(cell, k):
                cfg[k] = getattr(cell, k)
        return {"cell": cfg, **self._layer_config()}

    @classmethod
    def from_config(cls, config: dict) -> RNN:
        config = dict(config)
        if cls is not RNN:
            return cls(**config)
        cell_cfg = dict(config.pop("cell"))
        cell = CELLS[cell_cfg.pop("type")](**cell_cfg)
        return cls(cell, **config)

    def extra_repr(self) -> str:
        opts = [f"return_sequences={self.return_sequences}"]
        for k in ("return_state", "go_backwards"):
            if getattr(self, k):
                opts.append(f"{k}=True")
        for k in ("dropout", "recurrent_dropout"):
            if getattr(self, k):
                opts.append(f"{k}={getattr(self, k)}")
        return ", ".join(opts)


class SimpleRNN(RNN):
    """Fully connected recurrent layer: ``h_t = act(x_t W_x + h_{t-1} W_h + b)``.

    ``SimpleRNN(8)`` on 500 input features has ``8 * (500 + 8 + 1) = 4,072`` parameters.
    """

    def __init__(self, units: int, activation: str = "tanh", input_size: int | None = None,
                 use_bias: bool = True, **kwargs):
        super().__init__(SimpleRNNCell(units, input_size, activation, use_bias), **kwargs)

    def get_config(self) -> dict:
        c = self.cell
        return {"units": c.units, "activation": c.activation, "input_size": c.input_size,
                "use_bias": c.use_bias, **self._layer_config()}


class LSTM(RNN):
    """Long short-term memory layer (equations in :class:`rnnkit.cells.LSTMCell`).

    ``LSTM(8)`` on 16 input features has ``4 * 8 * (16 + 8 + 1) = 800`` parameters.
    """

    def __init__(self, units: int, input_size: int | None = None, use_bias: bool = True,
                 unit_forget_bias: bool = True, **kwargs):
        super().__init__(LSTMCell(units, input_size, use_bias, unit_forget_bias), **kwargs)

    def get_config(self) -> dict:
        c = self.cell
        return {"units": c.units, "input_size": c.input_size, "use_bias": c.use_bias,
                "unit_forget_bias": c.unit_forget_bias, **self._layer_config()}


class GRU(RNN):
    """Gated recurrent unit layer, reset-after (equations in :class:`rnnkit.cells.GRUCell`).

    ``GRU(8)`` on 16 input features has ``3 * 8 * (16 + 8 + 2) = 624`` parameters.
    """

    def __init__(self, units: int, input_size: int | None = None, use_bias: bool = True,
                 **kwargs):
        super().__init__(GRUCell(units, input_size, use_bias), **kwargs)

    def get_config(self) -> dict:
        c = self.cell
        return {"units": c.units, "input_size": c.input_size, "use_bias": c.use_bias,
                **self._layer_config()}


_MERGES = {
    "concat": lambda a, b: torch.cat([a, b], dim=-1),
    "sum": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "ave": lambda a, b: (a + b) / 2,
}


class Bidirectional(nn.Module):
    """Runs a layer forwards and a copy of it backwards and merges the two::

        y_t = merge(forward(x)_t, backward(x)_t)    merge in {concat, sum, mul, ave}

    The backward outputs are flipped back into input time order before merging. With
    ``return_state=True`` returns ``(y, *forward_states, *backward_states)``. Initial state:
    forward states followed by backward states.
    """

    supports_masking = True

    def __init__(self, layer: RNN, merge_mode: str = "concat", backward_layer: RNN | None = None):
        super().__init__()
        if merge_mode not in _MERGES:
            raise ValueError(f"merge_mode must be one of {sorted(_MERGES)}, got {merge_mode!r}")
        if layer.go_backwards:
            raise ValueError("the forward layer of Bidirectional must not set go_backwards")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        if backward_layer is None:
            backward_layer = _fresh_copy(layer)
            backward_layer.go_backwards = True
        self.backward_layer = backward_layer
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    @property
    def units(self) -> int:
        return self.forward_layer.units

    def output_size(self) -> int:
        u = self.forward_layer.output_size()
        return 2 * u if self.merge_mode == "concat" else u

    def build(self, input_size: int, device=None, dtype=None) -> None:
        self.forward_layer.build(input_size, device, dtype)
        self.backward_layer.build(input_size, device, dtype)

    def compute_mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        return mask if self.return_sequences else None

    def forward(self, x: Tensor, initial_state=None, mask: Tensor | None = None,
                lengths=None, padding: str = "post"):
        fs = bs = None
        if initial_state is not None:
            n = len(self.forward_layer.cell.state_names)
            initial_state = tuple(initial_state)
            if len(initial_state) != 2 * n:
                raise ValueError(f"Bidirectional expects {2 * n} initial state tensors, "
                                 f"got {len(initial_state)}")
            fs, bs = initial_state[:n], initial_state[n:]
        both = BACKEND_RUNNER.get("bidirectional")
        if (both is not None and initial_state is None and not self.return_state
                and self.merge_mode == "concat" and (lengths is None or mask is None)):
            if lengths is not None and x.dim() == 3:
                mask, lengths = lengths_to_mask(lengths, x.shape[1], padding, device=x.device), None
            if lengths is None:
                y = both(self, x, mask)  # both directions in one fused call, when it takes it
                if y is not None:
                    return y
        kw = {"mask": mask, "lengths": lengths, "padding": padding}
        f = self.forward_layer(x, initial_state=fs, **kw)
        b = self.backward_layer(x, initial_state=bs, **kw)
        f_states: tuple = ()
        b_states: tuple = ()
        if self.return_state:
            f, *f_states = f
            b, *b_states = b
        if self.return_sequences:
            b = b.flip(-2)
        y = _MERGES[self.merge_mode](f, b)
        if self.return_state:
            return (y, *f_states, *b_states)
        return y

    @property
    def last_backend(self) -> str | None:
        return self.forward_layer.last_backend

    def get_config(self) -> dict:
        """Both wrapped layers as ``{"type", "config"}`` (see :mod:`rnnkit.io`)."""
        from .registry import serialize

        return {"layer": serialize(self.forward_layer), "merge_mode": self.merge_mode,
                "backward_layer": serialize(self.backward_layer)}

    @classmethod
    def from_config(cls, config: dict) -> Bidirectional:
        from .registry import deserialize

        return cls(deserialize(config["layer"]), merge_mode=config["merge_mode"],
                   backward_layer=deserialize(config["backward_layer"]))


def _fresh_copy(layer: RNN) -> RNN:
    """A new layer with the same configuration and freshly initialised weights."""
    import copy

    new = copy.deepcopy(layer)
    if new.cell.built:
        new.cell.reset_parameters()
    return new
