"""The compiled CPU kernels: ``librnnkit_kernels.so``, built from ``kernels/csrc`` by the
install step (``setup.py``) and loaded here with ctypes. Nothing is compiled at first use.

Entry points (each in a float32 ``_f32`` and a float64 ``_f64`` version; the shapes and
equations are documented beside their callers):

* ``rk_lanes_fwd`` / ``rk_lanes_bwd`` -- :mod:`.lanes`, the whole time loop of a small layer
  with the batch in the vector lanes, forward and BPTT;
* ``rk_blas_fwd`` / ``rk_blas_bwd`` -- :mod:`.blas`, one GEMM per step for large layers;
* ``rk_train_span`` / ``rk_infer`` -- :mod:`rnnkit.planner`, whole training steps and
  inference of the ``Embedding | OneHot -> RNN -> Dense`` classifier;
* ``rk_optimizer`` -- :mod:`.optim`, RMSprop / Adam updates with clipping;
* ``rk_gemm_call`` -- the row-major GEMM the kernels use (tests).

ctypes releases the GIL during every call. The kernels parallelise with OpenMP (the runtime
torch has loaded) over as many threads as the caller passes (:func:`threads`, torch's count).
Their BLAS is torch's MKL (``sgemm_``/``dgemm_`` exported by ``libtorch_cpu``), else SciPy's,
else a plain loop (:data:`BLAS`).

Three builds: the baseline, on x86-64 one with AVX2 + FMA, and one with AVX-512, the widest
the CPU has is loaded (``RNNKIT_BASELINE_KERNELS=1`` forces the baseline,
``RNNKIT_NO_AVX512=1`` stops at AVX2; :data:`PATH` says which was loaded). The AVX-512 build
carries its own float32 GEMM (``csrc/gemm_avx512.h``), used instead of MKL's where MKL would
not run AVX-512 code itself: MKL picks its kernels by CPU vendor and runs its AVX2 code on
other vendors' processors (on this project's AMD EPYC machine 90-100 GFLOP/s per core
against 185-240 for the own GEMM; docs/benchmarks.md). :data:`GEMM` says which is in use;
``RNNKIT_GEMM=blas`` or ``own`` chooses.

When the library is missing (no C compiler at install) or ``RNNKIT_NO_KERNELS`` is set,
:data:`LIB` is None, :func:`why_unavailable` says why, and the layers run the reference
loop or torch.nn (one warning per process, from :func:`warn_once`).
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from ctypes import c_double, c_int, c_int64, c_void_p
from pathlib import Path

import torch

ABI_VERSION = 6
#: the baseline build, and the AVX2 + FMA build loaded instead where the CPU has them
BASE_PATH = Path(__file__).with_name("librnnkit_kernels.so")
AVX2_PATH = Path(__file__).with_name("librnnkit_kernels_avx2.so")
AVX512_PATH = Path(__file__).with_name("librnnkit_kernels_avx512.so")
PATH = BASE_PATH
#: the float32 GEMM of the kernels: "own" (the AVX-512 build's) or "blas" (:data:`BLAS`)
GEMM: str = "blas"

#: where the kernels' BLAS comes from: "mkl" (torch's), "scipy", or "loop" (no BLAS found)
BLAS: str = "loop"
#: address of each BLAS function handed to the library
ADDRESSES: dict[str, int] = {}

_I, _L, _P, _D = c_int, c_int64, c_void_p, c_double


def _torch_lib() -> ctypes.CDLL | None:
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        return ctypes.CDLL(path) if os.path.exists(path) else None
    except OSError:
        return None


def _addr(lib, name: str) -> int | None:
    try:
        return ctypes.cast(getattr(lib, name), c_void_p).value
    except AttributeError:
        return None


def _scipy_blas() -> dict[str, int] | None:
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = c_void_p, [ctypes.py_object, ctypes.c_char_p]
    out = {}
    for p in ("s", "d"):
        cap = cython_blas.__pyx_capi__[f"{p}gemm"]
        out[f"{p}gemm"] = get_ptr(cap, get_name(cap))
    return out


def find_blas(prefer_mkl: bool = True) -> tuple[str, dict[str, int]]:
    """``(source, addresses)`` of ``sgemm``/``dgemm`` (Fortran interface) and, for MKL, of
    ``MKL_Set_Num_Threads_Local``: torch's MKL when ``libtorch_cpu`` exports it (x86-64
    wheels: the BLAS torch itself runs, markedly faster than OpenBLAS on the small per-step
    products), else SciPy's BLAS, else ``("loop", {})``."""
    if prefer_mkl and not os.environ.get("RNNKIT_NO_MKL"):
        lib = _torch_lib()
        if lib is not None:
            found = {p: _addr(lib, f"{p}gemm_") for p in ("s", "d")}
            if all(found.values()):
                out = {f"{p}gemm": a for p, a in found.items()}
                tl = _addr(lib, "MKL_Set_Num_Threads_Local")
                if tl:
                    out["threads_local"] = tl
                return "mkl", out
    sp = _scipy_blas()
    if sp and all(sp.values()):
        return "scipy", sp
    return "loop", {}


def _declare(lib: ctypes.CDLL) -> None:
    lib.rk_abi_version.restype = _I
    lib.rk_take_alloc_failure.restype = _I
    lib.rk_variant.restype = _I
    lib.rk_use_own_gemm.argtypes = [_I]
    lib.rk_use_own_gemm.restype = _I
    lib.rk_gemm_min.restype = _I
    lib.rk_has_openmp.restype = _I
    lib.rk_set_blas.argtypes = [_P, _P, _P]
    lib.rk_set_blas.restype = None
    lib.rk_blas_threads_local_call.argtypes = [_I]
    lib.rk_blas_threads_local_call.restype = _I
    sigs = {
        "rk_gemm_call": [_I, _I, _L, _L, _L, None, _P, _L, _P, _L, None, _P, _L],
        "rk_lanes_fwd": [_I, _I, _I, _L, _L, _L, _L, _L, _L] + [_P] * 13,
        "rk_lanes_bwd": [_I, _I, _I, _I, _L, _L, _L, _L, _L] + [_P] * 17,
        "rk_optimizer": [_I, _I, _L, _P, _P, _P, _P, _P] + [_D] * 7,
        "rk_train_span": [_P],
        "rk_infer": [_I, _I, _I, _I, _I, _L, _L] + [_P] * 6 + [_L] * 5 + [_P, _P],
        "rk_blas_fwd": [_I] * 7 + [_L] * 6 + [_P] * 15,
        "rk_blas_bwd": [_I, _I, _I, _I, _I, _L, _L, _L, _L] + [_P] * 13,
    }
    for name, args in sigs.items():
        for suffix, real in (("_f32", ctypes.c_float), ("_f64", c_double)):
            fn = getattr(lib, name + suffix)
            fn.argtypes = [real if a is None else a for a in args]
            fn.restype = None


def _variant_path(base: ctypes.CDLL) -> Path:
    """The widest build this CPU runs (the baseline library ``base`` asks the CPU)."""
    if os.environ.get("RNNKIT_BASELINE_KERNELS"):
        return BASE_PATH
    if (AVX512_PATH.exists() and base.rk_cpu_has_avx512()
            and not os.environ.get("RNNKIT_NO_AVX512")):
        return AVX512_PATH
    if AVX2_PATH.exists() and base.rk_cpu_has_avx2():
        return AVX2_PATH
    return BASE_PATH


def choose_gemm(variant: int, blas: str, intel: bool, setting: str | None) -> str:
    """``"own"`` or ``"blas"``: the AVX-512 build (``variant`` 2) takes its own GEMM unless
    the BLAS is MKL on an Intel CPU (which runs MKL's AVX-512 code); ``setting``
    (``RNNKIT_GEMM``) overrides where the build has the own GEMM."""
    if variant != 2:
        return "blas"
    if setting in ("own", "blas"):
        return setting
    return "blas" if blas == "mkl" and intel else "own"


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    global BLAS, ADDRESSES, PATH, GEMM
    if os.environ.get("RNNKIT_NO_KERNELS"):
        return None, "RNNKIT_NO_KERNELS is set"
    if not BASE_PATH.exists():
        return None, (f"{BASE_PATH.name} was not built at install (no C compiler?); install "
                      "gcc and reinstall rnnkit (pip install -e . or make venv) for the fast "
                      "path")
    try:
        PATH = BASE_PATH
        lib = ctypes.CDLL(str(PATH))
        PATH = _variant_path(lib)
        if PATH != BASE_PATH:
            lib = ctypes.CDLL(str(PATH))
        if lib.rk_abi_version() != ABI_VERSION:
            return None, (f"{PATH.name} is from another rnnkit version (ABI "
                          f"{lib.rk_abi_version()}, expected {ABI_VERSION}); reinstall rnnkit")
        _declare(lib)
    except (OSError, AttributeError) as err:
        return None, f"{PATH.name} could not be loaded: {err}"
    BLAS, ADDRESSES = find_blas()
    lib.rk_set_blas(ADDRESSES.get("sgemm"), ADDRESSES.get("dgemm"),
                    ADDRESSES.get("threads_local"))
    GEMM = choose_gemm(lib.rk_variant(), BLAS, bool(lib.rk_cpu_is_intel()),
                       os.environ.get("RNNKIT_GEMM"))
    lib.rk_use_own_gemm(int(GEMM == "own"))
    return lib, None


def use_own_gemm(on: bool) -> bool:
    """Switch the kernels' float32 GEMM between the own (AVX-512 build only) and the BLAS;
    returns whether the own one is now in use (tests run both)."""
    global GEMM
    if LIB is None:
        return False
    GEMM = "own" if LIB.rk_use_own_gemm(int(on)) else "blas"
    return GEMM == "own"


LIB, _WHY = _load()
#: per-step products of the lanes kernels go through BLAS from this many recurrent weights
GEMM_MIN = LIB.rk_gemm_min() if LIB is not None else 256
_warned = False


def available() -> bool:
    return LIB is not None


def why_unavailable() -> str | None:
    """None when the compiled kernels are loaded, else the reason."""
    return _WHY


def warn_once() -> None:
    """One warning per process that the fast path is missing, and how to get it."""
    global _warned
    if not _warned and _WHY is not None and not os.environ.get("RNNKIT_NO_KERNELS"):
        _warned = True
        warnings.warn(f"rnnkit: compiled CPU kernels unavailable: {_WHY}", RuntimeWarning,
                      stacklevel=3)


def fn(name: str, dtype):
    """The entry point ``name`` for ``dtype`` (torch or NumPy float32/float64), as a callable
    that raises MemoryError when the kernel could not allocate its scratch (it then leaves
    its outputs unwritten)."""
    if LIB is None:
        raise RuntimeError(f"rnnkit's compiled kernels are unavailable: {_WHY}")
    single = dtype in (torch.float32, "float32") or getattr(dtype, "name", None) == "float32"
    kernel = getattr(LIB, name + ("_f32" if single else "_f64"))

    def call(*args):
        kernel(*args)
        if LIB.rk_take_alloc_failure():
            raise MemoryError(f"rnnkit kernel {name}: out of memory for its scratch arrays")
    return call


def ptr(x) -> int:
    """Data address of a contiguous torch tensor or NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.data_ptr()
    return x.ctypes.data


def threads() -> int:
    """Threads a kernel may use: torch's setting (the MKL GEMMs follow it too); 1 without
    OpenMP."""
    if LIB is None or not LIB.rk_has_openmp():
        return 1
    return max(1, torch.get_num_threads())


def blas_threads_local(n: int) -> int:
    """The calling thread's BLAS threads become ``n`` (MKL counts per thread); returns the
    previous count (0: follow the global setting; always 0 without MKL)."""
    return LIB.rk_blas_threads_local_call(n) if LIB is not None else 0


def gemm(a, b, c, ta: bool = False, tb: bool = False, alpha: float = 1.0,
         beta: float = 0.0) -> None:
    """Row-major ``c = alpha op(a) op(b) + beta c`` (``op(x) = x.T`` when ``t``) on 2-D
    NumPy arrays with contiguous rows, through the kernels' BLAS (tests hold it to NumPy)."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if (a.shape[1] if ta else a.shape[0]) != m or (b.shape[0] if tb else b.shape[1]) != n \
            or (b.shape[1] if tb else b.shape[0]) != k:
        raise ValueError("gemm: shapes do not match")
    for x in (a, b, c):
        if x.ndim != 2 or (x.shape[1] > 1 and x.strides[1] != x.itemsize) or x.dtype != c.dtype:
            raise ValueError("gemm: 2-D arrays of one dtype with contiguous rows")

    def ld(x):
        return max(x.strides[0] // x.itemsize, x.shape[1], 1) if x.shape[0] > 1 \
            else max(x.shape[1], 1)
    fn("rk_gemm_call", c.dtype)(int(ta), int(tb), m, n, k, alpha, ptr(a), ld(a), ptr(b),
                                ld(b), beta, ptr(c), ld(c))


def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, ta: bool = False, tb: bool = False,
       beta: float = 0.0) -> torch.Tensor:
    """Row-major ``out = op(a) op(b) + beta out`` on 2-D torch tensors with contiguous rows
    (one dtype, CPU), through the kernels' GEMM (:data:`GEMM`); returns ``out``."""
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    if (a.shape[1] if ta else a.shape[0]) != m or (b.shape[0] if tb else b.shape[1]) != n \
            or (b.shape[1] if tb else b.shape[0]) != k:
        raise ValueError("mm: shapes do not match")

    def ld(x):
        if x.dim() != 2 or (x.shape[1] > 1 and x.stride(1) != 1) or x.dtype != out.dtype:
            raise ValueError("mm: 2-D tensors of one dtype with contiguous rows")
        return max(x.stride(0), x.shape[1], 1) if x.shape[0] > 1 else max(x.shape[1], 1)
    fn("rk_gemm_call", out.dtype)(int(ta), int(tb), m, n, k, 1.0, ptr(a), ld(a), ptr(b), ld(b),
                                  beta, ptr(out), ld(out))
    return out


if __name__ == "__main__":  # python -m rnnkit.kernels.native: what is loaded
    print(f"library: {PATH} ({'loaded' if LIB else 'unavailable: ' + str(_WHY)})")
    if LIB is not None:
        print(f"BLAS: {BLAS}; float32 GEMM: {GEMM}; OpenMP: {bool(LIB.rk_has_openmp())}; "
              f"threads: {threads()}")
    sys.exit(0 if LIB is not None else 1)
