"""See vanishing and exploding gradients: per-time-step gradient norms of every recurrent layer.

A recurrent layer applies the same weights at every step, so the gradient that reaches an
early state is a product of one Jacobian per later step::

    dL/dh_t = dL/dy_t + (dh_{t+1}/dh_t)^T dL/dh_{t+1}

For a plain tanh RNN ``dh_{t+1}/dh_t = diag(1 - h_{t+1}^2) W_h^T``: its norm is usually
below one, and ``||dL/dh_t||`` shrinks geometrically with the distance from the loss
(vanishing); with relu and a recurrent matrix of spectral radius above one it grows
(exploding). The LSTM's cell state ``c_t = f_t c_{t-1} + ...`` passes the gradient on
through the forget gate alone, which is how it holds.

:func:`gradient_report` measures, for one batch:

* ``||dL/dh_t||`` (Frobenius norm over the batch) for every processed step ``t`` of every
  recurrent layer, and ``||dL/dc_t||`` for an LSTM: the total derivative of the batch
  loss with respect to the state the cell computed at step ``t``, through every later use;
* ``||dL/dW||`` for every weight of the model;
* the fraction of saturated activations per layer: ``|tanh| > 0.99``, ``sigmoid < 0.01`` or
  ``> 0.99``, and for relu the fraction that is exactly 0 (no gradient passes).

It runs every recurrent layer on the reference loop (:func:`rnnkit.recurrent.reference_scan`)
with autograd, so the figures do not depend on which kernel trains the model. Steps are
counted in processing order (a ``go_backwards`` layer's step 1 is the last input);
masked steps have no gradient (the state is carried past them).

:class:`GradientMonitor` records the report every ``every`` batches of ``fit`` on a fixed
probe batch and warns when the gradient reaching step 1 is below ``vanish_ratio`` times the
last step's, or when a weight's gradient norm exceeds ``explode_norm``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .callbacks import Callback
from .recurrent import RNN

Loss = Callable[[Tensor, Tensor], Tensor]


def saturation(kind: str, a: Tensor) -> float:
    """Fraction of saturated entries: tanh ``|a| > 0.99``; sigmoid ``a < 0.01`` or
    ``a > 0.99``; relu ``a == 0`` (a dead unit passes no gradient)."""
    if kind == "tanh":
        s = a.abs() > 0.99
    elif kind == "sigmoid":
        s = (a < 0.01) | (a > 0.99)
    elif kind == "relu":
        s = a == 0
    else:
        raise ValueError(f"unknown activation kind {kind!r}")
    return float(s.float().mean()) if a.numel() else 0.0


@dataclass
class LayerReport:
    """Per-step gradient norms of one recurrent layer (processing order, step 1 first)."""

    name: str
    cell: str
    #: ``||dL/dh_t||`` for t = 1..T
    h: list[float]
    #: ``||dL/dc_t||`` (LSTM only)
    c: list[float] | None
    #: activation name -> saturated fraction over the batch's steps
    saturation: dict[str, float]

    def ratio(self) -> float | None:
        """``||dL/dh_1|| / ||dL/dh_T||``: how much of the last step's gradient reaches the
        first (None when the last step has none)."""
        last = self.h[-1] if self.h else 0.0
        return self.h[0] / last if last > 0 else None


@dataclass
class Report:
    """:func:`gradient_report`'s result; :meth:`to_dict` is JSON-safe."""

    loss: float
    layers: list[LayerReport]
    #: parameter name -> ``||dL/dW||``
    weights: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def safe(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"loss": safe(self.loss), "weights": {k: safe(v) for k, v in self.weights.items()},
                "layers": [{"name": r.name, "cell": r.cell, "grad_h": [safe(v) for v in r.h],
                            "grad_c": None if r.c is None else [safe(v) for v in r.c],
                            "ratio_first_last": r.ratio(), "saturation": r.saturation}
                           for r in self.layers]}

    def summary(self) -> str:
        """A few lines: per layer the first/last step ratio and the most saturated
        activation; the largest weight gradient."""
        lines = [f"loss {self.loss:.4g}"]
        for r in self.layers:
            ratio = r.ratio()
            sat = max(r.saturation.items(), key=lambda kv: kv[1]) if r.saturation else None
            lines.append(
                f"{r.name} ({r.cell}, {len(r.h)} steps): ||dL/dh|| step 1 {r.h[0]:.3g}, "
                f"step {len(r.h)} {r.h[-1]:.3g}, ratio "
                f"{'n/a' if ratio is None else f'{ratio:.3g}'}"
                + (f"; most saturated: {sat[0]} {sat[1]:.1%}" if sat else ""))
        if self.weights:
            name, big = max(self.weights.items(), key=lambda kv: kv[1])
            lines.append(f"largest weight gradient: {name} {big:.3g}")
        return "\n".join(lines)


class _Recorder:
    """Wraps one RNN's ``cell.step`` for one call: keeps each step's new state (with
    ``retain_grad``) and its gate activations."""

    def __init__(self, layer: RNN):
        self.layer = layer
        self.states: list[tuple[Tensor, ...]] = []
        self.sat: dict[str, list[float]] = {}
        self._step = layer.cell.step

    def step(self, xp: Tensor, state: tuple[Tensor, ...], rec_mask: Tensor | None = None
             ) -> tuple[Tensor, ...]:
        new = self._step(xp, state, rec_mask)
        for s in new:
            if s.requires_grad:
                s.retain_grad()
        self.states.append(new)
        with torch.no_grad():
            for name, (kind, a) in self.layer.cell.activations(xp, state, rec_mask).items():
                self.sat.setdefault(name, []).append(saturation(kind, a))
        return new


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[list[tuple[str, _Recorder]]]:
    """Within the block every :class:`RNN` of ``model`` runs the reference loop and records
    its steps; the backends and steps are restored afterwards."""
    recs: list[tuple[str, _Recorder]] = []
    saved = []
    for name, mod in model.named_modules():
        if isinstance(mod, RNN):
            rec = _Recorder(mod)
            saved.append((mod, mod.backend))
            mod.backend = "reference"
            mod.cell.step = rec.step  # instance attribute: shadows the class's step
            recs.append((name or type(mod).__name__, rec))
    try:
        yield recs
    finally:
        for mod, backend in saved:
            mod.backend = backend
            del mod.cell.step


def _norm(g: Tensor | None) -> float:
    return 0.0 if g is None else float(g.double().norm())


def gradient_report(model: nn.Module, inputs: tuple[Any, ...], target: Tensor, loss: Loss,
                    train_mode: bool = False) -> Report:
    """Per-step state gradients, weight gradients and saturation for one batch:
    ``L = loss(model(*inputs), target)``, differentiated by autograd on the reference loop.

    ``train_mode=False`` (default) evaluates without dropout. The model's parameters' ``.grad``
    are left as they were."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    before = {n: None if p.grad is None else p.grad.clone() for n, p in params}
    was = model.training
    model.train(train_mode)
    try:
        with torch.enable_grad(), recording(model) as recs:
            for _, p in params:
                p.grad = None
            out = model(*inputs)
            value = loss(out, target)
            value.backward()
        layers = []
        for name, rec in recs:
            if not rec.states:
                continue  # a layer the batch never reached
            kind = type(rec.layer.cell).__name__.replace("Cell", "")
            if kind == "SimpleRNN":
                kind += f" ({rec.layer.cell.activation})"
            h = [_norm(s[0].grad) for s in rec.states]
            c = [_norm(s[1].grad) for s in rec.states] if len(rec.states[0]) > 1 else None
            sat = {k: sum(v) / len(v) for k, v in rec.sat.items()}
            layers.append(LayerReport(name, kind, h, c, sat))
        weights = {n: _norm(p.grad) for n, p in params}
    finally:
        model.train(was)
        for n, p in params:
            p.grad = before[n]
    if not layers:
        raise ValueError("the model has no recurrent layer (rnnkit.recurrent.RNN) to diagnose")
    return Report(float(value.detach()), layers, weights)


def warnings_for(report: Report, vanish_ratio: float = 1e-6,
                 explode_norm: float = 1e3) -> list[str]:
    """Plain-language warnings: vanishing (step 1 gets under ``vanish_ratio`` of the last
    step's gradient) and exploding (a weight gradient norm over ``explode_norm``)."""
    out = []
    for r in report.layers:
        ratio = r.ratio()
        if ratio is not None and ratio < vanish_ratio:
            out.append(f"{r.name}: the gradient reaching step 1 is {ratio:.2g} of the last "
                       f"step's: the first steps barely learn (vanishing gradient; an LSTM or "
                       "GRU holds it)")
    for name, v in report.weights.items():
        if not math.isfinite(v) or v > explode_norm:
            out.append(f"{name}: gradient norm {v:.3g} (exploding gradient; try --clip-norm 1)")
    return out


class GradientMonitor(Callback):
    """Records :func:`gradient_report` on a fixed probe batch every ``every`` training
    batches (and at the first): ``self.records`` (and a JSON Lines log at ``log``, one
    object per record); each epoch's last record's step ratio per layer and largest weight
    gradient go into the epoch's logs (so into the history); each warning of
    :func:`warnings_for` is printed once to stderr and kept in ``self.warned``."""

    def __init__(self, inputs: tuple[Any, ...], target: Tensor, loss: Loss, every: int = 50,
                 log: str | Path | None = None, vanish_ratio: float = 1e-6,
                 explode_norm: float = 1e3):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be positive, got {every}")
        self.inputs, self.target, self.loss, self.every = inputs, target, loss, every
        self.log = Path(log) if log is not None else None
        self.vanish_ratio, self.explode_norm = vanish_ratio, explode_norm
        self.records: list[dict[str, Any]] = []
        self.warned: list[str] = []
        self._warned_keys: set[str] = set()
        self._batches = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._batches % self.every == 0:
            self._record()
        self._batches += 1

    def _record(self) -> None:
        assert self.model is not None
        rep = gradient_report(self.model, self.inputs, self.target, self.loss)
        rec = {"epoch": self._epoch, "batch": self._batches, **rep.to_dict()}
        self.records.append(rec)
        if self.log is not None:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        for w in warnings_for(rep, self.vanish_ratio, self.explode_norm):
            key = w.split(":")[0] + (" vanishing" if "vanishing" in w else " exploding")
            if key not in self._warned_keys:
                self._warned_keys.add(key)
                self.warned.append(w)
                print(f"rnnkit: warning: {w}", file=sys.stderr)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or not self.records:
            return
        last = self.records[-1]
        for layer in last["layers"]:
            if layer["ratio_first_last"] is not None:
                logs[f"grad_ratio/{layer['name']}"] = layer["ratio_first_last"]
        norms = [v for v in last["weights"].values() if v is not None]
        if norms:
            logs["grad_norm_max"] = max(norms)
