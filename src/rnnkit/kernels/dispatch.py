"""Backend table and selection for :class:`rnnkit.recurrent.RNN` (see :mod:`rnnkit.kernels`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from . import native
from .fused import cell_kind

Backend = Callable[..., tuple[Tensor, tuple[Tensor, ...]]]

#: the lanes kernels (and the fused classifier step on them) take layers up to this many units
LANES_MAX_UNITS = 64
#: ``auto`` on the CPU, per cell, tried in order (the first that supports the call runs).
#: Measured per layer (benchmarks/shapes.py, docs/benchmarks.md): ``blas`` beats the lanes
#: kernel as a per-layer backend at every size (the lanes layout costs a transpose of the
#: inputs, outputs and gradients per call; it wins inside the fused classifier step, where
#: there is none) and beats torch.nn for SimpleRNN and GRU; for LSTM torch.nn's CPU path
#: (oneDNN's fused LSTM, float32; post-padded masks without return_state run on the padded
#: batch, see kernels.torch_nn) is as fast or faster above :data:`BLAS_LSTM_MAX_UNITS`
#: units, so such an LSTM takes it when it can and the call has at least
#: :data:`ONEDNN_MIN_STEPS` sequence-steps (one step of one sequence, as in generation, pays
#: oneDNN's per-call setup: 8x slower than blas at 256 units).
ONEDNN_MIN_STEPS = 256
#: LSTM layers up to this many units take ``blas`` before oneDNN: per layer its training
#: step is 0.97-1.28x oneDNN's there (tagger shape, 64 units, T=40, batch 32: 1.28x on one
#: thread, 1.13x on two; docs/benchmarks.md), its inference at par; above it oneDNN's
#: training is as fast or faster (128 units: 0.93-0.99x for blas)
BLAS_LSTM_MAX_UNITS = 64
CPU_ORDER = {"simple": ("blas",), "gru": ("blas",), "lstm": ("torch", "blas")}
#: older names of backends, still accepted (``"numba"``: the lanes kernels were Numba code)
ALIASES = {"numba": "lanes"}


def _reference(layer, x, state, mask, in_mask, rec_mask):
    return layer.run_reference(x, state, mask, in_mask, rec_mask)


#: module implementing each fused backend
MODULES = {"lanes": "lanes", "blas": "blas"}


def _fused(module: str, layer, x, state, mask, in_mask, rec_mask):
    import importlib

    from . import fused

    impl = importlib.import_module(f"{__package__}.{module}")
    return fused.run(impl, layer, x, state, mask, in_mask, rec_mask)


def _torch(layer, x, state, mask, in_mask, rec_mask):
    from . import torch_nn

    return torch_nn.run(layer, x, state, mask, in_mask, rec_mask)


BACKENDS: dict[str, Backend] = {
    "reference": _reference,
    "lanes": partial(_fused, "lanes"),
    "blas": partial(_fused, "blas"),
    "torch": _torch,
}


def unsupported(name: str, layer, x: Tensor, mask: Tensor | None,
                rec_mask: Tensor | None) -> str | None:
    """Why backend ``name`` cannot run this call (None when it can)."""
    if name == "reference":
        return None
    if cell_kind(layer.cell) is None:
        return f"{type(layer.cell).__name__} is not a built-in cell"
    if x.dtype not in (torch.float32, torch.float64):
        return f"dtype {x.dtype} (float32/float64 only)"
    if x.shape[1] == 0:
        return "empty sequence"
    if name == "torch":
        from .torch_nn import unsupported as torch_unsupported

        return torch_unsupported(layer, x, mask, rec_mask)
    if x.device.type != "cpu":
        return f"device {x.device} (CPU only)"
    if not native.available():
        return f"the compiled kernels are unavailable ({native.why_unavailable()})"
    return None


def select(layer, x: Tensor, mask: Tensor | None, in_mask: Tensor | None,
           rec_mask: Tensor | None) -> str:
    """Name of the backend to run this call: the layer's explicit choice, else the fastest
    backend that supports the call. Tensors on the ``meta`` device (shapes only, as when a
    saved model's shapes are checked before loading) always take the reference loop."""
    if x.device.type == "meta":
        return "reference"
    if layer.backend != "auto":
        name = ALIASES.get(layer.backend, layer.backend)
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {layer.backend!r}; available: {sorted(BACKENDS)}")
        why = unsupported(name, layer, x, mask, rec_mask)
        if why is not None:
            raise ValueError(f"backend {layer.backend!r} cannot run this call: {why}")
        return name
    if x.device.type != "cpu":
        return "torch" if unsupported("torch", layer, x, mask, rec_mask) is None else "reference"
    if x.shape[1] == 1:
        # one time step (generation, beam search): the reference cell's few torch ops cost
        # less than any kernel's setup (batch 1, 128 units: 57 us against 66 us for blas
        # and 153 us for oneDNN; docs/benchmarks.md)
        return "reference"
    for name in CPU_ORDER.get(cell_kind(layer.cell) or "", ()):
        if name == "torch" and (x.dtype != torch.float32
                                or x.shape[0] * x.shape[1] < ONEDNN_MIN_STEPS
                                or layer.cell.units <= BLAS_LSTM_MAX_UNITS):
            continue  # oneDNN's LSTM: float32, large enough calls and layers (masks:
            # torch_nn's docstring)
        if unsupported(name, layer, x, mask, rec_mask) is None:
            return name
    if not native.available():
        native.warn_once()
    return "reference"


def _grad_needed(bi, x: Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad
                                        or any(p.requires_grad for p in bi.parameters()))


def _pair_backends(bi, x: Tensor, mask: Tensor | None) -> list[str] | None:
    """What :func:`select` gives each layer of a mirrored pair (same cell kind, size and
    bias, the second ``go_backwards``, no state returned) on a CPU call without dropout;
    None when the pair or the call is not of that kind."""
    f, b = bi.forward_layer, bi.backward_layer
    if (not f.cell.built or not b.cell.built  # the layers build themselves on a first call
            or f.go_backwards or not b.go_backwards or f.return_state or b.return_state
            or f.return_sequences != b.return_sequences or f.cell.units != b.cell.units
            or cell_kind(f.cell) is None or cell_kind(f.cell) != cell_kind(b.cell)
            or (f.cell.bias is None) != (b.cell.bias is None)
            or x.dim() != 3 or x.device.type != "cpu"
            or x.shape[-1] != f.cell.input_size or x.shape[-1] != b.cell.input_size):
        return None
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
        return None  # the layers raise the error
    for layer in (f, b):
        if layer.training and (layer.dropout > 0 or layer.recurrent_dropout > 0):
            return None
    return [select(layer, x, mask, None, None) for layer in (f, b)]


def blas_pair(bi, x: Tensor, mask: Tensor | None, names: list[str] | None = None) -> bool:
    """Whether both layers of ``bi`` may run this call on :func:`.blas.bidirectional`: a
    mirrored pair (:func:`_pair_backends`), each given ``blas`` by :func:`select` or, with
    ``backend="auto"``, oneDNN's LSTM (``x`` may be a shape-only probe)."""
    names = _pair_backends(bi, x, mask) if names is None else names
    if names is None:
        return False
    kind = cell_kind(bi.forward_layer.cell)
    return all(n == "blas" or (n == "torch" and layer.backend == "auto" and kind == "lstm"
                               and unsupported("blas", layer, x, mask, None) is None)
               for n, layer in zip(names, (bi.forward_layer, bi.backward_layer), strict=True))


def run_bidirectional(bi, x: Tensor, mask: Tensor | None = None) -> Tensor | None:
    """Both directions of a concat-merged ``Bidirectional`` layer (no ``return_state``, no
    initial state: the layer checks those) in one call instead of two, a flip and a
    concatenation, when the pair is mirrored (same cell kind and size, the second
    ``go_backwards``) and runs on the CPU without dropout:

    * inference (nothing needs a gradient) on the ``blas`` kernel, masked or not, for any
      cell whose layers :func:`select` would give ``blas`` or, with ``backend="auto"``,
      oneDNN's LSTM (:func:`.blas.bidirectional`: one projection GEMM for both directions,
      the backward direction walked in place);
    * else, unmasked LSTM layers given to oneDNN, in one ``torch.lstm(bidirectional=True)``
      call (:func:`.torch_nn.bidirectional_lstm`).

    None for any other call (a CUDA call, dropout while training, layers that are not a
    mirrored pair, a mask of the wrong shape): the layer then runs its two directions."""
    names = _pair_backends(bi, x, mask)
    if names is None:
        return None
    f, b = bi.forward_layer, bi.backward_layer
    if mask is not None:
        mask = mask.to(torch.bool)
    if not _grad_needed(bi, x) and blas_pair(bi, x, mask, names):
        from . import blas

        f.last_backend = b.last_backend = "blas"
        f.embedding_folded = b.embedding_folded = False  # (set True by rnnkit.fold)
        return blas.bidirectional(bi, x, mask)
    if mask is not None or cell_kind(f.cell) != "lstm" or names != ["torch", "torch"]:
        return None
    from . import torch_nn

    f.last_backend = b.last_backend = "torch"
    f.embedding_folded = b.embedding_folded = False
    return torch_nn.bidirectional_lstm(bi, x)


def run(layer, x, state, mask, in_mask, rec_mask):
    """Select a backend, record it on ``layer.last_backend`` and run it."""
    name = select(layer, x, mask, in_mask, rec_mask)
    d = layer.__dict__  # nn.Module.__setattr__ costs microseconds: write only on a change
    if d.get("last_backend") != name or d.get("embedding_folded") is not False:
        layer.last_backend = name
        layer.embedding_folded = False  # set True by rnnkit.fold when it ran Embedding -> RNN
    return BACKENDS[name](layer, x, state, mask, in_mask, rec_mask)
