"""Row-major GEMM callable from Numba code, through the Fortran BLAS interface (``?gemm_``).

The BLAS comes from, in order of preference:

1. Intel MKL as linked into torch's CPU library (x86-64 wheels export ``sgemm_``/``dgemm_``
   from ``libtorch_cpu.so``): the BLAS torch itself runs, markedly faster than SciPy's
   OpenBLAS on the small per-step products of a recurrence (batch x units by units x gates).
2. SciPy's ``scipy.linalg.cython_blas`` (the BLAS Numba's ``np.dot`` calls), when torch
   exports no BLAS symbols (e.g. aarch64 or macOS builds).

The chosen addresses are registered with LLVM as the symbols ``rnnkit_sgemm`` and
``rnnkit_dgemm`` when this module is imported, and compiled code refers to them by name, so
``cache=True`` works (no ctypes function objects in the compiled code) and the cache stays
valid whichever library backs the symbols. Import this module before any compiled function
that calls :func:`gemm` is loaded from the cache.

MKL called this way uses torch's OpenMP runtime and thread count (``torch.set_num_threads``).
It is called from the serial part of the compiled kernels (never inside ``prange``).
"""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: where the registered symbols come from: ``"mkl"`` (torch's MKL) or ``"scipy"``
SOURCE: str | None = None
#: address of each registered symbol
ADDRESSES: dict[str, int] = {}


def _torch_blas() -> dict[str, int] | None:
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    if not os.path.exists(path):
        return None
    # torch is imported, so the library is already loaded; this only looks the names up
    try:
        lib = ctypes.CDLL(path)
        return {p: ctypes.cast(getattr(lib, f"{p}gemm_"), ctypes.c_void_p).value
                for p in ("s", "d")}
    except (OSError, AttributeError):
        return None


def _scipy_blas() -> dict[str, int] | None:
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    out = {}
    for p in ("s", "d"):
        cap = cython_blas.__pyx_capi__[f"{p}gemm"]
        out[p] = get_ptr(cap, get_name(cap))
    return out


def _threads_local(mkl: bool) -> int:
    """Address of ``int f(int)`` setting the calling thread's BLAS thread count and returning
    the previous one: with ``mkl``, MKL's ``MKL_Set_Num_Threads_Local``; otherwise, or where
    torch's library lacks it, a no-op of the same signature (libc's ``abs``: returns its
    argument for the values passed here; SciPy's BLAS keeps its own threads)."""
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    mkl_fn = ((path, "MKL_Set_Num_Threads_Local"),) if mkl else ()
    for lib, name in (*mkl_fn, (None, "abs")):
        try:
            return ctypes.cast(getattr(ctypes.CDLL(lib), name), ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    raise OSError("rnnkit.kernels.mkl: no function to register as rnnkit_blas_threads_local")


def register(prefer_mkl: bool = True) -> str | None:
    """Register ``rnnkit_sgemm``/``rnnkit_dgemm`` (and ``rnnkit_blas_threads_local``) with
    LLVM (done at import); returns the source (``"mkl"``, ``"scipy"``) or None when no BLAS
    was found (calls then fail to link). Re-registering changes the symbols only for code
    linked afterwards."""
    global SOURCE
    for name, find in (("mkl", _torch_blas), ("scipy", _scipy_blas)):
        if name == "mkl" and (not prefer_mkl or os.environ.get("RNNKIT_NO_MKL")):
            continue
        addrs = find()
        if addrs and all(addrs.values()):
            addrs = {f"rnnkit_{p}gemm": a for p, a in addrs.items()}
            addrs["rnnkit_blas_threads_local"] = _threads_local(name == "mkl")
            for sym, a in addrs.items():
                llvm.add_symbol(sym, a)
                ADDRESSES[sym] = a
            SOURCE = name
            return name
    return None


register()


# ------------------------------------------------------------------------------ Numba side
_I64 = ir.IntType(64)

#: ``blas_threads_local(n)``: the calling thread's BLAS threads become ``n`` (MKL counts
#: per thread); returns the previous count (0: "follow the global setting"). Compiled code
#: running per-step GEMMs inside its own parallel chunks sets 1 so that MKL does not start
#: OpenMP threads of its own under each chunk (torch's OpenMP runtime is not Numba's).
blas_threads_local = types.ExternalFunction("rnnkit_blas_threads_local",
                                            types.intc(types.intc))


@intrinsic
def _fortran_gemm(typingctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """``?gemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`` (column-major, every
    argument by pointer). ``a``, ``b``, ``c`` are arrays (their data pointers are passed);
    the integers are stored as 64-bit values: on a little-endian machine a 32-bit (LP64)
    BLAS reads the same value from their low half, so either integer width works."""
    dt = c.dtype
    if dt not in (types.float32, types.float64) or a.dtype != dt or b.dtype != dt:
        return None
    sig = types.void(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    name = "rnnkit_sgemm" if dt == types.float32 else "rnnkit_dgemm"

    def codegen(context, builder, signature, args):
        ta_, tb_, m_, n_, k_, al_, a_, lda_, b_, ldb_, be_, c_, ldc_ = args
        fty = context.get_value_type(dt)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i8p] + [_I64.as_pointer()] * 3
                               + [fty.as_pointer(), fty.as_pointer(), _I64.as_pointer(),
                                  fty.as_pointer(), _I64.as_pointer(), fty.as_pointer(),
                                  fty.as_pointer(), _I64.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)

        def ref(val, ty, sty):
            v = context.cast(builder, val, ty, sty)
            p = cgutils.alloca_once(builder, v.type)
            builder.store(v, p)
            return p

        def chr_(val, ty):
            v = builder.trunc(context.cast(builder, val, ty, types.int64), ir.IntType(8))
            p = cgutils.alloca_once(builder, ir.IntType(8))
            builder.store(v, p)
            return p

        def data(val, ty):
            return context.make_array(ty)(context, builder, val).data

        sa = signature.args
        builder.call(fn, [chr_(ta_, sa[0]), chr_(tb_, sa[1]),
                          ref(m_, sa[2], types.int64), ref(n_, sa[3], types.int64),
                          ref(k_, sa[4], types.int64), ref(al_, sa[5], dt),
                          data(a_, sa[6]), ref(lda_, sa[7], types.int64),
                          data(b_, sa[8]), ref(ldb_, sa[9], types.int64),
                          ref(be_, sa[10], dt), data(c_, sa[11]),
                          ref(ldc_, sa[12], types.int64)])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _ld(x):
    """Leading dimension of a 2-D array with unit stride along its rows (row stride in
    elements); raises if the rows are not contiguous."""
    isz = x.itemsize
    if x.shape[1] > 1 and x.strides[1] != isz:
        raise ValueError("gemm: rows must be contiguous")
    if x.shape[0] <= 1:
        return max(x.shape[1], 1)
    return max(x.strides[0] // isz, x.shape[1], 1)


@njit(inline="always")
def gemm_unchecked(a, b, c, ta=False, tb=False, alpha=1.0, beta=0.0):
    """:func:`gemm` without its checks (no exception path, so it may run inside ``prange``):
    the caller guarantees matching shapes and contiguous rows."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    isz = c.itemsize
    _fortran_gemm(84 if tb else 78, 84 if ta else 78, n, m, k, alpha,
                  b, max(b.strides[0] // isz, b.shape[1], 1),
                  a, max(a.strides[0] // isz, a.shape[1], 1),
                  beta, c, max(c.strides[0] // isz, c.shape[1], 1))


@njit(inline="always")
def gemm(a, b, c, ta=False, tb=False, alpha=1.0, beta=0.0):
    """Row-major ``c = alpha * op(a) @ op(b) + beta * c`` with ``op(x) = x.T if t else x``;
    2-D float32/float64 arrays whose rows are contiguous (views such as ``x[:, j:k]`` are
    fine). Runs as the column-major ``c^T = op(b)^T op(a)^T``."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if (a.shape[1] if ta else a.shape[0]) != m or (b.shape[0] if tb else b.shape[1]) != n \
            or (b.shape[1] if tb else b.shape[0]) != k:
        raise ValueError("gemm: shapes do not match")
    if m == 0 or n == 0:
        return
    _fortran_gemm(84 if tb else 78, 84 if ta else 78, n, m, k, alpha, b, _ld(b), a, _ld(a),
                  beta, c, _ld(c))
