"""RMSprop and Adam updates of :mod:`rnnkit.optimizers` in one compiled pass over memory
(``rk_optimizer`` of ``csrc/kernels.h``), with optional gradient clipping, shared by the fused
classifier step (:mod:`rnnkit.planner`) and the optimizers' ``step`` on CPU tensors. Keras
rules, per parameter ``w`` with gradient ``g``::

    RMSprop (a = rho)            s1 <- a s1 + (1 - a) g^2;   w <- w - lr g / sqrt(s1 + eps)
    Adam (a, b = beta_1, beta_2) s1 <- s1 + (g - s1)(1 - a); s2 <- s2 + (g^2 - s2)(1 - b)
                                 w  <- w - lr sqrt(1 - b^t) / (1 - a^t) s1 / (sqrt(s2) + eps)

Clipping (the fused step only): each entry to +-clip_value, then the global norm to
clip_norm (<= 0: off).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import native


def pointer_table(tensors) -> ctypes.Array:
    """A C array of the tensors' data addresses (the ``R **`` arguments of the kernels)."""
    return (ctypes.c_void_p * len(tensors))(*(native.ptr(t) for t in tensors))


def update_in_place(adam: bool, p: Tensor, g: Tensor, s1: Tensor, s2: Tensor, lr: float,
                    a: float, b: float, eps: float, t: int) -> bool:
    """One parameter's RMSprop/Adam update in one pass over memory (instead of torch's five
    element-wise ops), for :mod:`rnnkit.optimizers`. Returns False, touching nothing, when
    the kernels are unavailable or the tensors are not dense contiguous CPU float32/float64
    tensors of one dtype (the caller then runs its torch ops). Bumps the version counters of
    the tensors it wrote, as a torch in-place op would (caches keyed by them, such as
    :mod:`rnnkit.fold`'s inference table, then see the new values)."""
    ts = (p, g, s1, s2)
    if not native.available() or p.dtype not in (torch.float32, torch.float64) or any(
            x.device.type != "cpu" or x.dtype != p.dtype or x.layout != torch.strided
            or not x.is_contiguous() or x.shape != p.shape for x in ts):
        return False
    tables = [pointer_table([x]) for x in ts]
    sizes = (ctypes.c_int64 * 1)(p.numel())
    native.fn("rk_optimizer", p.dtype)(native.threads(), int(adam), 1, *tables, sizes, lr, a,
                                       b, eps, float(t), 0.0, 0.0)
    bump_versions((p, s1, s2))
    return True


def bump_versions(tensors) -> None:
    """Advance the version counter of each tensor written in place by compiled code (torch
    does it for its own in-place ops; autograd's saved-tensor checks and version-keyed
    caches rely on it)."""
    for t in tensors:
        if not t.is_inference():  # inference tensors have no version counter
            torch.autograd.graph.increment_version(t)
