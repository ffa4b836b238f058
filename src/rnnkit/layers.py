"""Non-recurrent layers and the container that threads masks between layers.

* :class:`Embedding` -- ``e_t = E[id_t]``; with ``mask_zero=True`` id 0 is padding and the
  mask ``id_t != 0`` flows to the next layers.
* :class:`OneHot`    -- ``e_t = onehot(id_t)`` (the seed's ``to_categorical``).
* :class:`Dense`     -- ``y = act(x W + b)``, act in {none, sigmoid, softmax, relu, tanh}.
* :class:`Sequential` -- ``y = f_n(... f_1(x))`` passing each layer's mask to the next.
* :func:`clip_gradients` -- clip by global norm and/or by value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .cells import glorot_uniform_


def one_hot(ids: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(...,)`` integer ids -> ``(..., num_classes)`` one-hot floats; checks the range."""
    ids = torch.as_tensor(ids)
    if ids.is_floating_point():
        raise ValueError(f"one_hot expects integer ids, got {ids.dtype}")
    if ids.numel() and ids.device.type != "meta" and (int(ids.min()) < 0
                                                      or int(ids.max()) >= num_classes):
        raise ValueError(f"ids must lie in [0, {num_classes}), got range "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    return nn.functional.one_hot(ids.long(), num_classes).to(dtype)


def _check_ids(ids: Tensor, n: int, who: str) -> None:
    if ids.is_floating_point():
        raise ValueError(f"{who} expects integer token ids, got {ids.dtype}")
    if ids.numel() and ids.device.type != "meta":  # meta: shapes only, no values
        lo, hi = (int(v) for v in torch.aminmax(ids))
        if lo < 0 or hi >= n:
            raise ValueError(f"{who}({n}) got token ids outside [0, {n}): min {lo}, max {hi}")


class Embedding(nn.Module):
    """Lookup table ``e_t = E[id_t]``, ``E`` of shape ``(input_dim, output_dim)``.

    Initialised uniform in [-0.05, 0.05] (Keras). ``mask_zero=True`` makes id 0 padding.
    """

    supports_masking = True

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False):
        super().__init__()
        self.input_dim, self.output_dim, self.mask_zero = input_dim, output_dim, mask_zero
        self.weight = nn.Parameter(torch.empty(input_dim, output_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -0.05, 0.05)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        if ids.is_floating_point() or ids.device.type != "cpu":
            _check_ids(ids, self.input_dim, "Embedding")  # (CUDA asserts on the device)
        try:  # on the CPU torch checks every id itself; the scan for the message only on error
            return nn.functional.embedding(ids.long(), self.weight)
        except IndexError:
            _check_ids(ids, self.input_dim, "Embedding")
            raise

    def compute_mask(self, ids: Tensor, mask: Tensor | None) -> Tensor | None:
        return ids != 0 if self.mask_zero else mask

    def output_size(self) -> int:
        return self.output_dim

    def extra_repr(self) -> str:
        return f"{self.input_dim}, {self.output_dim}, mask_zero={self.mask_zero}"

    def get_config(self) -> dict:
        """JSON-safe constructor arguments (see :mod:`rnnkit.io`)."""
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero}


class OneHot(nn.Module):
    """Token ids -> one-hot vectors of ``num_classes`` (no parameters)."""

    supports_masking = True

    def __init__(self, num_classes: int, mask_zero: bool = False):
        super().__init__()
        self.num_classes, self.mask_zero = num_classes, mask_zero

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        return one_hot(ids, self.num_classes)

    def compute_mask(self, ids: Tensor, mask: Tensor | None) -> Tensor | None:
        return ids != 0 if self.mask_zero else mask

    def output_size(self) -> int:
        return self.num_classes

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, mask_zero={self.mask_zero}"

    def get_config(self) -> dict:
        """JSON-safe constructor arguments (see :mod:`rnnkit.io`)."""
        return {"num_classes": self.num_classes, "mask_zero": self.mask_zero}


_ACT = {
    None: lambda x: x,
    "linear": lambda x: x,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "relu": torch.relu,
    "tanh": torch.tanh,
}


class Dense(nn.Module):
    """``y = act(x W + b)`` with ``W`` of shape ``(in, units)`` (Keras layout).

    Works on the last axis, so it also applies at every step of a sequence.
    ``input_size=None`` defers weight creation to the first call.
    """

    supports_masking = True

    def __init__(self, units: int, activation: str | None = None, input_size: int | None = None,
                 use_bias: bool = True):
        super().__init__()
        if activation not in _ACT:
            raise ValueError(f"activation must be one of {[k for k in _ACT if k]}, "
                             f"got {activation!r}")
        self.units, self.activation, self.use_bias = units, activation, use_bias
        self.input_size: int | None = None
        if input_size is not None:
            self.build(input_size)

    def build(self, input_size: int, device=None, dtype=None) -> None:
        self.input_size = input_size
        self.kernel = nn.Parameter(torch.empty(input_size, self.units, device=device, dtype=dtype))
        glorot_uniform_(self.kernel)
        if self.use_bias:
            self.bias = nn.Parameter(torch.zeros(self.units, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def logits(self, x: Tensor) -> Tensor:
        """``x W + b`` before the activation (for numerically stable losses)."""
        if self.input_size is None:
            self.build(x.shape[-1], device=x.device, dtype=x.dtype)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"Dense expects {self.input_size} input features, got input of "
                             f"shape {tuple(x.shape)}")
        return nn.functional.linear(x, self.kernel.t(), self.bias)  # one GEMM with the bias

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return _ACT[self.activation](self.logits(x))

    def compute_mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        return mask

    def output_size(self) -> int:
        return self.units

    def extra_repr(self) -> str:
        return f"units={self.units}, activation={self.activation}, input_size={self.input_size}"

    def get_config(self) -> dict:
        """JSON-safe constructor arguments, with the built input size (see :mod:`rnnkit.io`)."""
        return {"units": self.units, "activation": self.activation,
                "input_size": self.input_size, "use_bias": self.use_bias}


class Dropout(nn.Module):
    """Inverted dropout (identity in eval mode); keeps the mask flowing."""

    supports_masking = True

    def __init__(self, rate: float):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return nn.functional.dropout(x, self.rate, self.training)

    def get_config(self) -> dict:
        """JSON-safe constructor arguments (see :mod:`rnnkit.io`)."""
        return {"rate": self.rate}

    def compute_mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        return mask


#: fast paths a :class:`Sequential` asks, registered by :mod:`rnnkit.kernels` (which this
#: module does not import): ``"forward_no_grad"`` ``(model, x, mask) -> output | None`` runs
#: a whole model without autograd in one call, ``"embedding_rnn"``
#: ``(embedding, rnn, ids, mask) -> (output, mask) | None`` an Embedding -> RNN pair; None
#: means "not this call" and the layers run one by one.
FAST_PATHS: dict[str, Callable[..., Any]] = {}


def register_fast_path(name: str, fn: Callable[..., Any]) -> None:
    """Register one of :data:`FAST_PATHS` (a plug-in: the layers work without any)."""
    if name not in ("forward_no_grad", "embedding_rnn"):
        raise ValueError(f"unknown fast path {name!r}")
    FAST_PATHS[name] = fn


class Sequential(nn.Sequential):
    """Layers applied in order, each receiving the mask computed by the one before.

    A layer takes part in masking when it has ``supports_masking``: it is called as
    ``layer(x, mask=mask)`` and asked ``layer.compute_mask(x, mask)`` for the next mask.
    Other modules (any ``nn.Module``) are called as ``layer(x)`` and end the mask.
    ``input_shape`` (without batch), e.g. ``(100,)`` for token ids or ``(100, 500)``,
    builds every lazily-sized layer at once with a dummy batch.
    """

    def __init__(self, *layers: nn.Module | Iterable[nn.Module], input_shape=None,
                 input_dtype: torch.dtype | None = None):
        if len(layers) == 1 and not isinstance(layers[0], nn.Module):
            layers = tuple(layers[0])
        super().__init__(*layers)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        if self.input_shape is not None:
            self.build(self.input_shape, input_dtype)

    def add(self, layer: nn.Module) -> None:
        self.append(layer)

    def dummy_input(self, input_shape=None, dtype: torch.dtype | None = None,
                    batch: int = 2) -> Tensor:
        """Zeros of ``(batch, *input_shape)``; integer ids when the first layer embeds."""
        shape = tuple(input_shape or self.input_shape or ())
        if not shape:
            raise ValueError("input_shape is unknown: pass input_shape=(time,) or (time, features)")
        first = self[0] if len(self) else None
        if dtype is None:
            dtype = torch.long if isinstance(first, (Embedding, OneHot)) else torch.float32
        p = next(self.parameters(), None)
        device = p.device if p is not None else None
        if dtype == torch.long:
            return torch.ones((batch, *shape), dtype=dtype, device=device)
        return torch.zeros((batch, *shape), dtype=dtype, device=device)

    @torch.no_grad()
    def build(self, input_shape, dtype: torch.dtype | None = None) -> None:
        """Create all lazily-sized weights by running a dummy batch of one time step (the
        weights' shapes do not depend on the sequence length)."""
        self.input_shape = tuple(input_shape)
        was = self.training
        self.eval()
        self(self.dummy_input((1, *self.input_shape[1:]), dtype))
        self.train(was)

    def forward_with_mask(self, x: Tensor, mask: Tensor | None = None
                          ) -> tuple[Tensor, Tensor | None]:
        """Output and the mask that leaves the last layer (e.g. for a masked loss)."""
        whole = FAST_PATHS.get("forward_no_grad")  # e.g. the IMDB shape without autograd
        out = whole(self, x, mask) if whole is not None else None
        if out is not None:
            return out, None
        fold = FAST_PATHS.get("embedding_rnn")  # Embedding -> RNN as one fused call
        layers, i = list(self), 0
        while i < len(layers):
            layer, i = layers[i], i + 1
            folded = fold(layer, layers[i], x, mask) if fold is not None and i < len(layers) \
                else None
            if folded is not None:
                (x, mask), i = folded, i + 1
            elif getattr(layer, "supports_masking", False):
                nxt = layer.compute_mask(x, mask)
                x = layer(x, mask=mask)
                mask = nxt
            else:
                x, mask = layer(x), None
        return x, mask

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_with_mask(x, mask)[0]

    def get_config(self) -> dict:
        """Each layer's ``{"type", "config"}`` (via :func:`rnnkit.io.serialize`) and
        ``input_shape``."""
        from .registry import serialize

        return {"layers": [serialize(layer) for layer in self],
                "input_shape": list(self.input_shape) if self.input_shape is not None else None}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        from .registry import deserialize

        return cls(*[deserialize(c) for c in config["layers"]],
                   input_shape=config.get("input_shape"))


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float | None = None,
                   clip_value: float | None = None) -> Tensor | None:
    """Clip gradients in place: each entry to ``[-clip_value, clip_value]``, then the global
    norm ``sqrt(sum g^2)`` to ``max_norm`` (``g <- g * max_norm / norm`` when larger).

    Returns the global norm before norm clipping (None when ``max_norm`` is None).
    """
    params = [p for p in parameters if p.grad is not None]
    if clip_value is not None:
        nn.utils.clip_grad_value_(params, clip_value)
    if max_norm is not None:
        return nn.utils.clip_grad_norm_(params, max_norm)
    return None
