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
from .fused import KIND_CODE

_p = native.ptr
#: gate rows (batch x gates*units) per step below which the gate math and the step GEMMs run
#: on one thread: an OpenMP region (or MKL's threads) per step costs more than it saves for
#: small batches (generation: batch 1)
MIN_PARALLEL_ROWS = 4096


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


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True, ids=None):
    """Run ``rk_blas_fwd`` on torch tensors; returns ``(y, h_T, c_T, saved)``. With
    ``keep=False`` (no backward will run) neither states nor gates are kept per step. With
    ``ids`` (B,T) int64, ``xp`` is a table (V,G) and step ``t`` of sequence ``b`` reads its
    row ``ids[b, t]`` (an Embedding folded into the projection, :mod:`rnnkit.fold`)."""
    nb, nt = (ids.shape if ids is not None else xp.shape[:2])
    nh = h0.shape[1]
    kw = {"dtype": xp.dtype}
    k = KIND_CODE[kind]
    one = (1, 1, 1)
    hs = torch.empty((nt + 1, nb, nh) if keep else one, **kw)
    cs = torch.empty((nt + 1, nb, nh) if keep and k == 1 else one, **kw)
    ntg = nt if keep else 1
    gates = torch.empty((ntg, nb, w.shape[1]) if k else one, **kw)
    hhs = torch.empty((ntg, nb, nh) if k == 2 else one, **kw)
    y = torch.empty((nb, nt, nh) if seq else one, **kw)
    last = torch.zeros((nb, nh) if not seq else (1, 1), **kw)
    h = h0.clone()
    c = c0.clone() if k == 1 else torch.empty((1, 1), **kw)
    w, bh, xp = w.detach().contiguous(), bh.detach().contiguous(), xp.detach().contiguous()
    mask, rm = mask.contiguous(), rm.detach().contiguous()
    if ids is not None:
        ids = ids.to(torch.int64).contiguous()
    native.fn("rk_blas_fwd", xp.dtype)(
        _threads(nb, w.shape[1]), k, int(relu), int(_use_rm(rm)), int(seq), int(keep), nb, nt, nh,
        w.shape[1], _p(xp), None if ids is None else _p(ids), _p(h), _p(c), _p(w), _p(bh),
        _p(mask), _p(rm), _p(hs), _p(cs),
        _p(gates), _p(hhs), _p(y), _p(last))
    c_t = c if k == 1 else torch.empty((0, 0), **kw)
    return (y if seq else last), h, c_t, (hs, cs, gates, hhs)


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
