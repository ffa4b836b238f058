"""Builds rnnkit's CPU kernels (``src/rnnkit/kernels/csrc``) as a plain shared library at
install time, loaded with ctypes by ``rnnkit.kernels.native``: nothing is compiled when a
model first runs. The build never fails the install: without a C compiler (or OpenMP) it
warns, and rnnkit runs its reference loop and torch.nn paths instead (``rnnkit.kernels.
native.why_unavailable`` says why)."""

from __future__ import annotations

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]


class BuildKernels(build_ext):
    """Compiles with OpenMP when the compiler has it, else without (one thread); on any
    failure leaves the library out and says so."""

    def get_ext_filename(self, fullname: str) -> str:
        # a plain library (no Python module init): not an importable extension name
        return os.path.join(*fullname.split(".")[:-1], "lib" + fullname.split(".")[-1] + ".so")

    def build_extension(self, ext: Extension) -> None:
        variant = list(ext.extra_compile_args or [])
        for extra in (["-fopenmp"], []):
            ext.extra_compile_args = FLAGS + variant + extra
            ext.extra_link_args = list(extra)
            try:
                super().build_extension(ext)
                return
            except Exception as err:  # noqa: BLE001 -- any compiler failure: try the next
                last = err
        print(f"rnnkit: the C kernels were not built ({last}); rnnkit will run its "
              "reference loop and torch.nn paths. Install a C compiler (gcc) and reinstall "
              "for the fast kernels.", file=sys.stderr)


def _kernels(name: str, flags: list[str]) -> Extension:
    return Extension(f"rnnkit.kernels.{name}", sources=["src/rnnkit/kernels/csrc/rnnkit_kernels.c"],
                     depends=["src/rnnkit/kernels/csrc/kernels.h",
                              "src/rnnkit/kernels/csrc/gemm_avx512.h"], libraries=["m"],
                     extra_compile_args=flags, optional=True)


# the baseline build runs on any CPU of the architecture; on x86-64 a second build with AVX2
# and FMA (8 float32 lanes, fused multiply-add) and a third with AVX-512 (16 lanes, and its
# own float32 GEMM, csrc/gemm_avx512.h) are loaded where the CPU has them
EXTENSIONS = [_kernels("rnnkit_kernels", [])]
if platform.machine().lower() in ("x86_64", "amd64"):
    EXTENSIONS.append(_kernels("rnnkit_kernels_avx2", ["-mavx2", "-mfma", "-DRK_VARIANT=1"]))
    EXTENSIONS.append(_kernels("rnnkit_kernels_avx512", [
        "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma",
        "-mprefer-vector-width=512", "-DRK_VARIANT=2"]))

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildKernels})
