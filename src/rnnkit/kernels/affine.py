"""The input projection ``xp = x W_x + b`` of the fused backends on the kernels' own GEMM.

Where the kernels' float32 GEMM is their own (the AVX-512 build on a CPU where MKL runs its
AVX2 code, :data:`.native.GEMM`), torch's ``addmm`` would run MKL's slower code for the
largest products of a layer: the projection of every step in one GEMM, and in the backward
``dx = dxp W_x^T`` and ``dW_x = x^T dxp``. :func:`project` runs them on the own GEMM
instead (:class:`Affine`, an autograd Function); elsewhere it is
:meth:`rnnkit.cells.RNNCellBase.project_inputs`. Same equation either way::

    xp[n, :] = x[n, :] @ W_x + b          db = sum_n dxp[n, :]
    dx = dxp @ W_x^T                      dW_x = x^T @ dxp
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import native


def own_gemm_applies(x: Tensor, w: Tensor) -> bool:
    """Whether :func:`project` takes the own GEMM for this call."""
    return (native.GEMM == "own" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.device.type == "cpu" and x.numel() > 0)


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _forward(x2: Tensor, w: Tensor, b: Tensor | None, out: Tensor) -> Tensor:
    if b is None:
        return native.mm(x2, w, out)
    out.copy_(b.expand_as(out))
    return native.mm(x2, w, out, beta=1.0)


class Affine(torch.autograd.Function):
    """``(x2, W, b) -> x2 W + b`` for 2-D ``x2`` (rows, inputs); ``b`` may be None."""

    @staticmethod
    def forward(ctx, x2: Tensor, w: Tensor, b: Tensor | None):
        x2, wd = x2.detach().contiguous(), w.detach().contiguous()
        out = _forward(x2, wd, None if b is None else b.detach(),
                       torch.empty((x2.shape[0], wd.shape[1]), dtype=x2.dtype))
        ctx.has_bias = b is not None
        ctx.save_for_backward(x2, wd)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, w = ctx.saved_tensors
        g = g.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = native.mm(g, w.t().contiguous(), torch.empty_like(x2))
        if ctx.needs_input_grad[1]:
            dw = native.mm(x2, g, torch.empty_like(w), ta=True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


def project(cell, x: Tensor, out: Tensor | None = None, bias: bool = True) -> Tensor:
    """``cell.project_inputs(x, out)`` (``x W_x + b`` over the last axis), on the own GEMM
    where :func:`own_gemm_applies`; ``bias=False`` (inference into ``out`` only) leaves
    ``+ b`` out, for a kernel that adds it itself."""
    w, b = cell.kernel, cell.input_bias()
    if not bias:
        if out is None:
            raise ValueError("project: bias=False needs an out tensor (inference)")
        b = None
    own = own_gemm_applies(x, w)
    if not own and bias:
        return cell.project_inputs(x, out)
    shape = (*x.shape[:-1], w.shape[1])
    if out is not None:  # inference into a scratch tensor (no autograd)
        x2 = _rows(x)
        o2 = out.view(-1)[: x2.shape[0] * w.shape[1]].view(x2.shape[0], w.shape[1])
        if not own:  # (bias=False: a plain GEMM on torch's BLAS)
            return torch.mm(x2, w.detach(), out=o2).view(shape)
        return _forward(x2, w.detach(), None if b is None else b.detach(), o2).view(shape)
    return Affine.apply(x.reshape(-1, x.shape[-1]), w, b).view(shape)
