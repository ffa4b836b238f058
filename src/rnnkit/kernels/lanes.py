"""Fused CPU recurrences with the batch in the vector lanes (the ``numba`` backend).

The whole time loop, forward and backward (BPTT), is one compiled Numba call each. Every
per-step array is stored ``(rows, batch)`` with the batch contiguous, so every inner loop runs
over sequences and LLVM puts 8 of them in one AVX register (small layers have too few units
to fill the lanes the other way round). The batch is split into one chunk per thread
(``prange``); chunks are independent.

Per step ``t`` (processing order) and sequence ``b``, with the cells of :mod:`rnnkit.cells`::

    hr   = h_{t-1} * rm                       rm: recurrent-dropout mask (ones if none)
    z    = xp_t + hr W_h                       xp_t = x_t W_x + b, computed outside
    SimpleRNN  h_t = act(z)
    LSTM       i,f,g,o = sig(z_i), sig(z_f), tanh(z_g), sig(z_o);  c_t = f c + i g;
               h_t = o tanh(c_t)
    GRU        z,r = sig(xp_z + p_z), sig(xp_r + p_r);  n = tanh(xp_n + r p_n);
               h_t = z h_{t-1} + (1 - z) n             with p = hr W_h + b_h
    masked step (m_t = 0): the state is carried, h_t = h_{t-1}, and y_t = 0

Layouts (``G`` = gates * units): ``xp (G, T, B)``; saved for BPTT ``hs (H, T, B)`` (states),
``hrp (H, T, B)`` (``hr`` of each step), ``cs`` (LSTM cells), ``gs (G, T, B)``
(post-activation gates) and ``hh (H, T, B)`` (GRU ``p_n``). The backward returns ``dxp`` and
``dhp``, the gradient of the recurrent pre-activation ``hr W_h (+ b_h)`` (equal to ``dxp``
except in GRU's candidate block, ``dhp_n = dxp_n * r``); then
``dW_h = hrp^T dhp`` over all steps and sequences is one GEMM, done by the caller.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .mkl import blas_threads_local, gemm_unchecked
from .numba_cpu import _FM, fsigmoid, ftanh, run_threaded, threads

_SER = {"cache": True, "fastmath": _FM, "nogil": True, "error_model": "numpy"}
_OPTS = {**_SER, "parallel": True}
LANES = 8  # float32 lanes of an AVX register: chunks are padded to a multiple of this
#: recurrent weights with at least this many entries (units x gates*units) take the per-step
#: products through BLAS (MKL, one thread per chunk: about 2x the compiled loop at 32 units);
#: smaller ones (SimpleRNN and GRU at 8 units) through the compiled loop, faster there
GEMM_MIN = 256


@njit(inline="always", fastmath=_FM)
def _matmul_lanes(acc, w, x):
    """``acc[g, :] += sum_k w[k, g] x[k, :]``  (``z += hr W``), lanes over sequences; ``k``
    in blocks of 4 (one load and store of ``acc`` per 4 FMAs: about 2x faster)."""
    n = acc.shape[1]
    nk = x.shape[0]
    k4 = nk - nk % 4
    for g in range(acc.shape[0]):
        for k in range(0, k4, 4):
            w0, w1, w2, w3 = w[k, g], w[k + 1, g], w[k + 2, g], w[k + 3, g]
            for i in range(n):
                acc[g, i] += (w0 * x[k, i] + w1 * x[k + 1, i]
                              + w2 * x[k + 2, i] + w3 * x[k + 3, i])
        for k in range(k4, nk):
            wv = w[k, g]
            for i in range(n):
                acc[g, i] += wv * x[k, i]


@njit(inline="always", fastmath=_FM)
def _matmul_t_lanes(acc, w, d):
    """``acc[k, :] = sum_g w[k, g] d[g, :]``  (``dhr = dhp W^T``), ``g`` in blocks of 4."""
    n = acc.shape[1]
    ng = d.shape[0]
    g4 = ng - ng % 4
    for k in range(acc.shape[0]):
        for i in range(n):
            acc[k, i] = 0.0
        for g in range(0, g4, 4):
            w0, w1, w2, w3 = w[k, g], w[k, g + 1], w[k, g + 2], w[k, g + 3]
            for i in range(n):
                acc[k, i] += (w0 * d[g, i] + w1 * d[g + 1, i]
                              + w2 * d[g + 2, i] + w3 * d[g + 3, i])
        for g in range(g4, ng):
            wv = w[k, g]
            for i in range(n):
                acc[k, i] += wv * d[g, i]


# ``blas`` below is a constant in each inlined copy of a chunk (the drivers call the chunk
# once with True and once with False), so the loop-only copy is the code that ran before
# BLAS was added: a BLAS call is opaque to LLVM, which must assume it may write any array,
# and even one never taken could keep loads and stores around it from being optimised.
@njit(inline="always")
def _use_blas(w):
    return w.shape[0] * w.shape[1] >= GEMM_MIN


@njit(inline="always", fastmath=_FM)
def _rec(acc, w, x, blas):
    """``acc += W^T x`` (``z += hr W`` with the lanes as columns): BLAS or the loop."""
    if blas:
        gemm_unchecked(w, x, acc, True, False, 1.0, 1.0)
    else:
        _matmul_lanes(acc, w, x)


@njit(inline="always", fastmath=_FM)
def _rec_t(acc, w, d, blas):
    """``acc = W d`` (``dhr = dhp W^T``): BLAS or the loop."""
    if blas:
        gemm_unchecked(w, d, acc, False, False, 1.0, 0.0)
    else:
        _matmul_t_lanes(acc, w, d)


# Each loop below stores into as few arrays as possible (locals first, then plain copy loops
# into the chunk-major outputs): with many stored arrays LLVM cannot prove them disjoint and
# leaves the loop scalar (about 7x slower).
@njit(inline="always")
def _put(dst, c, t, src):
    """``dst[c, :, t, :] = src``."""
    for r in range(src.shape[0]):
        for i in range(src.shape[1]):
            dst[c, r, t, i] = src[r, i]


@njit(inline="always")
def _get(dst, src, c, t):
    """``dst = src[c, :, t, :]``."""
    for r in range(dst.shape[0]):
        for i in range(dst.shape[1]):
            dst[r, i] = src[c, r, t, i]


@njit(inline="always")
def _get_m(dst, src, c, t):
    """``dst = src[c, t, :]`` as floats (the step's mask)."""
    for i in range(dst.shape[0]):
        dst[i] = 1.0 if src[c, t, i] else 0.0


@njit(inline="always")
def _get0(dst, src, c):
    """``dst = src[c]`` for a (C, H, L) array."""
    for r in range(dst.shape[0]):
        for i in range(dst.shape[1]):
            dst[r, i] = src[c, r, i]


# ------------------------------------------------------------------------------- forward
@njit(inline="always", fastmath=_FM)
def _simple_step(z, h, m, relu):
    for k in range(h.shape[0]):
        for i in range(h.shape[1]):
            v = max(z[k, i], 0.0) if relu else ftanh(z[k, i])
            h[k, i] = v if m[i] != 0.0 else h[k, i]


@njit(inline="always", fastmath=_FM)
def _lstm_step(z, cc, h, m):
    """z (pre-activations) <- gates i, f, g, o; cc, h updated on real lanes."""
    nh = h.shape[0]
    for k in range(nh):  # two loops: one in place on z, one storing cc and h
        for i in range(h.shape[1]):
            z[k, i] = fsigmoid(z[k, i])
            z[nh + k, i] = fsigmoid(z[nh + k, i])
            z[2 * nh + k, i] = ftanh(z[2 * nh + k, i])
            z[3 * nh + k, i] = fsigmoid(z[3 * nh + k, i])
    for k in range(nh):
        for i in range(h.shape[1]):
            cn = z[nh + k, i] * cc[k, i] + z[k, i] * z[2 * nh + k, i]
            real = m[i] != 0.0
            cc[k, i] = cn if real else cc[k, i]
            h[k, i] = z[3 * nh + k, i] * ftanh(cn) if real else h[k, i]


@njit(inline="always", fastmath=_FM)
def _gru_step(x, p, h, m):
    """x (input pre-activations) <- gates z, r, n; p keeps p_n = hr W_hn + b_hn."""
    nh = h.shape[0]
    for k in range(nh):
        for i in range(h.shape[1]):
            gz = fsigmoid(x[k, i] + p[k, i])
            gr = fsigmoid(x[nh + k, i] + p[nh + k, i])
            gn = ftanh(x[2 * nh + k, i] + gr * p[2 * nh + k, i])
            x[k, i] = gz
            x[nh + k, i] = gr
            x[2 * nh + k, i] = gn
            h[k, i] = gz * h[k, i] + (1.0 - gz) * gn if m[i] != 0.0 else h[k, i]


@njit(inline="always", fastmath=_FM)
def step(kind, x, p, h, cc, hr, w, bh, m, relu, blas):
    """One forward step on a chunk's lanes (all ``(rows, L)``): ``x`` holds the step's
    input pre-activations ``xp_t`` and becomes ``z`` (SimpleRNN) or the post-activation
    gates (LSTM, GRU); ``h``, ``cc`` (LSTM cell) are updated on the lanes where ``m`` is 1;
    GRU: ``p`` gets ``hr W_h + b_h``. ``hr`` may be ``h`` itself (no recurrent dropout):
    it is read before ``h`` is written."""
    if kind == 2:
        for g in range(p.shape[0]):
            for i in range(p.shape[1]):
                p[g, i] = bh[g]
        _rec(p, w, hr, blas)
        _gru_step(x, p, h, m)
    else:
        _rec(x, w, hr, blas)
        if kind == 0:
            _simple_step(x, h, m, relu)
        else:
            _lstm_step(x, cc, h, m)


@njit(inline="always", fastmath=_FM)
def _fwd_chunk(c, kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last, blas):
    """Chunk ``c`` of :func:`fwd`. kind 0 SimpleRNN, 1 LSTM, 2 GRU. Chunk-major arrays
    (leading dimension: chunk ``c``,
    trailing: its ``L`` lanes): ``xp (C,G,T,L)``, ``h0, c0, rm (C,H,L)``, ``mask (C,T,L)``
    uint8; ``w (H,G)``, ``bh (G,)`` (GRU's recurrent bias). Writes ``hs (C,H,T,L)`` and
    ``last (C,H,L)`` (h at the last real step, 0 if none); ``hrp``, ``cs``, ``gs``, ``hh``
    with time extent T when kept for backward, else 1 (scratch). ``blas``: recurrent
    products through BLAS, single-threaded in this thread (see :data:`GEMM_MIN`)."""
    nc, ng, nt, n = xp.shape
    nh = w.shape[0]
    keep = hrp.shape[2] == nt
    h = np.empty((nh, n), hs.dtype)
    cc = np.zeros((nh, n), hs.dtype)
    hr = np.empty((nh, n), hs.dtype)
    x = np.empty((ng, n), hs.dtype)
    p = np.empty((ng, n), hs.dtype)
    lst = np.zeros((nh, n), hs.dtype)
    r = np.empty((nh, n), hs.dtype)
    m = np.empty(n, hs.dtype)
    old = blas_threads_local(1) if blas else 0
    for k in range(nh):
        for i in range(n):
            h[k, i] = h0[c, k, i]
            r[k, i] = rm[c, k, i]
            if kind == 1:
                cc[k, i] = c0[c, k, i]
    for t in range(nt):
        tg = t if keep else 0
        _get_m(m, mask, c, t)
        for k in range(nh):
            for i in range(n):
                hr[k, i] = h[k, i] * r[k, i]
        _put(hrp, c, tg, hr)
        _get(x, xp, c, t)
        step(kind, x, p, h, cc, hr, w, bh, m, relu, blas)
        if kind == 2:
            _put(hh, c, tg, p[2 * nh:])
            _put(gs, c, tg, x)
        elif kind == 1:
            _put(gs, c, tg, x)
            _put(cs, c, tg, cc)
        for k in range(nh):
            for i in range(n):
                lst[k, i] = h[k, i] if m[i] != 0.0 else lst[k, i]
        _put(hs, c, t, h)
    for k in range(nh):
        for i in range(n):
            last[c, k, i] = lst[k, i]
    if blas:
        blas_threads_local(old)


# ------------------------------------------------------------------------------- backward
@njit(inline="always", fastmath=_FM)
def _simple_back(gh, hv, m, relu, dz):
    for k in range(gh.shape[0]):
        for i in range(gh.shape[1]):
            h = hv[k, i]
            d = gh[k, i] * ((1.0 if h > 0.0 else 0.0) if relu else 1.0 - h * h)
            dz[k, i] = d * m[i]


@njit(inline="always", fastmath=_FM)
def _lstm_back(gh, g, cv, cp, m, dc, dz):
    """dz <- d(pre-activations) (0 on padded lanes); dc <- dc_{t-1}."""
    nh = gh.shape[0]
    for k in range(nh):
        for i in range(gh.shape[1]):
            gi, gf, gg, go = g[k, i], g[nh + k, i], g[2 * nh + k, i], g[3 * nh + k, i]
            tc = ftanh(cv[k, i])
            mi = m[i]
            dct = dc[k, i] + gh[k, i] * go * (1.0 - tc * tc)
            dz[k, i] = dct * gg * gi * (1.0 - gi) * mi
            dz[nh + k, i] = dct * cp[k, i] * gf * (1.0 - gf) * mi
            dz[2 * nh + k, i] = dct * gi * (1.0 - gg * gg) * mi
            dz[3 * nh + k, i] = gh[k, i] * tc * go * (1.0 - go) * mi
            dc[k, i] = dct * gf if mi != 0.0 else dc[k, i]


@njit(inline="always", fastmath=_FM)
def _gru_back(gh, g, hhv, hp, m, dx, dz):
    """dx <- d(input pre-activations), dz <- d(recurrent pre-activations) (0 if padded)."""
    nh = gh.shape[0]
    for k in range(nh):
        for i in range(gh.shape[1]):
            gz, gr, gn = g[k, i], g[nh + k, i], g[2 * nh + k, i]
            mi = m[i]
            dn = gh[k, i] * (1.0 - gz) * (1.0 - gn * gn) * mi
            d_z = gh[k, i] * (hp[k, i] - gn) * gz * (1.0 - gz) * mi
            d_r = dn * hhv[k, i] * gr * (1.0 - gr)
            dx[k, i] = d_z
            dx[nh + k, i] = d_r
            dx[2 * nh + k, i] = dn
            dz[k, i] = d_z
            dz[nh + k, i] = d_r
            dz[2 * nh + k, i] = dn * gr


@njit(inline="always", fastmath=_FM)
def _bwd_chunk(c, kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT, dcT,
               dxp, dhp, dh0, dc0, blas):
    """Chunk ``c`` of :func:`bwd`: BPTT of :func:`fwd` (same chunk-major layout).
    ``dys (C,H,T,L)`` is the gradient of every output (time extent 0 when only the last
    output is used: 1 would be ambiguous with T = 1), ``dlast (C,H,L)`` that of the last
    real output, ``dhT, dcT (C,H,L)`` of the final state. Writes ``dxp (C,G,T,L)``,
    ``dhp`` (GRU only; for SimpleRNN and LSTM it is ``dxp``) and ``dh0, dc0 (C,H,L)``."""
    nc, nh, nt, n = hs.shape
    ng = w.shape[1]
    seq = dys.shape[2] == nt
    dh = np.empty((nh, n), hs.dtype)
    dc = np.zeros((nh, n), hs.dtype)
    gh = np.empty((nh, n), hs.dtype)
    dx = np.empty((ng, n), hs.dtype)
    dz = np.empty((ng, n), hs.dtype)
    acc = np.empty((nh, n), hs.dtype)
    g = np.empty((ng, n), hs.dtype)
    hv = np.empty((nh, n), hs.dtype)
    hp = np.empty((nh, n), hs.dtype)
    aux = np.empty((nh, n), hs.dtype)
    r = np.empty((nh, n), hs.dtype)
    dl = np.empty((nh, n), hs.dtype)
    m = np.empty(n, hs.dtype)
    tl = np.full(n, -1, np.int64)
    old = blas_threads_local(1) if blas else 0
    for i in range(n):
        for t in range(nt - 1, -1, -1):
            if mask[c, t, i]:
                tl[i] = t
                break
    for k in range(nh):
        for i in range(n):
            dh[k, i] = dhT[c, k, i]
            r[k, i] = rm[c, k, i]
            dl[k, i] = dlast[c, k, i]
            if kind == 1:
                dc[k, i] = dcT[c, k, i]
    for t in range(nt - 1, -1, -1):
        _get_m(m, mask, c, t)
        if seq:
            _get(gh, dys, c, t)
        for k in range(nh):
            for i in range(n):
                v = dh[k, i] + (gh[k, i] * m[i] if seq else 0.0)
                gh[k, i] = v + (dl[k, i] if t == tl[i] else 0.0)
        if kind == 0:
            _get(hv, hs, c, t)
            _simple_back(gh, hv, m, relu, dz)
            _put(dxp, c, t, dz)
        elif kind == 1:
            _get(g, gs, c, t)
            _get(hv, cs, c, t)
            if t > 0:
                _get(hp, cs, c, t - 1)
            else:
                _get0(hp, c0, c)
            _lstm_back(gh, g, hv, hp, m, dc, dz)
            _put(dxp, c, t, dz)
        else:
            _get(g, gs, c, t)
            _get(aux, hh, c, t)
            if t > 0:
                _get(hp, hs, c, t - 1)
            else:
                _get0(hp, h0, c)
            _gru_back(gh, g, aux, hp, m, dx, dz)
            _put(dxp, c, t, dx)
            _put(dhp, c, t, dz)
        _rec_t(acc, w, dz, blas)
        for k in range(nh):
            for i in range(n):
                carry = gh[k, i] * g[k, i] if kind == 2 else 0.0
                real = acc[k, i] * r[k, i] + carry
                dh[k, i] = real if m[i] != 0.0 else gh[k, i]
    for k in range(nh):
        for i in range(n):
            dh0[c, k, i] = dh[k, i]
            dc0[c, k, i] = dc[k, i]
    if blas:
        blas_threads_local(old)


# ------------------------------------------------------------------------------- drivers
# One compiled driver per pass over the chunks: ``fwd``/``bwd`` in parallel (``prange``),
# ``fwd1``/``bwd1`` in a plain loop, used when there is a single chunk: a parallel region
# costs a fork/join per call, and on a machine busier than its cores (other jobs, or torch's
# own OpenMP threads) the join waits for every worker to be scheduled.
@njit(**_OPTS)
def fwd(kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last):
    """The forward recurrence (see :func:`_fwd_chunk`), chunks in parallel."""
    if _use_blas(w):
        for c in prange(xp.shape[0]):
            _fwd_chunk(c, kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last,
                       True)
    else:
        for c in prange(xp.shape[0]):
            _fwd_chunk(c, kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last,
                       False)


@njit(**_SER)
def fwd1(kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last):
    """:func:`fwd` in one thread."""
    blas = _use_blas(w)
    for c in range(xp.shape[0]):
        if blas:
            _fwd_chunk(c, kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last,
                       True)
        else:
            _fwd_chunk(c, kind, xp, h0, c0, w, bh, mask, rm, relu, hs, hrp, cs, gs, hh, last,
                       False)


@njit(**_OPTS)
def bwd(kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT, dcT,
        dxp, dhp, dh0, dc0):
    """BPTT (see :func:`_bwd_chunk`), chunks in parallel."""
    if _use_blas(w):
        for c in prange(hs.shape[0]):
            _bwd_chunk(c, kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT,
                       dcT, dxp, dhp, dh0, dc0, True)
    else:
        for c in prange(hs.shape[0]):
            _bwd_chunk(c, kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT,
                       dcT, dxp, dhp, dh0, dc0, False)


@njit(**_SER)
def bwd1(kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT, dcT,
         dxp, dhp, dh0, dc0):
    """:func:`bwd` in one thread."""
    blas = _use_blas(w)
    for c in range(hs.shape[0]):
        if blas:
            _bwd_chunk(c, kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT,
                       dcT, dxp, dhp, dh0, dc0, True)
        else:
            _bwd_chunk(c, kind, hs, h0, cs, c0, gs, hh, w, mask, rm, relu, dys, dlast, dhT,
                       dcT, dxp, dhp, dh0, dc0, False)


# ------------------------------------------------------------------------------- torch glue
_KIND = {"simple": 0, "lstm": 1, "gru": 2}


#: work per parallel chunk at least, in sequence-steps x gates*units x (units + 16) (the
#: recurrent product plus the element-wise work; about 0.3 ms on this machine's cores):
#: below it one thread runs the batch. A parallel pass costs a fork and a join, and when the
#: machine is busier than its cores the join waits for every worker to be scheduled.
MIN_CHUNK_WORK = 4_000_000


def chunking(batch: int, steps: int = 1, gates: int = 1, units: int = 1) -> tuple[int, int]:
    """``(C, L)``: up to one chunk per thread, each with at least :data:`MIN_CHUNK_WORK` of
    work (a training batch of 64 x 100 steps runs in one thread below 32 units, on two at 32
    units and above), ``L`` lanes each, a multiple of :data:`LANES`; ``C * L >= batch``
    (padding lanes are masked out)."""
    work = batch * steps * gates * (units + 16)
    nc = max(1, min(threads(), batch // LANES, work // MIN_CHUNK_WORK))
    per = -(-batch // nc)
    return nc, -(-per // LANES) * LANES


def to_lanes(x, nc: int, nl: int):
    """Batch-major ``(B, ...)`` -> chunk-major ``(C, ..., L)`` (zero padding lanes)."""
    import torch

    b = x.shape[0]
    if nc * nl != b:
        x = torch.cat([x, x.new_zeros((nc * nl - b, *x.shape[1:]))])
    x = x.reshape(nc, nl, *x.shape[1:])
    return x.permute(0, *range(2, x.dim()), 1).contiguous()


def from_lanes(x, batch: int):
    """Inverse of :func:`to_lanes`: ``(C, ..., L)`` -> ``(B, ...)`` (a view when possible)."""
    nd = x.dim()
    x = x.permute(0, nd - 1, *range(1, nd - 1))
    return x.reshape(-1, *x.shape[2:])[:batch]


def _np(t):
    return t.detach().numpy()


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """The contract of :mod:`rnnkit.kernels.fused` on batch-major torch tensors
    (``xp (B,T,G)``, ``h0, c0, rm (B,H)``, ``mask (B,T)``): returns ``(y, h_T, c_T, saved)``.
    With ``keep=False`` (no backward) only O(H B) scratch is kept per step."""
    import torch

    k = _KIND[kind]
    nb, nt, ng = xp.shape
    nh = h0.shape[1]
    nc, nl = chunking(nb, nt, ng, nh)
    kw = {"dtype": xp.dtype}
    xpl = to_lanes(xp.permute(0, 2, 1), nc, nl)           # (C, G, T, L)
    h0l = to_lanes(h0, nc, nl)
    c0l = to_lanes(c0, nc, nl) if k == 1 else torch.zeros((nc, nh, nl), **kw)
    maskl = to_lanes(mask, nc, nl)
    rml = to_lanes(rm, nc, nl)
    ntk = nt if keep else 1
    hs = torch.empty((nc, nh, nt, nl), **kw)
    hrp = torch.empty((nc, nh, ntk, nl), **kw)
    cs = torch.empty((nc, nh, ntk, nl) if k == 1 else (1, 1, 1, 1), **kw)
    gs = torch.empty((nc, ng, ntk, nl) if k else (1, 1, ntk, 1), **kw)
    hh = torch.empty((nc, nh, ntk, nl) if k == 2 else (1, 1, 1, 1), **kw)
    last = torch.empty((nc, nh, nl), **kw)
    run_threaded(fwd if nc > 1 else fwd1, k, _np(xpl), _np(h0l), _np(c0l), _np(w), _np(bh),
                 _np(maskl), _np(rml), relu, _np(hs), _np(hrp), _np(cs), _np(gs), _np(hh),
                 _np(last))
    if seq:
        y = from_lanes(hs, nb).transpose(1, 2) * mask.unsqueeze(-1).to(xp.dtype)
    else:
        y = from_lanes(last, nb)
    h_t = from_lanes(hs[:, :, -1], nb).contiguous()
    # the final cell (carried through masked steps); without keep, the one scratch row
    c_t = from_lanes(cs[:, :, -1], nb).contiguous() if k == 1 else torch.empty((0, 0), **kw)
    return y, h_t, c_t, (hs, hrp, cs, gs, hh, maskl, rml, h0l, c0l)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """BPTT; returns ``(dxp (B,T,G), dW_h, db_h, dh0, dc0)`` as torch tensors."""
    import torch

    hs, hrp, cs, gs, hh, maskl, rml, h0l, c0l = saved
    k = _KIND[kind]
    nc, nh, nt, nl = hs.shape
    nb = h0.shape[0]
    ng = w.shape[1]
    kw = {"dtype": hs.dtype}
    if seq:
        dys, dlast = to_lanes(dy.transpose(1, 2), nc, nl), torch.zeros((nc, nh, nl), **kw)
    else:
        dys, dlast = torch.zeros((1, 1, 0, 1), **kw), to_lanes(dy, nc, nl)
    dctl = to_lanes(dc_t, nc, nl) if k == 1 else torch.zeros((nc, nh, nl), **kw)
    dxp = torch.empty((nc, ng, nt, nl), **kw)
    dhp = torch.empty((nc, ng, nt, nl), **kw) if k == 2 else dxp
    dh0, dc0 = torch.empty((nc, nh, nl), **kw), torch.empty((nc, nh, nl), **kw)
    run_threaded(bwd if nc > 1 else bwd1, k, _np(hs), _np(h0l), _np(cs), _np(c0l), _np(gs),
                 _np(hh), _np(w), _np(maskl), _np(rml), relu, _np(dys), _np(dlast),
                 _np(to_lanes(dh_t, nc, nl)), _np(dctl), _np(dxp), _np(dhp), _np(dh0), _np(dc0))
    dw = torch.bmm(hrp.reshape(nc, nh, nt * nl),
                   dhp.reshape(nc, ng, nt * nl).transpose(1, 2)).sum(0)
    dbh = dhp.sum((0, 2, 3)) if k == 2 else torch.zeros((ng,), **kw)
    dxpb = from_lanes(dxp, nb).transpose(1, 2)                # (B, T, G)
    return dxpb, dw, dbh, from_lanes(dh0, nb), (from_lanes(dc0, nb) if k == 1 else None)
