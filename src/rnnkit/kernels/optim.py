"""RMSprop and Adam updates of :mod:`rnnkit.train` in one compiled pass over memory, with
optional gradient clipping, shared by the fused classifier step (:mod:`.classifier`) and the
optimizers' ``step`` on CPU tensors. Keras rules, per parameter ``w`` with gradient ``g``::

    RMSprop (a = rho)            s1 <- a s1 + (1 - a) g^2;   w <- w - lr g / sqrt(s1 + eps)
    Adam (a, b = beta_1, beta_2) s1 <- s1 + (g - s1)(1 - a); s2 <- s2 + (g^2 - s2)(1 - b)
                                 w  <- w - lr sqrt(1 - b^t) / (1 - a^t) s1 / (sqrt(s2) + eps)
"""

from __future__ import annotations

import math

import torch
from numba import njit
from torch import Tensor

from .numba_cpu import _FM

_SER = {"cache": True, "fastmath": _FM, "nogil": True, "error_model": "numpy"}


@njit(**_SER)
def optimizer_kernel(adam, params, grads, s1, s2, lr, a, b, eps, t, clip_value, clip_norm):
    """Clip (each entry to +-clip_value, then the global norm to clip_norm; <= 0 = off) and
    update every parameter in place. RMSprop (a = rho): ``s1 <- a s1 + (1-a) g^2``,
    ``w <- w - lr g / sqrt(s1 + eps)``. Adam (a, b = beta_1, beta_2; step t):
    ``s1 <- s1 + (g - s1)(1-a)``, ``s2 <- s2 + (g^2 - s2)(1-b)``,
    ``w <- w - lr sqrt(1-b^t)/(1-a^t) s1 / (sqrt(s2) + eps)``."""
    if clip_value > 0.0:
        for j in range(len(grads)):
            g = grads[j]
            for i in range(g.size):
                g[i] = min(max(g[i], -clip_value), clip_value)
    if clip_norm > 0.0:
        sq = 0.0
        for j in range(len(grads)):
            g = grads[j]
            for i in range(g.size):
                sq += float(g[i]) * g[i]
        norm = math.sqrt(sq)
        if norm > clip_norm:
            scale = clip_norm / (norm + 1e-6)
            for j in range(len(grads)):
                g = grads[j]
                for i in range(g.size):
                    g[i] *= scale
    alpha = lr * math.sqrt(1.0 - b ** t) / (1.0 - a ** t) if adam else lr
    for j in range(len(params)):
        p, g, m, v = params[j], grads[j], s1[j], s2[j]
        if adam:
            for i in range(p.size):
                m[i] += (g[i] - m[i]) * (1.0 - a)
                v[i] += (g[i] * g[i] - v[i]) * (1.0 - b)
                p[i] -= alpha * m[i] / (math.sqrt(v[i]) + eps)
        else:
            for i in range(p.size):
                m[i] = a * m[i] + (1.0 - a) * g[i] * g[i]
                p[i] -= lr * g[i] / math.sqrt(m[i] + eps)


def update_in_place(adam: bool, p: Tensor, g: Tensor, s1: Tensor, s2: Tensor, lr: float,
                    a: float, b: float, eps: float, t: int) -> bool:
    """One parameter's RMSprop/Adam update by :func:`optimizer_kernel` (one pass over memory
    instead of torch's five element-wise ops), for :mod:`rnnkit.train`'s optimizers. Returns
    False, touching nothing, when the tensors are not dense contiguous CPU float32/float64
    tensors of one dtype (the caller then runs its torch ops)."""
    ts = (p, g, s1, s2)
    if p.dtype not in (torch.float32, torch.float64) or any(
            x.device.type != "cpu" or x.dtype != p.dtype or x.layout != torch.strided
            or not x.is_contiguous() or x.shape != p.shape for x in ts):
        return False
    v = tuple((x.detach().view(-1).numpy(),) for x in ts)
    optimizer_kernel(adam, v[0], v[1], v[2], v[3], lr, a, b, eps, t, 0.0, 0.0)
    return True
