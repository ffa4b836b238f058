"""Fused CPU recurrences with the batch in the vector lanes (the ``lanes`` backend).

The whole time loop, forward and backward (BPTT), is one call each into the compiled
kernels (``csrc/kernels.h``: ``rk_lanes_fwd``/``rk_lanes_bwd``, loaded by :mod:`.native`).
Every per-step array is stored ``(rows, batch)`` with the batch contiguous, so every inner
loop runs over sequences and the compiler puts 8 of them in one AVX register (small layers
have too few units to fill the lanes the other way round). The batch is split into one chunk
per thread (OpenMP); chunks are independent. Recurrent products go through BLAS (one thread per
chunk) from :data:`GEMM_MIN` recurrent weights, through a compiled loop below.

Per step ``t`` (processing order) and sequence ``b``, with the cells of :mod:`rnnkit.cells`::

    hr   = h_{t-1} * rm                       rm: recurrent-dropout mask (ones if none)
    z    = xp_t + hr W_h                       xp_t = x_t W_x + b, computed outside
    SimpleRNN  h_t = act(z)
    LSTM       i,f,g,o = sig(z_i), sig(z_f), tanh(z_g), sig(z_o);  c_t = f c + i g;
               h_t = o tanh(c_t)
    GRU        z,r = sig(xp_z + p_z), sig(xp_r + p_r);  n = tanh(xp_n + r p_n);
               h_t = z h_{t-1} + (1 - z) n             with p = hr W_h + b_h
    masked step (m_t = 0): the state is carried, h_t = h_{t-1}, and y_t = 0

Layouts (``G`` = gates * units): ``xp (G, T, B)``; saved for BPTT ``hs (H, T, B)`` (states)
and ``hrp (H, T, B)`` (``hr`` of each step), rows along time as the ``dW_h`` product reads
them; ``gs (T, G, B)`` (post-activation gates), ``cs (T, H, B)`` (LSTM cells) and
``hh (T, H, B)`` (GRU ``p_n``), one block per step, which the step works in place. The
backward returns ``dxp`` and
``dhp``, the gradient of the recurrent pre-activation ``hr W_h (+ b_h)`` (equal to ``dxp``
except in GRU's candidate block, ``dhp_n = dxp_n * r``); then
``dW_h = hrp^T dhp`` over all steps and sequences is one GEMM, done by the caller.
"""

from __future__ import annotations

import torch

from . import native
from .fused import KIND_CODE

LANES = 8  # float32 lanes of an AVX register: chunks are padded to a multiple of this
#: recurrent weights with at least this many entries (units x gates*units) take the per-step
#: products through BLAS (MKL, one thread per chunk: about 2x the compiled loop at 32 units);
#: smaller ones (SimpleRNN and GRU at 8 units) through the compiled loop, faster there
GEMM_MIN = native.GEMM_MIN


# ------------------------------------------------------------------------------- torch glue


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
    nc = max(1, min(native.threads(), batch // LANES, work // MIN_CHUNK_WORK))
    per = -(-batch // nc)
    return nc, -(-per // LANES) * LANES


def to_lanes(x, nc: int, nl: int):
    """Batch-major ``(B, ...)`` -> chunk-major ``(C, ..., L)`` (zero padding lanes)."""
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


_p = native.ptr


def forward(kind, xp, w, bh, h0, c0, mask, rm, relu, seq, keep=True):
    """The contract of :mod:`rnnkit.kernels.fused` on batch-major torch tensors
    (``xp (B,T,G)``, ``h0, c0, rm (B,H)``, ``mask (B,T)``): returns ``(y, h_T, c_T, saved)``.
    With ``keep=False`` (no backward) only O(H B) scratch is kept per step."""
    k = KIND_CODE[kind]
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
    cs = torch.empty((nc, ntk, nh, nl) if k == 1 else (1, 1, 1, 1), **kw)
    gs = torch.empty((nc, ntk, ng, nl) if k else (1, ntk, 1, 1), **kw)
    hh = torch.empty((nc, ntk, nh, nl) if k == 2 else (1, 1, 1, 1), **kw)
    last = torch.empty((nc, nh, nl), **kw)
    w, bh = w.detach().contiguous(), bh.detach().contiguous()
    native.fn("rk_lanes_fwd", xp.dtype)(
        min(nc, native.threads()), k, int(relu), nc, ng, nt, nl, nh, ntk, _p(xpl), _p(h0l),
        _p(c0l), _p(w), _p(bh), _p(maskl), _p(rml), _p(hs), _p(hrp), _p(cs), _p(gs), _p(hh),
        _p(last))
    if seq:
        y = from_lanes(hs, nb).transpose(1, 2) * mask.unsqueeze(-1).to(xp.dtype)
    else:
        y = from_lanes(last, nb)
    h_t = from_lanes(hs[:, :, -1], nb).contiguous()
    # the final cell (carried through masked steps); without keep, the one scratch row
    c_t = from_lanes(cs[:, -1], nb).contiguous() if k == 1 else torch.empty((0, 0), **kw)
    return y, h_t, c_t, (hs, hrp, cs, gs, hh, maskl, rml, h0l, c0l)


def backward(kind, saved, w, h0, c0, mask, rm, relu, dy, seq, dh_t, dc_t):
    """BPTT; returns ``(dxp (B,T,G), dW_h, db_h, dh0, dc0)`` as torch tensors."""
    hs, hrp, cs, gs, hh, maskl, rml, h0l, c0l = saved
    k = KIND_CODE[kind]
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
    dhtl = to_lanes(dh_t, nc, nl)
    w = w.detach().contiguous()
    native.fn("rk_lanes_bwd", hs.dtype)(
        min(nc, native.threads()), k, int(relu), int(seq), nc, ng, nt, nl, nh, _p(hs),
        _p(h0l), _p(cs), _p(c0l), _p(gs), _p(hh), _p(w), _p(maskl), _p(rml), _p(dys),
        _p(dlast), _p(dhtl), _p(dctl), _p(dxp), _p(dhp), _p(dh0), _p(dc0))
    dw = torch.bmm(hrp.reshape(nc, nh, nt * nl),
                   dhp.reshape(nc, ng, nt * nl).transpose(1, 2)).sum(0)
    dbh = dhp.sum((0, 2, 3)) if k == 2 else torch.zeros((ng,), **kw)
    dxpb = from_lanes(dxp, nb).transpose(1, 2)                # (B, T, G)
    return dxpb, dw, dbh, from_lanes(dh0, nb), (from_lanes(dc0, nb) if k == 1 else None)
