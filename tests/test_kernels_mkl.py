"""The BLAS binding of the ``blas`` backend (rnnkit.kernels.mkl) and the backend on it.

Oracle: ``torch.mm`` for the GEMM (random shapes, both transposes, float32/float64, strided
row views); ``backend="reference"`` for the layers (as in test_kernels.py, here with units
above the numba threshold so the per-step GEMMs run on real sizes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from test_kernels import _build_same, _pair, assert_same

from rnnkit import GRU, LSTM, SimpleRNN, lengths_to_mask
from rnnkit.kernels import mkl

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@njit(cache=False)
def _gemm(a, b, c, ta, tb, alpha, beta):
    mkl.gemm(a, b, c, ta, tb, alpha, beta)


def _torch_has_blas() -> bool:
    import ctypes
    import os

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        return bool(lib.sgemm_) and bool(lib.dgemm_)
    except (OSError, AttributeError):
        return False


def test_source_is_torch_mkl_when_exported():
    assert mkl.SOURCE in ("mkl", "scipy")
    assert set(mkl.ADDRESSES) == {"rnnkit_sgemm", "rnnkit_dgemm", "rnnkit_blas_threads_local"}
    import os

    if _torch_has_blas() and not os.environ.get("RNNKIT_NO_MKL"):
        assert mkl.SOURCE == "mkl"


@SETTINGS
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 40), ta=st.booleans(),
       tb=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       beta=st.sampled_from([0.0, 1.0, 0.5]), pad=st.integers(0, 3), seed=st.integers(0, 99))
def test_gemm_matches_torch_mm(m, n, k, ta, tb, dtype, beta, pad, seed):
    rng = np.random.default_rng(seed)

    def mat(rows, cols):  # a row view of a wider array when pad > 0 (leading dim > cols)
        return rng.standard_normal((rows, cols + pad)).astype(dtype)[:, :cols]

    a = mat(k, m) if ta else mat(m, k)
    b = mat(n, k) if tb else mat(k, n)
    c = mat(m, n)
    want = (0.75 * (torch.from_numpy(a.T if ta else a).double()
                    @ torch.from_numpy(b.T if tb else b).double())
            + beta * torch.from_numpy(c).double())
    _gemm(a, b, c, ta, tb, 0.75, beta)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    torch.testing.assert_close(torch.from_numpy(c).double(), want, rtol=tol, atol=tol)


@njit(cache=False)
def _gemm_unchecked(a, b, c, ta, tb, alpha, beta):
    mkl.gemm_unchecked(a, b, c, ta, tb, alpha, beta)


@SETTINGS
@given(m=st.integers(1, 30), n=st.integers(1, 30), k=st.integers(1, 30), ta=st.booleans(),
       tb=st.booleans(), pad=st.integers(0, 3), seed=st.integers(0, 99))
def test_gemm_unchecked_matches_gemm(m, n, k, ta, tb, pad, seed):
    rng = np.random.default_rng(seed)

    def mat(rows, cols):
        return rng.standard_normal((rows, cols + pad)).astype(np.float32)[:, :cols]

    a = mat(k, m) if ta else mat(m, k)
    b = mat(n, k) if tb else mat(k, n)
    c = rng.standard_normal((m, n + pad)).astype(np.float32)
    c1, c2 = c.copy()[:, :n], c.copy()[:, :n]  # same layout, so MKL takes the same path
    _gemm(a, b, c1, ta, tb, 0.5, 1.0)
    _gemm_unchecked(a, b, c2, ta, tb, 0.5, 1.0)
    np.testing.assert_array_equal(c1, c2)


@njit(cache=False)
def _threads_local(n):
    return mkl.blas_threads_local(n)


def test_blas_threads_local_returns_and_restores():
    """The per-thread BLAS setting the lanes kernels use around their per-step GEMMs: set 1,
    get the previous value back, restore it (MKL: 0 means "follow the global setting");
    with SciPy's BLAS it is a no-op that echoes its argument."""
    old = _threads_local(1)
    assert _threads_local(old) == (1 if mkl.SOURCE == "mkl" else old)
    assert old >= 0


def test_gemm_rejects_bad_shapes_and_strides():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        _gemm(a, np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), False, False, 1.0,
              0.0)
    with pytest.raises(ValueError, match="contiguous"):
        _gemm(np.ones((3, 8), np.float32)[:, ::2], np.ones((4, 2), np.float32),
              np.ones((3, 2), np.float32), False, False, 1.0, 0.0)


def test_gemm_follows_torch_threads():
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        c = np.empty_like(a)
        _gemm(a, a, c, False, False, 1.0, 0.0)
        np.testing.assert_allclose(c, a @ a, rtol=1e-4, atol=1e-4)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)


CELLS = {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seq", [False, True])
def test_blas_large_units_match_reference(cell, dtype, seq):
    ref, fused = _pair(CELLS[cell], "auto", units=72, return_sequences=seq, return_state=True,
                       recurrent_dropout=0.2, go_backwards=seq)
    _build_same(ref, fused, 5, dtype)
    with torch.no_grad():  # keep activations out of saturation at 72 units
        for p in (*ref.parameters(), *fused.parameters()):
            p.mul_(0.2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 9, 5, generator=gen, dtype=dtype)
    mask = lengths_to_mask([9, 4, 0, 7, 1, 9], 9, padding="pre" if seq else "post")
    h0 = [torch.randn(6, 72, generator=gen, dtype=dtype) for _ in ref.cell.state_names]
    assert_same(ref, fused, x, h0, mask, out_tol=1e-5 if dtype == torch.float64 else 1e-4)
    assert fused.last_backend == "blas"


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_blas_inference_keeps_no_per_step_state(cell):
    from rnnkit.kernels import blas

    layer = CELLS[cell](70, return_state=True)
    layer.build(3)
    x = torch.randn(4, 11, 3)
    with torch.no_grad():
        xp = layer.cell.project_inputs(x).contiguous()
        state = layer.cell.initial_state(4, x)
        c0 = state[1] if cell == "lstm" else torch.empty((0, 0))
        gates = layer.cell.gates
        w = layer.cell.recurrent_kernel.contiguous()
        _, _, _, saved = blas.forward(cell, xp, w, torch.zeros(gates * 70), state[0], c0,
                                      torch.ones((4, 11), dtype=torch.uint8),
                                      torch.ones((4, 70)), False, False, keep=False)
    assert all(t.shape[0] == 1 for t in saved)  # no per-step states or gates
    with torch.no_grad():
        ref = CELLS[cell](70, return_state=True, backend="reference")
        ref.build(3)
        ref.load_state_dict(layer.state_dict())
        for a, b in zip(ref(x), layer(x), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
