"""Autograd glue shared by the fused CPU backends (``lanes`` and ``blas``).

A backend call computes, like :meth:`rnnkit.recurrent.RNN.run_reference`::

    x  <- x * in_mask                 (input dropout, torch op)
    x  <- flip(x) if go_backwards     (torch op; the mask is flipped too)
    xp  = x W_x + b                   (one GEMM, affine.project: autograd gives dW_x, db, dx)
    y, s_T = Recurrence(xp, W_h, b_h, s_0, mask, rm)      (one fused call forward and back)

``Recurrence`` is a :class:`torch.autograd.Function`; its backward is BPTT in compiled code
(``impl.backward``), which returns ``dxp``, ``dW_h``, ``db_h`` (of the recurrent bias, GRU
only) and ``ds_0``. The backward is not itself differentiable (double backward raises).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from ..cells import GRUCell, LSTMCell, SimpleRNNCell
from . import affine

#: the one table of cell kinds: the built-in cell classes, their names (backend tables such as
#: ``dispatch.CPU_ORDER`` are keyed by them) and the codes the C kernels take (``kind`` 0, 1, 2)
KINDS = {SimpleRNNCell: "simple", LSTMCell: "lstm", GRUCell: "gru"}
KIND_CODE = {"simple": 0, "lstm": 1, "gru": 2}


def cell_kind(cell) -> str | None:
    """``"simple"``, ``"lstm"``, ``"gru"`` for the built-in cells, else None (subclasses may
    change ``step``, so they are not assumed to match a fused kernel)."""
    return KINDS.get(type(cell))


class Recurrence(torch.autograd.Function):
    """``(xp, W_h, b_h, h0, c0) -> (y, h_T, c_T)``; ``y`` is ``(B,T,H)`` when ``seq`` else the
    last real output ``(B,H)``. ``mask`` is uint8 ``(B,T)``, ``rm`` the recurrent-dropout mask
    ``(B,H)`` (ones when none); neither receives a gradient. ``c0``/``c_T`` are used by LSTM
    only (an empty tensor otherwise)."""

    @staticmethod
    def forward(ctx, xp: Tensor, w: Tensor, bh: Tensor, h0: Tensor, c0: Tensor, mask: Tensor,
                rm: Tensor, kind: str, relu: bool, seq: bool, impl: ModuleType, keep: bool):
        y, h_t, c_t, saved = impl.forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep)
        ctx.kind, ctx.relu, ctx.seq, ctx.impl = kind, relu, seq, impl
        ctx.save_for_backward(w, h0, c0, mask, rm, *saved)
        return y, h_t, c_t

    @staticmethod
    def backward(ctx, dy: Tensor | None, dh_t: Tensor | None, dc_t: Tensor | None):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused RNN kernels do not support double backward "
                               "(create_graph=True); use backend='reference'")
        w, h0, c0, mask, rm, *saved = ctx.saved_tensors
        b, h = h0.shape
        dy = torch.zeros((b, h) if not ctx.seq else (b, mask.shape[1], h), dtype=w.dtype) \
            if dy is None else dy.contiguous()
        dh_t = torch.zeros_like(h0) if dh_t is None else dh_t.contiguous()
        dc_t = torch.zeros_like(h0) if dc_t is None else dc_t.contiguous()
        dxp, dw, dbh, dh0, dc0 = ctx.impl.backward(ctx.kind, saved, w, h0, c0, mask, rm,
                                                   ctx.relu, dy, ctx.seq, dh_t, dc_t)
        if not ctx.needs_input_grad[1]:
            dw = None
        if not ctx.needs_input_grad[2]:
            dbh = None
        if ctx.kind != "lstm":
            dc0 = None
        return dxp, dw, dbh, dh0, dc0, None, None, None, None, None, None, None


def run(impl: ModuleType, layer, x: Tensor, state, mask: Tensor | None, in_mask: Tensor | None,
        rec_mask: Tensor | None):
    """Backend entry point (signature of :data:`rnnkit.kernels.BACKENDS` plus ``impl``)."""
    cell = layer.cell
    if in_mask is not None:
        x = x * in_mask
    if layer.go_backwards:
        x = x.flip(1)
        mask = None if mask is None else mask.flip(1)
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return run_projected(impl, layer, affine.project(cell, x), state, mask, rec_mask)
    # inference: the projections go into a scratch tensor kept on the layer between calls.
    # A fresh tensor of tens of MB is mapped and faulted in page by page on every call
    # (about as long as the GEMM that fills it). Taken off the layer while in use, so
    # concurrent calls never share it (the second one allocates its own).
    need = x.numel() // max(x.shape[-1], 1) * cell.gates * cell.units
    buf = layer.__dict__.pop("_xp_scratch", None)
    if buf is None or buf.dtype != x.dtype or buf.numel() < need:
        buf = torch.empty(need, dtype=x.dtype)
    split = getattr(impl, "ADDS_INPUT_BIAS", False)  # the kernel adds b: xp = x W_x alone
    try:
        xp = affine.project(cell, x, out=buf, bias=not split)
        return run_projected(impl, layer, xp, state, mask, rec_mask,
                             bx=cell.input_bias() if split else None)
    finally:
        layer.__dict__["_xp_scratch"] = buf


def run_projected(impl: ModuleType, layer, xp: Tensor, state, mask: Tensor | None,
                  rec_mask: Tensor | None, ids: Tensor | None = None, bx: Tensor | None = None):
    """The recurrence on projected inputs ``xp`` (already in processing order); with ``ids``
    (B,T), ``xp`` is a table (V,G) whose row ``ids[b, t]`` is step ``t``'s projection; with
    ``bx``, ``xp`` lacks the input bias ``bx``, which the kernel adds (both ``blas``
    inference only: nothing differentiable)."""
    cell = layer.cell
    kind = cell_kind(cell)
    xp = xp.contiguous()
    b, t = (ids.shape if ids is not None else xp.shape[:2])
    units = cell.units
    m8 = (torch.ones((b, t), dtype=torch.uint8) if mask is None
          else mask.to(torch.uint8).contiguous())
    rm = (torch.ones((b, units), dtype=xp.dtype) if rec_mask is None
          else rec_mask.to(xp.dtype).contiguous())
    if kind == "gru" and cell.bias is not None:
        bh = cell.bias[1]
    else:
        bh = torch.zeros(cell.gates * units, dtype=xp.dtype)
    h0 = state[0].contiguous()
    c0 = state[1].contiguous() if kind == "lstm" else torch.empty((0, 0), dtype=xp.dtype)
    relu = kind == "simple" and cell.activation == "relu"
    w = cell.recurrent_kernel.contiguous()
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (xp, w, bh, h0, c0))
    if keep:
        if ids is not None or bx is not None:
            raise RuntimeError("run_projected: ids and bx are for inference only")
        y, h_t, c_t = Recurrence.apply(xp, w, bh, h0, c0, m8, rm, kind, relu,
                                       layer.return_sequences, impl, keep)
    else:  # nothing to differentiate: the kernel alone (the autograd Function costs ~10 us)
        by_id = {} if ids is None else {"ids": ids}  # (only the blas forward reads a table
        if bx is not None:  # or adds the input bias)
            by_id["bx"] = bx
        y, h_t, c_t, _ = impl.forward(kind, xp.detach(), w.detach(), bh.detach(), h0.detach(),
                                      c0.detach(), m8, rm, relu, layer.return_sequences, False,
                                      **by_id)
    return y, ((h_t, c_t) if kind == "lstm" else (h_t,))
