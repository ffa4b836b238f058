"""The compiled kernels' library (rnnkit.kernels.native): loading, its BLAS binding, the
fallback without it, and the ``blas`` backend on it.

Oracle: ``torch.mm`` for the GEMM (random shapes, both transposes, float32/float64, strided
row views); ``backend="reference"`` for the layers (as in test_kernels.py, here with units
above the lanes threshold so the per-step GEMMs run on real sizes).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import _build_same, _pair, assert_same

from rnnkit import GRU, LSTM, SimpleRNN, lengths_to_mask
from rnnkit.kernels import native

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _torch_has_blas() -> bool:
    import ctypes

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        return bool(lib.sgemm_) and bool(lib.dgemm_)
    except (OSError, AttributeError):
        return False


def test_library_is_built_by_the_install_and_loaded():
    """``make venv`` (pip install) compiles the kernels; nothing is compiled at first use."""
    assert native.available(), native.why_unavailable()
    assert native.PATH.exists()
    assert native.BLAS in ("mkl", "scipy")
    if _torch_has_blas() and not os.environ.get("RNNKIT_NO_MKL"):
        assert native.BLAS == "mkl"
        assert set(native.ADDRESSES) >= {"sgemm", "dgemm"}


def _gemms() -> list[str]:
    """The float32 GEMMs this machine's build has: the BLAS, and the AVX-512 build's own."""
    return ["blas", "own"] if native.LIB is not None and native.LIB.rk_variant() == 2 \
        else ["blas"]


def _check_gemm(m, n, k, ta, tb, dtype, beta, pad, seed):
    rng = np.random.default_rng(seed)

    def mat(rows, cols):  # a row view of a wider array when pad > 0 (leading dim > cols)
        return rng.standard_normal((rows, cols + pad)).astype(dtype)[:, :cols]

    a = mat(k, m) if ta else mat(m, k)
    b = mat(n, k) if tb else mat(k, n)
    c0 = mat(m, n)
    want = (0.75 * (torch.from_numpy(a.T if ta else a).double()
                    @ torch.from_numpy(b.T if tb else b).double())
            + beta * torch.from_numpy(c0).double())
    tol = 1e-4 if dtype == np.float32 else 1e-12
    was = native.GEMM
    try:
        for which in _gemms():
            native.use_own_gemm(which == "own")
            c = c0.copy()
            native.gemm(a, b, c, ta, tb, 0.75, beta)
            torch.testing.assert_close(torch.from_numpy(c).double(), want, rtol=tol,
                                       atol=tol * max(1.0, k ** 0.5), msg=which)
    finally:
        native.use_own_gemm(was == "own")


@SETTINGS
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 40), ta=st.booleans(),
       tb=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       beta=st.sampled_from([0.0, 1.0, 0.5]), pad=st.integers(0, 3), seed=st.integers(0, 99))
def test_gemm_matches_torch_mm(m, n, k, ta, tb, dtype, beta, pad, seed):
    _check_gemm(m, n, k, ta, tb, dtype, beta, pad, seed)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(m=st.integers(1, 140), n=st.integers(1, 200), k=st.integers(1, 600),
       ta=st.booleans(), tb=st.booleans(), beta=st.sampled_from([0.0, 1.0]),
       pad=st.integers(0, 2), seed=st.integers(0, 99))
def test_gemm_larger_shapes_match_torch_mm(m, n, k, ta, tb, beta, pad, seed):
    """Shapes past the own GEMM's tile edges (6 rows, 64 columns), its k blocks (256) and
    its dot-product path for ``a b^T`` (k >= 64), float32, with both BLAS and own GEMM."""
    _check_gemm(m, n, k, ta, tb, np.float32, beta, pad, seed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_large_product_on_threads_matches_torch_mm(threads, ta, tb):
    """Products above the own GEMM's threading size (2^20 multiply-adds) split their rows
    over threads; every row must still be written once."""
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        _check_gemm(100, 130, 200, ta, tb, np.float32, 1.0, 1, 7)
    finally:
        torch.set_num_threads(n)


def test_own_gemm_is_chosen_where_mkl_would_not_run_avx512():
    """The AVX-512 build takes its own GEMM unless the BLAS is MKL on an Intel CPU;
    ``RNNKIT_GEMM`` overrides; the other builds have no own GEMM."""
    assert native.choose_gemm(2, "mkl", False, None) == "own"
    assert native.choose_gemm(2, "mkl", True, None) == "blas"
    assert native.choose_gemm(2, "scipy", True, None) == "own"
    assert native.choose_gemm(2, "mkl", False, "blas") == "blas"
    assert native.choose_gemm(2, "mkl", True, "own") == "own"
    assert native.choose_gemm(1, "mkl", False, "own") == "blas"
    assert native.choose_gemm(0, "loop", False, None) == "blas"
    if native.LIB is not None:
        assert native.GEMM == native.choose_gemm(native.LIB.rk_variant(), native.BLAS,
                                                 bool(native.LIB.rk_cpu_is_intel()),
                                                 os.environ.get("RNNKIT_GEMM"))


def test_blas_threads_local_returns_and_restores():
    """The per-thread BLAS setting the lanes kernels use around their per-step GEMMs: set 1,
    get the previous value back, restore it (MKL: 0 means "follow the global setting");
    without MKL it is a no-op returning 0."""
    old = native.blas_threads_local(1)
    assert native.blas_threads_local(old) == (1 if "threads_local" in native.ADDRESSES else 0)
    assert old >= 0


def test_gemm_rejects_bad_shapes_and_strides():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        native.gemm(a, np.ones((3, 2), np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        native.gemm(np.ones((3, 8), np.float32)[:, ::2], np.ones((4, 2), np.float32),
                    np.ones((3, 2), np.float32))


def test_gemm_follows_torch_threads():
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        c = np.empty_like(a)
        native.gemm(a, a, c)
        np.testing.assert_allclose(c, a @ a, rtol=1e-4, atol=1e-4)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)


_FALLBACK = """
import warnings, torch
from rnnkit import GRU, Sequential, Embedding, Dense, train
from rnnkit.kernels import native
assert not native.available() and "RNNKIT_NO_KERNELS" in native.why_unavailable()
m = Sequential(Embedding(20, 4), GRU(6), Dense(1, activation="sigmoid"))
x = torch.randint(1, 20, (16, 5)); y = torch.randint(0, 2, (16,)).float()
h = train.fit(m, x, y, epochs=1, batch_size=8, verbose=0, optimizer="adam")
assert m[1].last_backend == "reference" and not h.params["fused_step"], h.params
assert train.predict(m, x).shape == (16, 1)
print("ok")
"""


def test_without_the_library_everything_runs_on_the_reference():
    """A machine where the install could not compile (simulated by RNNKIT_NO_KERNELS):
    layers, fit and predict still work, on the reference loop."""
    env = {**os.environ, "RNNKIT_NO_KERNELS": "1"}
    r = subprocess.run([sys.executable, "-c", _FALLBACK], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


def test_missing_library_warns_once_with_the_fix(monkeypatch):
    monkeypatch.setattr(native, "_WHY", "librnnkit_kernels.so was not built at install")
    monkeypatch.setattr(native, "_warned", False)
    with pytest.warns(RuntimeWarning, match="not built at install"):
        native.warn_once()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        native.warn_once()  # once per process


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


def test_scratch_allocation_failure_raises_instead_of_leaving_outputs_unwritten():
    """A kernel whose scratch cannot be allocated writes nothing; the call raises MemoryError
    (here: a layer of 2^40 units, refused by calloc before any array is touched)."""
    with pytest.raises(MemoryError, match="rk_lanes_fwd: out of memory"):
        native.fn("rk_lanes_fwd", torch.float32)(1, 0, 0, 1, 1, 1, 8, 1 << 40, 1, *[None] * 13)
    assert native.LIB.rk_take_alloc_failure() == 0  # the flag was cleared by the call


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell_cls", [LSTM, GRU])
def test_input_projection_on_the_kernels_gemm_matches_torch(cell_cls, bias):
    """``kernels.affine.project`` (the fused backends' ``x W_x + b``, on the own GEMM where
    it is in use): values and the gradients of x, W_x and b against torch's ``x @ W + b``,
    with each GEMM this build has; into a scratch tensor too (inference)."""
    from rnnkit.kernels import affine

    torch.manual_seed(0)
    layer = cell_cls(37, use_bias=bias)
    x0 = torch.randn(5, 11, 23)
    layer(x0)
    cell = layer.cell
    b = cell.input_bias()
    was = native.GEMM
    try:
        for which in _gemms():
            native.use_own_gemm(which == "own")
            assert affine.own_gemm_applies(x0, cell.kernel) == (which == "own")
            x = x0.clone().requires_grad_(True)
            got = affine.project(cell, x)
            g = torch.randn_like(got)
            got.backward(g)
            grads = [x.grad, cell.kernel.grad] + ([cell.bias.grad] if bias else [])
            x.grad = None
            cell.zero_grad()
            xr = x0.clone().requires_grad_(True)
            want = xr @ cell.kernel + (b if bias else 0)
            want.backward(g)
            wants = [xr.grad, cell.kernel.grad] + ([cell.bias.grad] if bias else [])
            cell.zero_grad()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=which)
            for a, w in zip(grads, wants, strict=True):
                torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-4, msg=which)
            buf = torch.full((5 * 11 * cell.kernel.shape[1] + 3,), float("nan"))
            with torch.no_grad():
                torch.testing.assert_close(affine.project(cell, x0, out=buf), want.detach(),
                                           rtol=1e-5, atol=1e-5, msg=which)
    finally:
        native.use_own_gemm(was == "own")
