"""Fused CPU recurrences for large layers: time loop in compiled code, one BLAS GEMM per step
over the whole batch, gate math fused and parallel over the batch.

Same contract and equations as :mod:`.numba_cpu` (read its docstring); only the loop order
differs. Forward, for ``t = 0 .. T-1``::

    P   = HR_{t-1} @ W_h                  # (B, G*U) one GEMM; HR = H * RM (H if no dropout)
    S_t = cell(XP_t, P, S_{t-1}) where m_t else S_{t-1};  HR_t = H_t * RM   # prange over batch

Backward, for ``t = T-1 .. 0``: gate derivatives elementwise give ``dZ_t`` (B, G*U), written
straight into ``dXP[:, t]``, then ``dH_{t-1} = (dZ_t @ W_h^T) * RM`` (+ the direct ``z * dh``
path for GRU) -- one GEMM per step, applied to ``dH`` in the next step's elementwise loop.
``dW_h = sum_{b,t} hr_{t-1}^T dhp_t`` is one GEMM over all steps at the end; ``dhp`` equals
``dXP`` except in the GRU candidate block (``dn_pre * r``), the only part kept separately.

The GEMMs go through :func:`rnnkit.kernels.mkl.gemm`: torch's MKL when torch exports it,
else SciPy's BLAS. Training keeps the states (``hs``, LSTM ``cs``) and gate activations of
every step for the backward pass, time-major (T,B,.), so each step reads and writes one
contiguous block; inference (``keep=False``) keeps O(batch x units) scratch.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import mkl  # registers the BLAS symbols before the kernels below load from the cache
from .numba_cpu import (
    _FM,
    _OPTS,
    _gru_row,
    _gru_row_bwd,
    _last_real,
    _simple_row,
    _simple_row_bwd,
    fsigmoid,
    ftanh,
    run_threaded,
)

gemm = mkl.gemm


# ------------------------------------------------------------------------------ rows
# One sequence, one step; each loop writes one array (slices of the gate vector are separate
# arrays), so LLVM vectorises them.
@njit(inline="always", fastmath=_FM)
def _sig_sum(out, a, b):
    for j in range(out.shape[0]):
        out[j] = fsigmoid(a[j] + b[j])


@njit(inline="always", fastmath=_FM)
def _tanh_sum(out, a, b):
    for j in range(out.shape[0]):
        out[j] = ftanh(a[j] + b[j])


@njit(inline="always", fastmath=_FM)
def _lstm_fwd_row(p, x, c, h, g):
    """g <- [i, f, g, o] = act(p + x); c <- f c + i g; h <- o tanh(c)."""
    nh = h.shape[0]
    gi, gf, gg, go = g[:nh], g[nh:2 * nh], g[2 * nh:3 * nh], g[3 * nh:]
    _sig_sum(g[:2 * nh], p[:2 * nh], x[:2 * nh])
    _tanh_sum(gg, p[2 * nh:3 * nh], x[2 * nh:3 * nh])
    _sig_sum(go, p[3 * nh:], x[3 * nh:])
    for j in range(nh):
        c[j] = gf[j] * c[j] + gi[j] * gg[j]
    for j in range(nh):
        h[j] = go[j] * ftanh(c[j])


@njit(inline="always", fastmath=_FM)
def _lstm_bwd_row(gh, g, c, cp, dc, dz, tc):
    """dz <- d(pre-activations) [i, f, g, o]; dc <- dc_{t-1}; tc is scratch (nh)."""
    nh = gh.shape[0]
    gi, gf, gg, go = g[:nh], g[nh:2 * nh], g[2 * nh:3 * nh], g[3 * nh:]
    dzi, dzf, dzg, dzo = dz[:nh], dz[nh:2 * nh], dz[2 * nh:3 * nh], dz[3 * nh:]
    for j in range(nh):
        tc[j] = ftanh(c[j])
    for j in range(nh):
        dzo[j] = gh[j] * tc[j] * go[j] * (1.0 - go[j])
    for j in range(nh):
        dc[j] += gh[j] * go[j] * (1.0 - tc[j] * tc[j])
    for j in range(nh):
        dzi[j] = dc[j] * gg[j] * gi[j] * (1.0 - gi[j])
    for j in range(nh):
        dzf[j] = dc[j] * cp[j] * gf[j] * (1.0 - gf[j])
    for j in range(nh):
        dzg[j] = dc[j] * gi[j] * (1.0 - gg[j] * gg[j])
    for j in range(nh):
        dc[j] *= gf[j]


# ------------------------------------------------------------------------------ forward
@njit(**_OPTS)
def rnn_fwd(kind, xp, h, c, w, bh, mask, rm, use_rm, relu, seq, hs, cs, gates, hhs, y, last):
    """kind 0 SimpleRNN, 1 LSTM, 2 GRU. ``h`` (and LSTM ``c``), (B,H), hold the initial state
    on entry and the final state on exit. Training (``hs`` has T+1 steps): writes the states
    time-major, ``hs[t+1] = h_t`` with ``hs[0] = h_0`` (LSTM ``cs`` likewise), and the gate
    activations ``gates[t]`` (GRU also ``hhs[t]``), (T,B,.); inference (``hs`` of one step):
    ``gates``/``hhs`` (1,B,.) are scratch. Writes ``y`` (B,T,H) when ``seq`` else ``last``
    (B,H). ``use_rm``: apply the recurrent-dropout mask ``rm``."""
    nb, nt = xp.shape[0], xp.shape[1]
    nh = h.shape[1]
    ng = w.shape[1]
    keep = hs.shape[0] == nt + 1
    hr = np.empty_like(h)
    for b in range(nb):
        for k in range(nh):
            hr[b, k] = h[b, k] * rm[b, k] if use_rm else h[b, k]
            if keep:
                hs[0, b, k] = h[b, k]
                if kind == 1:
                    cs[0, b, k] = c[b, k]
    p = np.empty((nb, ng), h.dtype)
    for t in range(nt):
        tg = t if keep else 0  # inference: one scratch step
        gemm(hr, w, p)
        for b in prange(nb):
            real = mask[b, t] != 0
            if real:
                pb = p[b]
                if kind == 2:
                    for j in range(ng):
                        pb[j] += bh[j]
                    _gru_row(xp[b, t], pb, h[b], gates[tg, b], hhs[tg, b])
                elif kind == 1:
                    _lstm_fwd_row(pb, xp[b, t], c[b], h[b], gates[tg, b])
                else:
                    xb = xp[b, t]
                    for j in range(ng):
                        pb[j] += xb[j]
                    _simple_row(pb, h[b], relu)
                if use_rm:
                    for k in range(nh):
                        hr[b, k] = h[b, k] * rm[b, k]
                else:
                    for k in range(nh):
                        hr[b, k] = h[b, k]
                if not seq:
                    for k in range(nh):
                        last[b, k] = h[b, k]
            if keep:
                for k in range(nh):
                    hs[t + 1, b, k] = h[b, k]
                if kind == 1:
                    for k in range(nh):
                        cs[t + 1, b, k] = c[b, k]
            if seq:
                for k in range(nh):
                    y[b, t, k] = h[b, k] if real else 0.0


# ------------------------------------------------------------------------------ backward
@njit(inline="always", fastmath=True)
def _take_q(dh, q, rm, use_rm, add):
    """``dh (+)= q * rm`` (one sequence): the recurrent GEMM's share of ``dH_{t-1}``."""
    for k in range(dh.shape[0]):
        v = q[k] * rm[k] if use_rm else q[k]
        dh[k] = dh[k] + v if add else v


@njit(**_OPTS)
def rnn_bwd(kind, hs, cs, gates, hhs, w, mask, rm, use_rm, relu, dy, seq, dlast, dh,
            dc, dxp, dhn):
    """BPTT of :func:`rnn_fwd` (``hs``/``cs``/``gates``/``hhs`` time-major as it saved them).
    ``dh``/``dc`` hold the gradients of the final state on entry and of the initial state on
    exit. Writes ``dxp`` (B,T,G*H) and, for GRU, ``dhn`` (B,T,H) = the candidate block of
    ``dhp`` (``dn_pre * r``)."""
    nb, nh = hs.shape[1], hs.shape[2]
    nt = hs.shape[0] - 1
    ng = w.shape[1]
    gru = kind == 2
    dz = np.zeros((nb, ng) if gru else (1, 1), hs.dtype)  # GRU: dhp of the step
    gh = np.empty((nb, nh), hs.dtype)
    q = np.empty((nb, nh), hs.dtype)
    tc = np.empty((nb, nh), hs.dtype)
    tl = np.empty(nb, np.int64)
    for b in range(nb):
        tl[b] = _last_real(mask, b)
    for t in range(nt - 1, -1, -1):
        for b in prange(nb):
            if t < nt - 1 and mask[b, t + 1]:
                _take_q(dh[b], q[b], rm[b], use_rm, gru)
            if not mask[b, t]:
                for j in range(ng):
                    dxp[b, t, j] = 0.0
                if gru:
                    for j in range(ng):
                        dz[b, j] = 0.0
                    for j in range(nh):
                        dhn[b, t, j] = 0.0
                continue
            ghb = gh[b]
            for k in range(nh):
                ghb[k] = dh[b, k]
            if seq:
                for k in range(nh):
                    ghb[k] += dy[b, t, k]
            if t == tl[b]:
                for k in range(nh):
                    ghb[k] += dlast[b, k]
            if kind == 0:
                _simple_row_bwd(ghb, hs[t + 1, b], dxp[b, t], relu)
            elif kind == 1:
                _lstm_bwd_row(ghb, gates[t, b], cs[t + 1, b], cs[t, b], dc[b], dxp[b, t], tc[b])
            else:
                _gru_row_bwd(ghb, gates[t, b], hhs[t, b], hs[t, b], dz[b], dxp[b, t, 2 * nh:],
                             dh[b])
                for j in range(2 * nh):
                    dxp[b, t, j] = dz[b, j]
                for j in range(nh):
                    dhn[b, t, j] = dz[b, 2 * nh + j]
        if gru:
            gemm(dz, w, q, False, True)
        else:
            gemm(dxp[:, t], w, q, False, True)
    for b in prange(nb):
        if mask[b, 0]:
            _take_q(dh[b], q[b], rm[b], use_rm, gru)


# ------------------------------------------------------------------------------ torch glue
_KIND = {"simple": 0, "lstm": 1, "gru": 2}


def _np(t):
    return t.detach().numpy()


def _run(kernel, *args):
    """Run a kernel with Numba's thread count following torch's (see
    :func:`.numba_cpu.run_threaded`)."""
    return run_threaded(kernel, *args)


def _use_rm(rm) -> bool:
    return bool((rm != 1).any())


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """Run :func:`rnn_fwd` on torch tensors; returns ``(y, h_T, c_T, saved)``. With
    ``keep=False`` (no backward will run) neither states nor gates are kept per step."""
    import torch

    nb, nt, nh = xp.shape[0], xp.shape[1], h0.shape[1]
    kw = {"dtype": xp.dtype}
    k = _KIND[kind]
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
    _run(rnn_fwd, k, _np(xp), _np(h), _np(c), _np(w), _np(bh), _np(mask), _np(rm), _use_rm(rm),
         relu, seq, _np(hs), _np(cs), _np(gates), _np(hhs), _np(y), _np(last))
    c_t = c if k == 1 else torch.empty((0, 0), **kw)
    return (y if seq else last), h, c_t, (hs, cs, gates, hhs)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """Run :func:`rnn_bwd`; returns ``(dxp, dW_h, db_h, dh0, dc0)`` as torch tensors, with
    ``dW_h = sum_{b,t} hr_{t-1}^T dhp_t`` as one GEMM over all steps."""
    import torch

    hs, cs, gates, hhs = saved
    nb, nh = hs.shape[1], hs.shape[2]
    nt = hs.shape[0] - 1
    ng = w.shape[1]
    k = _KIND[kind]
    kw = {"dtype": hs.dtype}
    dxp = torch.empty((nb, nt, ng), **kw)
    dhn = torch.empty((nb, nt, nh) if k == 2 else (1, 1, 1), **kw)
    dh = dh_t.clone()
    dc = dc_t.clone() if k == 1 else torch.empty((1, 1), **kw)
    dt = hs.numpy().dtype
    if seq:
        dseq, dlast = _np(dy), np.zeros((nb, nh), dt)
    else:
        dseq, dlast = np.zeros((1, 1, 1), dt), _np(dy)
    use_rm = _use_rm(rm)
    _run(rnn_bwd, k, _np(hs), _np(cs), _np(gates), _np(hhs), _np(w),
         _np(mask), _np(rm), use_rm, relu, dseq, seq, dlast, _np(dh), _np(dc), _np(dxp),
         _np(dhn))
    hprev = torch.empty((nb, nt, nh), **kw)  # hr_{t-1} batch-major, as dxp's rows
    if use_rm:
        torch.mul(hs[:-1].transpose(0, 1), rm.unsqueeze(1), out=hprev)
    else:
        hprev.copy_(hs[:-1].transpose(0, 1))
    hp2 = hprev.reshape(-1, nh).T
    dx2 = dxp.reshape(-1, ng)
    if k == 2:
        dn2 = dhn.reshape(-1, nh)
        dw = torch.cat([hp2 @ dx2[:, : 2 * nh], hp2 @ dn2], dim=1)
        dbh = torch.cat([dx2[:, : 2 * nh].sum(0), dn2.sum(0)])
    else:
        dw = hp2 @ dx2
        dbh = torch.zeros(ng, **kw)  # no recurrent bias: not a parameter
    return dxp, dw, dbh, dh, (dc if k == 1 else None)
