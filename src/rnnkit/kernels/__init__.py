"""Backend dispatch for :class:`rnnkit.recurrent.RNN`.

Every backend computes exactly what :func:`rnnkit.recurrent.reference_scan` computes (the
readable reference); tests hold them equal in values and gradients. A backend is a function
``(layer, x, state, mask, in_mask, rec_mask) -> (outputs, final_state)`` with the arguments
prepared by ``RNN.forward`` (dropout masks already sampled, mask in input time order).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Backend = Callable[..., tuple[Tensor, tuple[Tensor, ...]]]


def _reference(layer, x, state, mask, in_mask, rec_mask):
    return layer.run_reference(x, state, mask, in_mask, rec_mask)


BACKENDS: dict[str, Backend] = {"reference": _reference}


def select(layer, x: Tensor, mask: Tensor | None, in_mask: Tensor | None,
           rec_mask: Tensor | None) -> str:
    """Name of the backend to run this call: the layer's explicit choice, else the fastest
    backend that supports the call."""
    if layer.backend != "auto":
        if layer.backend not in BACKENDS:
            raise ValueError(f"unknown backend {layer.backend!r}; available: {sorted(BACKENDS)}")
        return layer.backend
    return "reference"


def run(layer, x, state, mask, in_mask, rec_mask):
    """Select a backend, record it on ``layer.last_backend`` and run it."""
    name = select(layer, x, mask, in_mask, rec_mask)
    layer.last_backend = name
    return BACKENDS[name](layer, x, state, mask, in_mask, rec_mask)
