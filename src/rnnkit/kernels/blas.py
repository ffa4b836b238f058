"""Fused CPU recurrences for large layers: time loop in compiled code (``rk_blas_fwd``/
``rk_blas_bwd`` of ``csrc/kernels.h``, loaded by :mod:`.native`), one BLAS GEMM per step over
the whole batch, gate math fused and parallel over the batch (OpenMP).

Same contract and equations as :mod:`.lanes` (read its docstring); only the loop order
differs. Forward, for ``t = 0 .. T-1``::

    P   = HR_{t-1} @ W_h                  # (B, G*U) one GEMM; HR = H * RM (H if no dropout)
    S_t = cell(XP_t, P, S_{t-1}) where m_t else S_{t-1};  HR_t = H_t * RM   # parallel over batch

Backward, for ``t = T-1 .. 0``: gate derivatives elementwise give ``dZ_t`` (B, G*U), written
straight into ``dXP[:, t]``, then ``dH_{t-1} = (dZ_t @ W_h^T) * RM`` (+ the direct ``z * dh``
path for GRU) -- one GEMM per step, applied to ``dH`` in the next step's elementwise loop.
``dW_h = sum_{b,t} hr_{t-1}^T dhp_t`` is one GEMM over all steps at the end; ``dhp`` equals
``dXP`` except in the GRU candidate block (``dn_pre * r``), the only part kept separately.

The GEMMs go through the kernels' BLAS (:data:`.native.BLAS`): torch's MKL when torch
exports it, else SciPy's BLAS. Training keeps the states (``hs``, LSTM ``cs``) and gate
activations of every step for the backward pass, time-major (T,B,.), so each step reads and
writes one contiguous block; inference (``keep=False``) keeps O(batch x units) scratch.
"""

from __future__ import annotations

import torch

from . import affine, native
from .fused import KIND_CODE, cell_kind

_p = native.ptr
#: gate rows (batch x gates*units) per step below which the gate math and the step GEMMs run
#: on one thread: an OpenMP region (or MKL's threads) per step costs more than it saves for
#: small batches (generation: batch 1)
MIN_PARALLEL_ROWS = 4096
#: :func:`forward` takes projections without the input bias (``bx``): :func:`.fused.run`
#: then leaves ``+ b`` out of its projection GEMM (one pass over ``xp`` less)
ADDS_INPUT_BIAS = True


def _threads(nb: int, ng: int) -> int:
    return native.threads() if nb * ng >= MIN_PARALLEL_ROWS else 1


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T b`` (both with contiguous rows) on the kernels' GEMM where it is their own,
    else torch's."""
    if affine.own_gemm_applies(a, b):
        return native.mm(a, b, torch.empty((a.shape[1], b.shape[1]), dtype=a.dtype), ta=True)
    return a.T @ b


def _use_rm(rm) -> bool:
    return bool((rm != 1).any())


def _row_stride(x: torch.Tensor, rows: int) -> int | None:
    """Stride between the rows of ``x`` seen as ``rows`` rows of its last axis (contiguous
    within a row, evenly spaced), else None."""
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        return None
    s = x.stride(-2) if x.dim() >= 2 else x.shape[-1]
    if x.dim() == 3 and x.stride(0) != x.shape[1] * s:
        return None
    return s if s >= x.shape[-1] and x.numel() // max(x.shape[-1], 1) == rows else None


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True, ids=None, *, bx=None,
            rev=False, out=None):
    """Run ``rk_blas_fwd`` on torch tensors; returns ``(y, h_T, c_T, saved)``. With
    ``keep=False`` (no backward will run) neither states nor gates are kept per step. With
    ``ids`` (B,T) int64, ``xp`` is a table (V,G) and step ``t`` of sequence ``b`` reads its
    row ``ids[b, t]`` (an Embedding folded into the projection, :mod:`rnnkit.fold`).

    Inference only (``keep=False``): ``bx`` is the input bias when ``xp`` was projected
    without it (added in the kernel: no pass over ``xp`` to add it); ``rev`` runs the
    sequence backwards (``go_backwards``) where it lies, step ``t`` reading ``xp[:, T-1-t]``
    and writing ``y[:, T-1-t]``, so neither the inputs nor the outputs are flipped; ``out``
    is the output to write, ``(B,T,H)`` (``seq``) or ``(B,H)``, whose rows may be spaced
    wider than ``H`` (a half of a bidirectional layer's ``(B,T,2H)``), as ``xp``'s rows may
    be (a half of both directions' projections). Without ``seq``, a sequence with no real
    step leaves its row of ``out`` as it was (zeros when ``out`` is not given)."""
    nb, nt = (ids.shape if ids is not None else xp.shape[:2])
    nh = h0.shape[1]
    ng = w.shape[1]
    kw = {"dtype": xp.dtype}
    k = KIND_CODE[kind]
    if keep and (rev or bx is not None or out is not None):
        raise ValueError("blas.forward: rev, bx and out are for inference (keep=False)")
    one = (1, 1, 1)
    hs = torch.empty((nt + 1, nb, nh) if keep else one, **kw)
    cs = torch.empty((nt + 1, nb, nh) if keep and k == 1 else one, **kw)
    ntg = nt if keep else 1
    gates = torch.empty((ntg, nb, ng) if k else one, **kw)
    hhs = torch.empty((ntg, nb, nh) if k == 2 else one, **kw)
    if out is None:
        out = torch.empty((nb, nt, nh), **kw) if seq else torch.zeros((nb, nh), **kw)
    ys = _row_stride(out, nb * nt if seq else nb)
    if ys is None or out.dtype != xp.dtype or out.shape[-1] != nh:
        raise ValueError("blas.forward: out must have rows of H contiguous values")
    y, last = (out, None) if seq else (None, out)
    h = h0.clone()
    c = c0.clone() if k == 1 else torch.empty((1, 1), **kw)
    w, xp = w.detach().contiguous(), xp.detach()
    mask, rm = mask.contiguous(), rm.detach().contiguous()
    xs = _row_stride(xp, xp.shape[0] if ids is not None else nb * nt)
    if xs is None:
        xp = xp.contiguous()
        xs = ng
    bxn = None
    if k == 2:  # the recurrent bias, plus the input bias of the z and r gates when split off
        bh = bh.detach() if bx is None else torch.cat([bh[: 2 * nh] + bx[: 2 * nh], bh[2 * nh:]])
        bxn = None if bx is None else bx[2 * nh:].detach().contiguous()
    else:  # no recurrent bias: the input bias (when split off) goes with the product
        bh = None if bx is None else bx.detach()
    bh = None if bh is None else bh.contiguous()
    if ids is not None:
        ids = ids.to(torch.int64).contiguous()
    native.fn("rk_blas_fwd", xp.dtype)(
        _threads(nb, ng), k, int(relu), int(_use_rm(rm)), int(seq), int(keep), int(rev), nb, nt,
        nh, ng, xs, ys, _p(xp), None if ids is None else _p(ids), _p(h), _p(c), _p(w),
        None if bh is None else _p(bh), None if bxn is None else _p(bxn), _p(mask), _p(rm),
        _p(hs), _p(cs), _p(gates), _p(hhs), None if y is None else _p(y),
        None if last is None else _p(last))
    c_t = c if k == 1 else torch.empty((0, 0), **kw)
    return out, h, c_t, (hs, cs, gates, hhs)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """Run ``rk_blas_bwd``; returns ``(dxp, dW_h, db_h, dh0, dc0)`` as torch tensors, with
    ``dW_h = sum_{b,t} hr_{t-1}^T dhp_t`` as one GEMM over all steps."""
    hs, cs, gates, hhs = saved
    nb, nh = hs.shape[1], hs.shape[2]
    nt = hs.shape[0] - 1
    ng = w.shape[1]
    k = KIND_CODE[kind]
    kw = {"dtype": hs.dtype}
    dxp = torch.empty((nb, nt, ng), **kw)
    dhn = torch.empty((nb, nt, nh) if k == 2 else (1, 1, 1), **kw)
    dh = dh_t.clone()
    dc = dc_t.clone() if k == 1 else torch.empty((1, 1), **kw)
    if seq:
        dseq, dlast = dy.detach().contiguous(), torch.zeros((nb, nh), **kw)
    else:
        dseq, dlast = torch.zeros((1, 1, 1), **kw), dy.detach().contiguous()
    use_rm = _use_rm(rm)
    w, mask, rm = w.detach().contiguous(), mask.contiguous(), rm.detach().contiguous()
    native.fn("rk_blas_bwd", hs.dtype)(
        _threads(nb, ng), k, int(relu), int(use_rm), int(seq), nb, nt, nh, ng, _p(hs), _p(cs),
        _p(gates), _p(hhs), _p(w), _p(mask), _p(rm), _p(dseq), _p(dlast), _p(dh), _p(dc),
        _p(dxp), _p(dhn))
    hprev = torch.empty((nb, nt, nh), **kw)  # hr_{t-1} batch-major, as dxp's rows
    if use_rm:
        torch.mul(hs[:-1].transpose(0, 1), rm.unsqueeze(1), out=hprev)
    else:
        hprev.copy_(hs[:-1].transpose(0, 1))
    hp2 = hprev.reshape(-1, nh)
    dx2 = dxp.reshape(-1, ng)
    if k == 2:
        dn2 = dhn.reshape(-1, nh)
        dw = torch.cat([_mm_t(hp2, dx2[:, : 2 * nh]), _mm_t(hp2, dn2)], dim=1)
        dbh = torch.cat([dx2[:, : 2 * nh].sum(0), dn2.sum(0)])
    else:
        dw = _mm_t(hp2, dx2)
        dbh = torch.zeros(ng, **kw)  # no recurrent bias: not a parameter
    return dxp, dw, dbh, dh, (dc if k == 1 else None)


def bidirectional(bi, x: torch.Tensor | None, mask: torch.Tensor | None,
                  table: torch.Tensor | None = None, ids: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Inference of a concat-merged ``Bidirectional`` layer (no state in or out, no dropout;
    :func:`rnnkit.kernels.dispatch.run_bidirectional` checks): one GEMM projects ``x`` for
    both directions, ``xp = x [W_x^f | W_x^b]`` (B,T,2G), and one kernel call per direction
    reads its half where it lies, the backward one walking ``t = T-1 .. 0`` (``rev``), and
    writes its half of the merged output ``[f_t, b_t]`` (B,T,2H) (or ``[f_T, b_1]``, (B,2H))
    in place: no flip of the inputs or the outputs, no concatenation, the input biases added
    in the kernel. Same values as the two layers run one after the other.

    With ``table`` (V,2G) and ``ids`` (B,T) instead of ``x``: an Embedding folded into both
    projections (:mod:`rnnkit.fold`, biases included), each step reading its rows
    ``table[ids[b, t]]`` where they lie; no GEMM but the step products."""
    f, b = bi.forward_layer, bi.backward_layer
    kind = cell_kind(f.cell)
    nh = f.cell.units
    ng = f.cell.gates * nh
    seq = f.return_sequences
    if table is not None:
        return _walk_both(bi, kind, table, ids, mask, ng, seq, table.dtype, folded=True)
    nb, nt, d = x.shape
    w = torch.cat([f.cell.kernel.detach(), b.cell.kernel.detach()], dim=1)
    x2 = x.detach().reshape(-1, d).contiguous()
    buf = bi.__dict__.pop("_xp_scratch", None)  # as fused.run: kept between calls, not shared
    if buf is None or buf.dtype != x.dtype or buf.numel() < x2.shape[0] * 2 * ng:
        buf = torch.empty(x2.shape[0] * 2 * ng, dtype=x.dtype)
    try:
        xp = buf[: x2.shape[0] * 2 * ng].view(x2.shape[0], 2 * ng)
        if affine.own_gemm_applies(x2, w):
            native.mm(x2, w, xp)
        else:
            torch.mm(x2, w, out=xp)
        return _walk_both(bi, kind, xp.view(nb, nt, 2 * ng), None, mask, ng, seq, x.dtype,
                          folded=False)
    finally:
        bi.__dict__["_xp_scratch"] = buf


def _walk_both(bi, kind, xp, ids, mask, ng, seq, dtype, folded: bool) -> torch.Tensor:
    """The two directions' kernel calls of :func:`bidirectional` on the projections ``xp``
    (B,T,2G) or, with ``ids``, the table (V,2G); ``folded``: the biases are in ``xp``."""
    nb, nt = ids.shape if ids is not None else xp.shape[:2]
    nh = bi.forward_layer.cell.units
    out = torch.empty((nb, nt, 2 * nh), dtype=dtype) if seq else \
        torch.zeros((nb, 2 * nh), dtype=dtype)
    m8 = (torch.ones((nb, nt), dtype=torch.uint8) if mask is None
          else mask.to(torch.uint8).contiguous())
    rm = torch.ones((nb, nh), dtype=dtype)
    for i, layer in enumerate((bi.forward_layer, bi.backward_layer)):
        cell = layer.cell
        h0 = torch.zeros((nb, nh), dtype=dtype)
        bh = cell.bias[1] if kind == "gru" and cell.bias is not None else \
            torch.zeros(ng, dtype=dtype)
        relu = kind == "simple" and cell.activation == "relu"
        forward(kind, xp[..., i * ng:(i + 1) * ng], cell.recurrent_kernel, bh, h0, h0, m8, rm,
                relu, seq, keep=False, ids=ids, bx=None if folded else cell.input_bias(),
                rev=bool(i), out=out[..., i * nh:(i + 1) * nh])
    return out
