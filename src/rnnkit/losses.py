"""Losses and metrics by name, Keras semantics: what ``fit(loss="...", metrics=[...])`` uses.

    binary_crossentropy       -mean(y log p + (1 - y) log(1 - p)),  p clipped to [eps, 1-eps]
    categorical_crossentropy  -mean(sum_k y_k log p_k)
    sparse_categorical_crossentropy  -mean(log p_y)
    mse / mae                 mean((p - y)^2) / mean(|p - y|)

Given the logits of the output layer (``logits=``), the cross-entropies are computed from them
exactly (log-sigmoid / log-softmax) instead of from clipped probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

_EPS = 1e-7

LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]


def _matching_targets(out: Tensor, y: Tensor, what: str = "") -> Tensor:
    """``y`` in ``out``'s dtype and shape (a missing trailing axis of 1 added); ValueError
    naming ``what`` targets when the shapes differ."""
    y = y.to(out.dtype)
    if y.dim() == out.dim() - 1 and out.shape[-1] == 1:
        y = y.unsqueeze(-1)
    if y.shape != out.shape:
        raise ValueError(f"{what}targets of shape {tuple(y.shape)} do not match outputs of "
                         f"shape {tuple(out.shape)}")
    return y


def _sparse_targets(out: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point():
        if not torch.all(y == y.round()):
            raise ValueError("sparse targets must be integer class ids")
        y = y.long()
    if y.dim() == out.dim() and y.shape[-1] == 1:
        y = y.squeeze(-1)
    if tuple(y.shape) != tuple(out.shape[:-1]):
        raise ValueError(f"sparse targets of shape {tuple(y.shape)} do not match outputs of "
                         f"shape {tuple(out.shape)} (expected {tuple(out.shape[:-1])})")
    return y.long()


def check_output(out: Any, loss: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise ValueError(f"loss {loss!r} needs a single output tensor; the model returned "
                         f"{type(out).__name__} (pass a callable loss)")
    return out


def binary_crossentropy(out: Tensor, y: Tensor, logits: Tensor | None = None) -> Tensor:
    """Mean ``-(y log p + (1-y) log(1-p))``; from ``logits`` when given (exact), else
    from ``p`` clipped to ``[1e-7, 1-1e-7]``."""
    y = _matching_targets(out, y, "binary ")
    if logits is not None:
        return nn.functional.binary_cross_entropy_with_logits(logits, y)
    p = out.clamp(_EPS, 1 - _EPS)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def categorical_crossentropy(out: Tensor, y: Tensor, logits: Tensor | None = None) -> Tensor:
    """Mean over samples of ``-sum_c y_c log p_c`` (one-hot or soft targets)."""
    y = y.to(out.dtype)
    if y.shape != out.shape:
        raise ValueError(f"categorical targets of shape {tuple(y.shape)} do not match outputs "
                         f"of shape {tuple(out.shape)} (use sparse_categorical_crossentropy "
                         "for integer class ids)")
    if logits is not None:
        logp = torch.log_softmax(logits, dim=-1)
    else:
        p = out / out.sum(-1, keepdim=True)  # Keras renormalises probabilities
        logp = torch.log(p.clamp(_EPS, 1 - _EPS))
    return -(y * logp).sum(-1).mean()


def sparse_categorical_crossentropy(out: Tensor, y: Tensor,
                                    logits: Tensor | None = None) -> Tensor:
    """Mean ``-log p[y]`` for integer class ids ``y``."""
    y = _sparse_targets(out, y)
    if logits is not None:
        logp = torch.log_softmax(logits, dim=-1)
    else:
        logp = torch.log(out.clamp(_EPS, 1 - _EPS))
    return -logp.gather(-1, y.unsqueeze(-1)).mean()


def mse(out: Tensor, y: Tensor, logits: Tensor | None = None) -> Tensor:
    """Mean squared error."""
    return ((out - _matching_targets(out, y)) ** 2).mean()


def mae(out: Tensor, y: Tensor, logits: Tensor | None = None) -> Tensor:
    """Mean absolute error."""
    return (out - _matching_targets(out, y)).abs().mean()


LOSSES: dict[str, Callable[..., Tensor]] = {
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "mse": mse,
    "mae": mae,
}
LOGIT_ACTIVATION = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax",
              "sparse_categorical_crossentropy": "softmax"}


def binary_accuracy(out: Tensor, y: Tensor) -> Tensor:
    y = _matching_targets(out, y, "binary ")
    return ((out > 0.5).to(out.dtype) == y).to(torch.float32).mean()


def categorical_accuracy(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(-1) == y.argmax(-1)).to(torch.float32).mean()


def sparse_categorical_accuracy(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(-1) == _sparse_targets(out, y)).to(torch.float32).mean()


def _auto_accuracy(out: Tensor, y: Tensor) -> Tensor:
    out = check_output(out, "accuracy")
    if not y.is_floating_point() and (y.dim() == out.dim() - 1 or
                                      (y.dim() == out.dim() and y.shape[-1] == 1
                                       and out.shape[-1] > 1)):
        return sparse_categorical_accuracy(out, y)
    if out.shape[-1] == 1:
        return binary_accuracy(out, y)
    return categorical_accuracy(out, y)


def _accuracy_for(loss: str | Callable) -> MetricFn:
    return {"binary_crossentropy": binary_accuracy,
            "categorical_crossentropy": categorical_accuracy,
            "sparse_categorical_crossentropy": sparse_categorical_accuracy,
            }.get(loss if isinstance(loss, str) else "", _auto_accuracy)


def resolve_metrics(metrics: Sequence[str] | Mapping[str, MetricFn] | None,
                    loss: str | Callable) -> dict[str, MetricFn]:
    """Metric names (or a dict of callables) -> ``{name: fn(outputs, targets)}``."""
    if not metrics:
        return {}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    if isinstance(metrics, str):
        metrics = (metrics,)
    out: dict[str, MetricFn] = {}
    for m in metrics:
        if callable(m):
            out[getattr(m, "__name__", f"metric_{len(out)}")] = m
        elif m in ("accuracy", "acc"):
            out[m] = _accuracy_for(loss)
        elif m in ("mse", "mae"):
            out[m] = LOSSES[m]
        else:
            raise ValueError(f"unknown metric {m!r}: use 'accuracy', 'mse', 'mae' or a dict "
                             "name -> callable")
    return out
