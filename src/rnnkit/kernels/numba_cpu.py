"""Fused CPU recurrences for small layers: the whole time loop, forward and backward, in one
compiled call each, parallel over the batch (Numba ``prange``).

Each kernel runs, per sequence ``b`` (independent of the others, hence the parallel loop)::

    for t in 0 .. T-1:                          # processing order
        hr = h_{t-1} * rm                       # rm: recurrent-dropout mask (ones if none)
        if m_t:  s_t = cell(xp_t, hr, s_{t-1});  y_t = h_t
        else:    s_t = s_{t-1};                  y_t = 0
    last = h at the last real step (0 if none)

with the cells of :mod:`rnnkit.cells` (``xp_t = x_t W_x + b`` is computed outside, in one
GEMM). The backward kernels run the same loop in reverse (BPTT) and return the gradient of
the loss with respect to ``xp``, ``s_0`` and ``W_h`` (and ``b_h``): with ``dhp`` the gradient
of the recurrent pre-activation ``hr W_h (+ b_h)``, ``dW_h = sum_{b,t} hr_{t-1}^T dhp_t``,
accumulated per chunk of sequences and summed at the end. For SimpleRNN and LSTM
``dhp == dxp``; for GRU they differ in the candidate block (``dxp_n = dn_pre``,
``dhp_n = dn_pre * r``).

Saved for the backward pass: the states after every step (``hs``, and ``cs`` for LSTM) and
the post-activation gates (LSTM ``i, f, g, o``; GRU ``z, r, n`` and ``hh``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

# fused multiply-add and reassociated sums (vectorised dot products); no finite-math flags
_FM = {"contract", "reassoc", "nsz"}
# error_model="numpy": no Python ZeroDivisionError branch, so divisions vectorise
_OPTS = {"cache": True, "parallel": True, "fastmath": _FM, "nogil": True,
         "error_model": "numpy"}


_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
           4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
           4.89352518554385e-03)


def ftanh(x):
    """tanh as a rational function ``x P(x^2) / Q(x^2)`` on ``|x| <= 7.905`` (the float32
    approximation of Eigen/XLA; max abs error 3e-7): branch- and call-free, so loops over
    units vectorise. Constants in the argument's precision (float32 math for float32)."""
    return np.tanh(x)


@overload(ftanh, inline="always", fastmath=_FM)
def _ftanh_impl(x):
    ty = np.float32 if x == types.float32 else np.float64
    p0, p1, p2, p3, p4, p5, p6 = (ty(v) for v in _TANH_P)
    q0, q1, q2, q3 = (ty(v) for v in _TANH_Q)
    lim = ty(7.90531110763549805)

    def impl(x):
        x = min(max(x, -lim), lim)
        x2 = x * x
        p = x2 * p0 + p1
        p = x2 * p + p2
        p = x2 * p + p3
        p = x2 * p + p4
        p = x2 * p + p5
        p = x2 * p + p6
        q = x2 * q0 + q1
        q = x2 * q + q2
        q = x2 * q + q3
        return x * p / q

    return impl


def fsigmoid(x):
    """``sigmoid(x) = (1 + tanh(x/2)) / 2`` with :func:`ftanh`."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@overload(fsigmoid, inline="always", fastmath=_FM)
def _fsigmoid_impl(x):
    half = np.float32(0.5) if x == types.float32 else 0.5

    def impl(x):
        return half + half * ftanh(half * x)

    return impl


@njit(inline="always")
def _last_real(mask, b):
    for t in range(mask.shape[1] - 1, -1, -1):
        if mask[b, t]:
            return t
    return -1


@njit(inline="always", fastmath=_FM)
def _times_wt(d, wt, rm, dh, add):
    """``dh (+)= (d @ W^T) * rm`` with ``wt = W^T`` (G*H, H): inner loop over units."""
    nh = dh.shape[0]
    if not add:
        for k in range(nh):
            dh[k] = 0.0
    for j in range(wt.shape[0]):
        dj = d[j]
        for k in range(nh):
            dh[k] += dj * wt[j, k] * rm[k]


@njit(inline="always", fastmath=_FM)
def _accum_dw(dw, db, hs, h0, rm, b, t, d):
    """``dW_h += (h_{t-1} * rm)^T d``, ``db_h += d`` for one sequence and step."""
    for k in range(dw.shape[0]):
        hk = (hs[b, t - 1, k] if t > 0 else h0[b, k]) * rm[b, k]
        for j in range(d.shape[0]):
            dw[k, j] += hk * d[j]
    for j in range(d.shape[0]):
        db[j] += d[j]


@njit(inline="always")
def _reduce(dwp, dbp, dw, dbh):
    """Sum the per-chunk partial gradients (chunks run in parallel, so no races)."""
    dw[:] = 0.0
    dbh[:] = 0.0
    for c in range(dwp.shape[0]):
        dw += dwp[c]
        dbh += dbp[c]


# ---------------------------------------------------------------------------- SimpleRNN
@njit(**_OPTS)
def simple_fwd(xp, h0, w, mask, rm, relu, seq, hs, y, last):
    """``h_t = act(xp_t + hr W)``; writes hs (B,T,H), y (B,T,H) if seq, last (B,H)."""
    nb, nt, nh = hs.shape
    for b in prange(nb):
        h = h0[b].copy()
        hr = np.empty(nh, hs.dtype)
        a = np.empty(nh, hs.dtype)
        for j in range(nh):
            last[b, j] = 0.0
        for t in range(nt):
            if mask[b, t]:
                for k in range(nh):
                    hr[k] = h[k] * rm[b, k]
                for j in range(nh):
                    a[j] = xp[b, t, j]
                for k in range(nh):
                    hk = hr[k]
                    for j in range(nh):
                        a[j] += hk * w[k, j]
                for j in range(nh):
                    h[j] = max(a[j], 0.0) if relu else ftanh(a[j])
                for j in range(nh):
                    last[b, j] = h[j]
                    if seq:
                        y[b, t, j] = h[j]
            elif seq:
                for j in range(nh):
                    y[b, t, j] = 0.0
            for j in range(nh):
                hs[b, t, j] = h[j]


@njit(**_OPTS)
def simple_bwd(hs, h0, wt, mask, rm, relu, dy, seq, dlast, dhT, dxp, dh0, dwp, dbp, dw, dbh):
    """BPTT of :func:`simple_fwd`; writes dxp (B,T,H), dh0 (B,H), dW_h (dw); ``dwp``/``dbp``
    are per-chunk scratch (chunks of sequences run in parallel)."""
    nb, nt, nh = hs.shape
    nc = dwp.shape[0]
    for c in prange(nc):
        for b in range(c * nb // nc, (c + 1) * nb // nc):
            dh = dhT[b].copy()
            da = np.empty(nh, hs.dtype)
            tl = _last_real(mask, b)
            for t in range(nt - 1, -1, -1):
                if not mask[b, t]:
                    for j in range(nh):
                        dxp[b, t, j] = 0.0
                    continue
                for j in range(nh):
                    g = dh[j]
                    if seq:
                        g += dy[b, t, j]
                    if t == tl:
                        g += dlast[b, j]
                    h = hs[b, t, j]
                    d = (1.0 if h > 0.0 else 0.0) if relu else 1.0 - h * h
                    da[j] = g * d
                    dxp[b, t, j] = da[j]
                _times_wt(da, wt, rm[b], dh, False)
                _accum_dw(dwp[c], dbp[c], hs, h0, rm, b, t, da)
            for j in range(nh):
                dh0[b, j] = dh[j]
    _reduce(dwp, dbp, dw, dbh)


# ---------------------------------------------------------------------------- LSTM
@njit(**_OPTS)
def lstm_fwd(xp, h0, c0, w, mask, rm, seq, hs, cs, gates, y, last):
    """``[i,f,g,o] = xp_t + hr W``; ``c = f c + i g``; ``h = o tanh(c)``; saves gates."""
    nb, nt, nh = hs.shape
    for b in prange(nb):
        h = h0[b].copy()
        c = c0[b].copy()
        hr = np.empty(nh, hs.dtype)
        z = np.empty(4 * nh, hs.dtype)
        for j in range(nh):
            last[b, j] = 0.0
        for t in range(nt):
            if mask[b, t]:
                for k in range(nh):
                    hr[k] = h[k] * rm[b, k]
                for j in range(4 * nh):
                    z[j] = xp[b, t, j]
                for k in range(nh):
                    hk = hr[k]
                    for j in range(4 * nh):
                        z[j] += hk * w[k, j]
                for j in range(nh):
                    gi = fsigmoid(z[j])
                    gf = fsigmoid(z[nh + j])
                    gg = ftanh(z[2 * nh + j])
                    go = fsigmoid(z[3 * nh + j])
                    c[j] = gf * c[j] + gi * gg
                    h[j] = go * ftanh(c[j])
                    gates[b, t, j] = gi
                    gates[b, t, nh + j] = gf
                    gates[b, t, 2 * nh + j] = gg
                    gates[b, t, 3 * nh + j] = go
                    last[b, j] = h[j]
                    if seq:
                        y[b, t, j] = h[j]
            elif seq:
                for j in range(nh):
                    y[b, t, j] = 0.0
            for j in range(nh):
                hs[b, t, j] = h[j]
                cs[b, t, j] = c[j]


@njit(**_OPTS)
def lstm_bwd(hs, h0, cs, c0, gates, wt, mask, rm, dy, seq, dlast, dhT, dcT, dxp, dh0, dc0,
             dwp, dbp, dw, dbh):
    """BPTT of :func:`lstm_fwd`; writes dxp (B,T,4H), dh0 and dc0 (B,H), dW_h (dw)."""
    nb, nt, nh = cs.shape
    nc = dwp.shape[0]
    for c in prange(nc):
        for b in range(c * nb // nc, (c + 1) * nb // nc):
            dh = dhT[b].copy()
            dc = dcT[b].copy()
            dz = np.empty(4 * nh, cs.dtype)
            tl = _last_real(mask, b)
            for t in range(nt - 1, -1, -1):
                if not mask[b, t]:
                    for j in range(4 * nh):
                        dxp[b, t, j] = 0.0
                    continue
                for j in range(nh):
                    g = dh[j]
                    if seq:
                        g += dy[b, t, j]
                    if t == tl:
                        g += dlast[b, j]
                    gi = gates[b, t, j]
                    gf = gates[b, t, nh + j]
                    gg = gates[b, t, 2 * nh + j]
                    go = gates[b, t, 3 * nh + j]
                    cp = cs[b, t - 1, j] if t > 0 else c0[b, j]
                    tc = ftanh(cs[b, t, j])
                    dct = dc[j] + g * go * (1.0 - tc * tc)
                    dz[j] = dct * gg * gi * (1.0 - gi)
                    dz[nh + j] = dct * cp * gf * (1.0 - gf)
                    dz[2 * nh + j] = dct * gi * (1.0 - gg * gg)
                    dz[3 * nh + j] = g * tc * go * (1.0 - go)
                    dc[j] = dct * gf
                for j in range(4 * nh):
                    dxp[b, t, j] = dz[j]
                _times_wt(dz, wt, rm[b], dh, False)
                _accum_dw(dwp[c], dbp[c], hs, h0, rm, b, t, dz)
            for j in range(nh):
                dh0[b, j] = dh[j]
                dc0[b, j] = dc[j]
    _reduce(dwp, dbp, dw, dbh)


# ---------------------------------------------------------------------------- GRU
@njit(**_OPTS)
def gru_fwd(xp, h0, w, bh, mask, rm, seq, hs, gates, hhs, y, last):
    """``[hz,hr,hh] = hr W + b_h``; z, r = sigmoid; ``n = tanh(xh + r hh)``;
    ``h = z h + (1-z) n``; saves z, r, n in gates and hh in hhs."""
    nb, nt, nh = hs.shape
    for b in prange(nb):
        h = h0[b].copy()
        hr = np.empty(nh, hs.dtype)
        p = np.empty(3 * nh, hs.dtype)
        for j in range(nh):
            last[b, j] = 0.0
        for t in range(nt):
            if mask[b, t]:
                for k in range(nh):
                    hr[k] = h[k] * rm[b, k]
                for j in range(3 * nh):
                    p[j] = bh[j]
                for k in range(nh):
                    hk = hr[k]
                    for j in range(3 * nh):
                        p[j] += hk * w[k, j]
                for j in range(nh):
                    z = fsigmoid(xp[b, t, j] + p[j])
                    r = fsigmoid(xp[b, t, nh + j] + p[nh + j])
                    n = ftanh(xp[b, t, 2 * nh + j] + r * p[2 * nh + j])
                    h[j] = z * h[j] + (1.0 - z) * n
                    gates[b, t, j] = z
                    gates[b, t, nh + j] = r
                    gates[b, t, 2 * nh + j] = n
                    hhs[b, t, j] = p[2 * nh + j]
                    last[b, j] = h[j]
                    if seq:
                        y[b, t, j] = h[j]
            elif seq:
                for j in range(nh):
                    y[b, t, j] = 0.0
            for j in range(nh):
                hs[b, t, j] = h[j]


@njit(**_OPTS)
def gru_bwd(hs, h0, gates, hhs, wt, mask, rm, dy, seq, dlast, dhT, dxp, dh0, dwp, dbp, dw,
            dbh):
    """BPTT of :func:`gru_fwd`; writes dxp (B,T,3H), dh0 (B,H), dW_h (dw) and b_h (dbh)."""
    nb, nt, nh = hs.shape
    nc = dwp.shape[0]
    for c in prange(nc):
        for b in range(c * nb // nc, (c + 1) * nb // nc):
            dh = dhT[b].copy()
            d = np.empty(3 * nh, hs.dtype)
            tl = _last_real(mask, b)
            for t in range(nt - 1, -1, -1):
                if not mask[b, t]:
                    for j in range(3 * nh):
                        dxp[b, t, j] = 0.0
                    continue
                for j in range(nh):
                    g = dh[j]
                    if seq:
                        g += dy[b, t, j]
                    if t == tl:
                        g += dlast[b, j]
                    z = gates[b, t, j]
                    r = gates[b, t, nh + j]
                    n = gates[b, t, 2 * nh + j]
                    hp = hs[b, t - 1, j] if t > 0 else h0[b, j]
                    dn = g * (1.0 - z) * (1.0 - n * n)
                    d[j] = g * (hp - n) * z * (1.0 - z)
                    d[nh + j] = dn * hhs[b, t, j] * r * (1.0 - r)
                    d[2 * nh + j] = dn * r
                    dxp[b, t, j] = d[j]
                    dxp[b, t, nh + j] = d[nh + j]
                    dxp[b, t, 2 * nh + j] = dn
                    dh[j] = g * z
                _times_wt(d, wt, rm[b], dh, True)
                _accum_dw(dwp[c], dbp[c], hs, h0, rm, b, t, d)
            for j in range(nh):
                dh0[b, j] = dh[j]
    _reduce(dwp, dbp, dw, dbh)


# ---------------------------------------------------------------------------- torch glue
def _np(t):
    return t.detach().numpy()


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq):
    """Run the forward kernel on torch tensors; returns ``(y, h_T, c_T, saved)``."""
    import torch

    nb, nt, nh = xp.shape[0], xp.shape[1], h0.shape[1]
    kw = {"dtype": xp.dtype}
    hs = torch.empty((nb, nt, nh), **kw)
    y = torch.empty((nb, nt, nh) if seq else (1, 1, 1), **kw)
    last = torch.empty((nb, nh), **kw)
    a = (_np(xp), _np(h0))
    if kind == "simple":
        simple_fwd(*a, _np(w), _np(mask), _np(rm), relu, seq, _np(hs), _np(y), _np(last))
        saved, c_t = (hs,), torch.empty((0, 0), **kw)
    elif kind == "lstm":
        cs = torch.empty((nb, nt, nh), **kw)
        gates = torch.empty((nb, nt, 4 * nh), **kw)
        lstm_fwd(*a, _np(c0), _np(w), _np(mask), _np(rm), seq, _np(hs), _np(cs), _np(gates),
                 _np(y), _np(last))
        saved, c_t = (hs, cs, gates), cs[:, -1].clone()
    else:
        gates = torch.empty((nb, nt, 3 * nh), **kw)
        hhs = torch.empty((nb, nt, nh), **kw)
        gru_fwd(*a, _np(w), _np(bh), _np(mask), _np(rm), seq, _np(hs), _np(gates), _np(hhs),
                _np(y), _np(last))
        saved, c_t = (hs, gates, hhs), torch.empty((0, 0), **kw)
    return (y if seq else last), hs[:, -1].clone(), c_t, saved


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """Run the backward kernel; returns ``(dxp, dW_h, db_h, dh0, dc0)`` as torch tensors."""
    import numba
    import torch

    hs = saved[0]
    nb, nt, nh = hs.shape
    ng = w.shape[1]
    kw = {"dtype": hs.dtype}
    dxp = torch.empty((nb, nt, ng), **kw)
    dh0 = torch.empty((nb, nh), **kw)
    dw = torch.empty((nh, ng), **kw)
    dbh = torch.empty((ng,), **kw)
    dt = hs.numpy().dtype
    nc = max(1, min(nb, numba.get_num_threads()))
    scratch = (np.zeros((nc, nh, ng), dt), np.zeros((nc, ng), dt), _np(dw), _np(dbh))
    wt = np.ascontiguousarray(_np(w).T)
    if seq:  # gradient of every output; none for the "last output"
        dseq, dlast = _np(dy), np.zeros((nb, nh), dt)
    else:
        dseq, dlast = np.zeros((1, 1, 1), dt), _np(dy)
    common = (_np(mask), _np(rm))
    if kind == "simple":
        simple_bwd(_np(hs), _np(h0), wt, *common, relu, dseq, seq, dlast, _np(dh_t),
                   _np(dxp), _np(dh0), *scratch)
        return dxp, dw, dbh, dh0, None
    if kind == "lstm":
        _, cs, gates = saved
        dc0 = torch.empty((nb, nh), **kw)
        lstm_bwd(_np(hs), _np(h0), _np(cs), _np(c0), _np(gates), wt, *common, dseq, seq,
                 dlast, _np(dh_t), _np(dc_t), _np(dxp), _np(dh0), _np(dc0), *scratch)
        return dxp, dw, dbh, dh0, dc0
    _, gates, hhs = saved
    gru_bwd(_np(hs), _np(h0), _np(gates), _np(hhs), wt, *common, dseq, seq, dlast, _np(dh_t),
            _np(dxp), _np(dh0), *scratch)
    return dxp, dw, dbh, dh0, None
