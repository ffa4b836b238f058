"""Fused CPU recurrences for large layers: time loop in compiled code, one BLAS GEMM per step
over the whole batch, gate math fused and parallel over the batch.

Same contract and equations as :mod:`.numba_cpu` (read its docstring); only the loop order
differs. Forward, for ``t = 0 .. T-1``::

    P   = (H_{t-1} * RM) @ W_h            # (B, G*U) one GEMM (numpy.dot -> BLAS)
    S_t = cell(XP_t, P, S_{t-1}) where m_t else S_{t-1}     # elementwise, prange over batch

Backward, for ``t = T-1 .. 0``: gate derivatives elementwise give ``dZ_t`` (B, G*U), then
``dH_{t-1} = (dZ_t @ W_h^T) * RM`` (+ the direct ``z * dh`` path for GRU) -- one GEMM per
step. ``dW_h`` is one GEMM over all steps at the end.
Numba's ``np.dot`` calls SciPy's BLAS (``scipy`` must be installed).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numba_cpu import (
    _OPTS,
    _gru_row,
    _gru_row_bwd,
    _last_real,
    _lstm_row,
    _lstm_row_bwd,
    _simple_row,
    _simple_row_bwd,
    run_forward,
)


@njit(**_OPTS)
def _prev_times_mask(h, rm, hr):
    for b in prange(h.shape[0]):
        for k in range(h.shape[1]):
            hr[b, k] = h[b, k] * rm[b, k]


# ------------------------------------------------------------------------------ forward
@njit(**_OPTS)
def rnn_fwd(kind, xp, h0, c0, w, bh, mask, rm, relu, seq, hs, cs, gates, hhs, y, last):
    """kind 0 SimpleRNN, 1 LSTM, 2 GRU. Writes hs (and cs, gates, hhs as the cell needs)."""
    nb, nt, nh = hs.shape
    h = h0.copy()
    c = c0.copy()
    hr = np.empty_like(h)
    p = np.empty((nb, w.shape[1]), h.dtype)
    last[:] = 0.0
    for t in range(nt):
        tg = t if gates.shape[1] == nt else 0  # inference: one scratch row
        _prev_times_mask(h, rm, hr)
        np.dot(hr, w, p)
        for b in prange(nb):
            real = mask[b, t] != 0
            if real:
                pb = p[b]
                if kind == 2:
                    pb += bh
                    _gru_row(xp[b, t], pb, h[b], gates[b, tg], hhs[b, tg])
                else:
                    pb += xp[b, t]
                    if kind == 0:
                        _simple_row(pb, h[b], relu)
                    else:
                        _lstm_row(pb, c[b], h[b], gates[b, tg])
                last[b] = h[b]
            hs[b, t] = h[b]
            if kind == 1:
                cs[b, t] = c[b]
            if seq:
                if real:
                    y[b, t] = h[b]
                else:
                    y[b, t] = 0.0


# ------------------------------------------------------------------------------ backward
@njit(**_OPTS)
def rnn_bwd(kind, hs, h0, cs, c0, gates, hhs, wt, mask, rm, relu, dy, seq, dlast, dh, dc,
            dxp, dhp):
    """BPTT of :func:`rnn_fwd`. ``wt`` is ``W_h^T`` (contiguous); ``dh``/``dc`` hold the
    gradients of the final state on entry and of the initial state on exit."""
    nb, nt, nh = hs.shape
    ng = wt.shape[0]
    dz = np.zeros((nb, ng), hs.dtype)
    gh = np.empty((nb, nh), hs.dtype)
    q = np.empty((nb, nh), hs.dtype)
    tc = np.empty((nb, nh), hs.dtype)
    tl = np.empty(nb, np.int64)
    for b in range(nb):
        tl[b] = _last_real(mask, b)
    for t in range(nt - 1, -1, -1):
        for b in prange(nb):
            if not mask[b, t]:
                dz[b] = 0.0
                dxp[b, t] = 0.0
                dhp[b, t] = 0.0
                continue
            gh[b] = dh[b]
            if seq:
                gh[b] += dy[b, t]
            if t == tl[b]:
                gh[b] += dlast[b]
            if kind == 0:
                _simple_row_bwd(gh[b], hs[b, t], dz[b], relu)
                dxp[b, t] = dz[b]
            elif kind == 1:
                cp = cs[b, t - 1] if t > 0 else c0[b]
                _lstm_row_bwd(gh[b], gates[b, t], cs[b, t], cp, dc[b], dz[b], tc[b])
                dxp[b, t] = dz[b]
            else:
                hp = hs[b, t - 1] if t > 0 else h0[b]
                _gru_row_bwd(gh[b], gates[b, t], hhs[b, t], hp, dz[b], dxp[b, t, 2 * nh:],
                             dh[b])
                dxp[b, t, : 2 * nh] = dz[b, : 2 * nh]
            dhp[b, t] = dz[b]
        np.dot(dz, wt, q)
        for b in prange(nb):
            if mask[b, t]:
                for k in range(nh):
                    if kind == 2:
                        dh[b, k] += q[b, k] * rm[b, k]
                    else:
                        dh[b, k] = q[b, k] * rm[b, k]


# ------------------------------------------------------------------------------ torch glue
_KIND = {"simple": 0, "lstm": 1, "gru": 2}


def _np(t):
    return t.detach().numpy()


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """:func:`rnnkit.kernels.numba_cpu.run_forward` with this module's :func:`rnn_fwd`."""
    return run_forward(rnn_fwd, kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """Run :func:`rnn_bwd`; returns ``(dxp, dW_h, db_h, dh0, dc0)`` as torch tensors, with
    ``dW_h = sum_{b,t} hr_{t-1}^T dhp_t`` as one GEMM over all steps."""
    import torch

    hs, cs, gates, hhs = saved
    nb, nt, nh = hs.shape
    k = _KIND[kind]
    kw = {"dtype": hs.dtype}
    dxp = torch.empty((nb, nt, w.shape[1]), **kw)
    dhp = torch.empty_like(dxp)
    dh = dh_t.clone()
    dc = dc_t.clone() if k == 1 else torch.zeros((nb, nh), **kw)
    c0_ = c0 if k == 1 else torch.zeros((nb, nh), **kw)
    dt = hs.numpy().dtype
    if seq:
        dseq, dlast = _np(dy), np.zeros((nb, nh), dt)
    else:
        dseq, dlast = np.zeros((1, 1, 1), dt), _np(dy)
    rnn_bwd(k, _np(hs), _np(h0), _np(cs), _np(c0_), _np(gates), _np(hhs),
            np.ascontiguousarray(_np(w).T), _np(mask), _np(rm), relu, dseq, seq, dlast,
            _np(dh), _np(dc), _np(dxp), _np(dhp))
    hprev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1) * rm.unsqueeze(1)
    dw = hprev.reshape(-1, nh).T @ dhp.reshape(-1, dhp.shape[-1])
    return dxp, dw, dhp.sum((0, 1)), dh, (dc if k == 1 else None)
