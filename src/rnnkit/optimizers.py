"""Optimizers with Keras 3's update rules (the same numbers as Keras for the same gradients),
and :func:`make_optimizer` (a name, an instance or a factory).

    RMSprop:  v <- rho v + (1 - rho) g^2;   w <- w - lr g / sqrt(v + eps)
    Adam:     m <- m + (g - m)(1 - b1);  v <- v + (g^2 - v)(1 - b2)
              w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

On the CPU each update runs in one compiled pass (:func:`rnnkit.kernels.optim.update_in_place`)
when it can; the fused training step reads the same hyper-parameters from ``param_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from .kernels.optim import update_in_place


class _KerasOptimizer(torch.optim.Optimizer):
    """The loop both optimizers share: the closure, then :meth:`_update` on every parameter
    that has a gradient."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, self.state[p], group)
        return loss

    def _update(self, p: torch.Tensor, g: torch.Tensor, st: dict, group: dict) -> None:
        raise NotImplementedError


class RMSprop(_KerasOptimizer):
    """Keras 3 RMSprop: ``v <- rho v + (1-rho) g^2``; ``w <- w - lr g / sqrt(v + eps)``
    (with ``momentum``: ``m <- momentum m + lr g / sqrt(v + eps)``, ``w <- w - m``)."""

    def __init__(self, params, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                 momentum: float = 0.0):
        if lr < 0 or not 0.0 <= rho < 1.0 or eps < 0 or momentum < 0:
            raise ValueError(f"invalid RMSprop settings lr={lr}, rho={rho}, eps={eps}, "
                             f"momentum={momentum}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "momentum": momentum})

    def _update(self, p, g, st, group):
        lr, rho, eps, mom = group["lr"], group["rho"], group["eps"], group["momentum"]
        if not st:
            st["velocity"] = torch.zeros_like(p)
            if mom > 0:
                st["momentum"] = torch.zeros_like(p)
        v = st["velocity"]
        if mom == 0 and update_in_place(False, p, g, v, v, lr, rho, 0.0, eps, 0):
            return  # the same update in one compiled pass (CPU)
        v.mul_(rho).addcmul_(g, g, value=1 - rho)
        denom = v.add(eps).sqrt_()  # one temporary: large embeddings are memory-bound
        if mom > 0:
            m = st["momentum"]
            m.mul_(mom).addcdiv_(g, denom, value=lr)
            p.sub_(m)
        else:
            p.addcdiv_(g, denom, value=-lr)


class Adam(_KerasOptimizer):
    """Keras 3 Adam: ``m <- m + (g - m)(1-b1)``, ``v <- v + (g^2 - v)(1-b2)``,
    ``w <- w - lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``."""

    def __init__(self, params, lr: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 eps: float = 1e-7):
        if lr < 0 or not 0.0 <= beta_1 < 1.0 or not 0.0 <= beta_2 < 1.0 or eps < 0:
            raise ValueError(f"invalid Adam settings lr={lr}, beta_1={beta_1}, "
                             f"beta_2={beta_2}, eps={eps}")
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2, "eps": eps})

    def _update(self, p, g, st, group):
        lr, b1, b2, eps = group["lr"], group["beta_1"], group["beta_2"], group["eps"]
        if not st:
            st["step"] = 0
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        m, v = st["m"], st["v"]
        if update_in_place(True, p, g, m, v, lr, b1, b2, eps, t):
            return  # the same update in one compiled pass (CPU)
        m.lerp_(g, 1 - b1)                        # m + (g - m)(1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)   # v + (g^2 - v)(1 - b2)
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-alpha)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rmsprop": RMSprop,
    "adam": Adam,
    "sgd": torch.optim.SGD,
}


def make_optimizer(optimizer: str | torch.optim.Optimizer | Callable, params: Iterable,
                   lr: float = 1e-3) -> torch.optim.Optimizer:
    """An optimizer from a name (``rmsprop``/``adam``/``sgd``), an instance or a factory."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, an Optimizer or "
                             f"a factory, got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        return OPTIMIZERS[key](params, lr=lr)
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory returned {type(opt).__name__}, not an Optimizer")
        return opt
    raise TypeError(f"optimizer must be a name, an Optimizer or a factory, got {optimizer!r}")
