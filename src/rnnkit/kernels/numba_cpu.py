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


# ---------------------------------------------------------------------------- rows
# One sequence, one step. Each loop writes one array (few alias checks), so LLVM vectorises
# it. ``z`` is the pre-activation (XP[b,t] + P[b]); state rows are updated in place.
@njit(inline="always", fastmath=_FM)
def _simple_row(z, h, relu):
    for j in range(h.shape[0]):
        h[j] = max(z[j], 0.0) if relu else ftanh(z[j])


@njit(inline="always", fastmath=_FM)
def _lstm_row(z, c, h, g):
    """g <- [sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)]; c <- f c + i g; h <- o tanh(c)."""
    nh = h.shape[0]
    for j in range(2 * nh):
        g[j] = fsigmoid(z[j])
    for j in range(2 * nh, 3 * nh):
        g[j] = ftanh(z[j])
    for j in range(3 * nh, 4 * nh):
        g[j] = fsigmoid(z[j])
    for j in range(nh):
        c[j] = g[nh + j] * c[j] + g[j] * g[2 * nh + j]
    for j in range(nh):
        h[j] = g[3 * nh + j] * ftanh(c[j])


@njit(inline="always", fastmath=_FM)
def _gru_row(x, p, h, g, hh):
    """``p`` includes b_h. g <- [z, r, n]; hh <- recurrent candidate part; h updated."""
    nh = h.shape[0]
    for j in range(2 * nh):
        g[j] = fsigmoid(x[j] + p[j])
    for j in range(nh):
        hh[j] = p[2 * nh + j]
    for j in range(nh):
        g[2 * nh + j] = ftanh(x[2 * nh + j] + g[nh + j] * hh[j])
    for j in range(nh):
        h[j] = g[j] * h[j] + (1.0 - g[j]) * g[2 * nh + j]


@njit(inline="always", fastmath=_FM)
def _simple_row_bwd(gh, h, dz, relu):
    for j in range(h.shape[0]):
        hv = h[j]
        dz[j] = gh[j] * ((1.0 if hv > 0.0 else 0.0) if relu else 1.0 - hv * hv)


@njit(inline="always", fastmath=_FM)
def _lstm_row_bwd(gh, g, c, cp, dc, dz, tc):
    """dz <- d(pre-activations); dc <- dc_{t-1}; tc is scratch (nh)."""
    nh = gh.shape[0]
    for j in range(nh):
        tc[j] = ftanh(c[j])
    for j in range(nh):
        go = g[3 * nh + j]
        dz[3 * nh + j] = gh[j] * tc[j] * go * (1.0 - go)
    for j in range(nh):
        dc[j] += gh[j] * g[3 * nh + j] * (1.0 - tc[j] * tc[j])
    for j in range(nh):
        gi, gf, gg = g[j], g[nh + j], g[2 * nh + j]
        dz[j] = dc[j] * gg * gi * (1.0 - gi)
        dz[nh + j] = dc[j] * cp[j] * gf * (1.0 - gf)
        dz[2 * nh + j] = dc[j] * gi * (1.0 - gg * gg)
    for j in range(nh):
        dc[j] *= g[nh + j]


@njit(inline="always", fastmath=_FM)
def _gru_row_bwd(gh, g, hh, hp, dz, dxn, dh):
    """``dz`` gets dhp (z, r, and ``dn_pre * r``), ``dxn`` the candidate block of dxp."""
    nh = gh.shape[0]
    for j in range(nh):
        n = g[2 * nh + j]
        dxn[j] = gh[j] * (1.0 - g[j]) * (1.0 - n * n)
    for j in range(nh):
        z, r = g[j], g[nh + j]
        dz[j] = gh[j] * (hp[j] - g[2 * nh + j]) * z * (1.0 - z)
        dz[nh + j] = dxn[j] * hh[j] * r * (1.0 - r)
        dz[2 * nh + j] = dxn[j] * r
    for j in range(nh):
        dh[j] = gh[j] * g[j]


@njit(inline="always", fastmath=_FM)
def _recurrent(z, hr, w):
    """``z += hr @ W`` for one sequence (inner loop over the gate columns)."""
    for k in range(hr.shape[0]):
        hk = hr[k]
        for j in range(z.shape[0]):
            z[j] += hk * w[k, j]


@njit(inline="always", fastmath=_FM)
def _grad_out(gh, dh, dy, dlast, b, t, seq, tl):
    """Gradient reaching ``h_t``: from the next step, the output y_t and the last output."""
    for j in range(gh.shape[0]):
        gh[j] = dh[j]
    if seq:
        for j in range(gh.shape[0]):
            gh[j] += dy[b, t, j]
    if t == tl:
        for j in range(gh.shape[0]):
            gh[j] += dlast[b, j]


# ---------------------------------------------------------------------------- forward
@njit(**_OPTS)
def rnn_fwd(kind, xp, h0, c0, w, bh, mask, rm, relu, seq, hs, cs, gates, hhs, y, last):
    """kind 0 SimpleRNN, 1 LSTM, 2 GRU; per sequence (parallel), the whole time loop.
    Writes hs (B,T,H), and cs (LSTM), gates (LSTM/GRU), hhs (GRU); y (B,T,H) if seq."""
    nb, nt, nh = hs.shape
    ng = w.shape[1]
    for b in prange(nb):
        h = h0[b].copy()
        c = c0[b].copy()
        hr = np.empty(nh, hs.dtype)
        z = np.empty(ng, hs.dtype)
        for j in range(nh):
            last[b, j] = 0.0
        for t in range(nt):
            tg = t if gates.shape[1] == nt else 0  # inference: one scratch row
            real = mask[b, t] != 0
            if real:
                for k in range(nh):
                    hr[k] = h[k] * rm[b, k]
                for j in range(ng):
                    z[j] = bh[j] if kind == 2 else xp[b, t, j]
                _recurrent(z, hr, w)
                if kind == 0:
                    _simple_row(z, h, relu)
                elif kind == 1:
                    _lstm_row(z, c, h, gates[b, tg])
                else:
                    _gru_row(xp[b, t], z, h, gates[b, tg], hhs[b, tg])
                for j in range(nh):
                    last[b, j] = h[j]
            for j in range(nh):
                hs[b, t, j] = h[j]
            if kind == 1:
                for j in range(nh):
                    cs[b, t, j] = c[j]
            if seq:
                for j in range(nh):
                    y[b, t, j] = h[j] if real else 0.0


# ---------------------------------------------------------------------------- backward
@njit(**_OPTS)
def rnn_bwd(kind, hs, h0, cs, c0, gates, hhs, wt, mask, rm, relu, dy, seq, dlast, dhT, dcT,
            dxp, dh0, dc0, dwp, dbp, dw, dbh):
    """BPTT of :func:`rnn_fwd`. ``wt = W_h^T``. Writes dxp (B,T,G*H), dh0, dc0 (B,H), dW_h
    (dw) and db_h (dbh, GRU); ``dwp``/``dbp`` are per-chunk scratch (chunks of sequences
    run in parallel, their partial dW_h are summed at the end)."""
    nb, nt, nh = hs.shape
    ng = wt.shape[0]
    nc = dwp.shape[0]
    for ch in prange(nc):
        gh = np.empty(nh, hs.dtype)
        tc = np.empty(nh, hs.dtype)
        dz = np.empty(ng, hs.dtype)
        for b in range(ch * nb // nc, (ch + 1) * nb // nc):
            dh = dhT[b].copy()
            dc = dcT[b].copy()
            tl = _last_real(mask, b)
            for t in range(nt - 1, -1, -1):
                if not mask[b, t]:
                    for j in range(ng):
                        dxp[b, t, j] = 0.0
                    continue
                _grad_out(gh, dh, dy, dlast, b, t, seq, tl)
                if kind == 0:
                    _simple_row_bwd(gh, hs[b, t], dz, relu)
                elif kind == 1:
                    cp = cs[b, t - 1] if t > 0 else c0[b]
                    _lstm_row_bwd(gh, gates[b, t], cs[b, t], cp, dc, dz, tc)
                else:
                    hp = hs[b, t - 1] if t > 0 else h0[b]
                    _gru_row_bwd(gh, gates[b, t], hhs[b, t], hp, dz, tc, dh)
                for j in range(ng):  # GRU: the candidate block of dxp is dn_pre (in tc)
                    dxp[b, t, j] = tc[j - 2 * nh] if kind == 2 and j >= 2 * nh else dz[j]
                _times_wt(dz, wt, rm[b], dh, kind == 2)
                _accum_dw(dwp[ch], dbp[ch], hs, h0, rm, b, t, dz)
            for j in range(nh):
                dh0[b, j] = dh[j]
                if kind == 1:
                    dc0[b, j] = dc[j]
    _reduce(dwp, dbp, dw, dbh)


# ---------------------------------------------------------------------------- torch glue
def _np(t):
    return t.detach().numpy()


_KIND = {"simple": 0, "lstm": 1, "gru": 2}


def run_forward(fwd, kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """Run the compiled forward ``fwd`` (this module's or the BLAS one, same signature) on
    torch tensors; returns ``(y, h_T, c_T, saved)``. With ``keep=False`` (no backward will
    run) the gate activations are not kept per step."""
    import torch

    nb, nt, nh = xp.shape[0], xp.shape[1], h0.shape[1]
    kw = {"dtype": xp.dtype}
    k = _KIND[kind]
    hs = torch.empty((nb, nt, nh), **kw)
    cs = torch.empty((nb, nt, nh) if k == 1 else (1, 1, 1), **kw)
    ntg = nt if keep else 1
    gates = torch.empty((nb, ntg, w.shape[1]) if k else (1, 1, 1), **kw)
    hhs = torch.empty((nb, ntg, nh) if k == 2 else (1, 1, 1), **kw)
    y = torch.empty((nb, nt, nh) if seq else (1, 1, 1), **kw)
    last = torch.empty((nb, nh), **kw)
    c0_ = c0 if k == 1 else torch.zeros((nb, nh), **kw)
    fwd(k, _np(xp), _np(h0), _np(c0_), _np(w), _np(bh), _np(mask), _np(rm), relu, seq,
        _np(hs), _np(cs), _np(gates), _np(hhs), _np(y), _np(last))
    c_t = cs[:, -1].clone() if k == 1 else torch.empty((0, 0), **kw)
    return (y if seq else last), hs[:, -1].clone(), c_t, (hs, cs, gates, hhs)


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """:func:`run_forward` with this module's :func:`rnn_fwd`."""
    return run_forward(rnn_fwd, kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """Run :func:`rnn_bwd`; returns ``(dxp, dW_h, db_h, dh0, dc0)`` as torch tensors."""
    import numba
    import torch

    hs, cs, gates, hhs = saved
    nb, nt, nh = hs.shape
    ng = w.shape[1]
    k = _KIND[kind]
    kw = {"dtype": hs.dtype}
    dxp = torch.empty((nb, nt, ng), **kw)
    dh0, dc0 = torch.empty((nb, nh), **kw), torch.empty((nb, nh), **kw)
    dw, dbh = torch.empty((nh, ng), **kw), torch.empty((ng,), **kw)
    dt = hs.numpy().dtype
    nc = max(1, min(nb, numba.get_num_threads()))
    if seq:  # gradient of every output; none for the "last output"
        dseq, dlast = _np(dy), np.zeros((nb, nh), dt)
    else:
        dseq, dlast = np.zeros((1, 1, 1), dt), _np(dy)
    c0_ = _np(c0) if k == 1 else np.zeros((nb, nh), dt)
    dc_t_ = _np(dc_t) if k == 1 else np.zeros((nb, nh), dt)
    rnn_bwd(k, _np(hs), _np(h0), _np(cs), c0_, _np(gates), _np(hhs),
            np.ascontiguousarray(_np(w).T), _np(mask), _np(rm), relu, dseq, seq, dlast,
            _np(dh_t), dc_t_, _np(dxp), _np(dh0), _np(dc0), np.zeros((nc, nh, ng), dt),
            np.zeros((nc, ng), dt), _np(dw), _np(dbh))
    return dxp, dw, dbh, dh0, (dc0 if k == 1 else None)
