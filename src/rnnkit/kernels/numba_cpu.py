"""Numerics shared by the compiled CPU kernels: branch-free ``tanh``/``sigmoid`` that
vectorise, Numba options, and the per-sequence row updates of each cell (one sequence, one
step) used by the BLAS kernel (:mod:`.blas`). The ``numba`` backend itself lives in
:mod:`.lanes` (batch in the vector lanes).

Row updates (``z`` = pre-activation ``xp_t + hr W_h``; states updated in place; the BLAS
kernel does LSTM's gate blocks itself)::

    SimpleRNN  h = act(z)
    GRU        g = [z, r, n] with n = tanh(xp_n + r (hr W_hn + b_hn));  h = z h + (1-z) n

and their backward counterparts (``*_row_bwd``), which give the gradient of the
pre-activations from the gradient reaching ``h`` (and ``c``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
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


# ---------------------------------------------------------------------------- rows
# One sequence, one step. Each loop writes one array (few alias checks), so LLVM vectorises
# it. ``z`` is the pre-activation (XP[b,t] + P[b]); state rows are updated in place.
@njit(inline="always", fastmath=_FM)
def _simple_row(z, h, relu):
    for j in range(h.shape[0]):
        h[j] = max(z[j], 0.0) if relu else ftanh(z[j])


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


# ---------------------------------------------------------------------------- threads
def threads() -> int:
    """Threads a kernel may use: torch's setting (the MKL GEMMs in the kernels follow it),
    capped by the size of Numba's pool."""
    import numba
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def run_threaded(kernel, *args):
    """``kernel(*args)`` with Numba's thread count following torch's. The first parallel
    launch of Numba's OpenMP layer resets OpenMP's thread count, so torch's is restored if
    it changed (else ``torch.set_num_threads(1)`` would be silently undone)."""
    import numba
    import torch

    n = torch.get_num_threads()
    numba.set_num_threads(threads())
    try:
        return kernel(*args)
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
