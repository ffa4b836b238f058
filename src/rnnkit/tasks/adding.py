"""The adding problem (Hochreiter & Schmidhuber 1997), the classic test of long memory, and
the gradient demo built on it (``rnnkit diagnose --demo``).

Each sequence has ``T`` steps of two features: a value ``v_t ~ U(0, 1)`` and a marker
``m_t``, 1 at exactly two steps (one in each half) and 0 elsewhere. The target is the sum of
the two marked values, ``y = sum_t m_t v_t``. Predicting the constant 1 gives a mean squared
error of 1/6 (the variance of a sum of two uniforms); a prediction counts as correct when
``|yhat - y| < 0.04``. The first marker is up to ``T`` steps before the loss, so the task is
learnt only if the gradient reaches that far back.

:func:`run_demo` trains SimpleRNN (tanh and relu), LSTM and GRU of the same size briefly at
two lengths, records the per-step gradient norms (:mod:`rnnkit.diagnostics`) and the accuracy
reached, then a relu RNN with a too-large SGD rate with and without gradient clipping.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import io
from ..diagnostics import GradientMonitor, gradient_report
from ..layers import Dense
from ..recurrent import GRU, LSTM, SimpleRNN
from ..train import TrainingDiverged, fit, seed_everything


def adding_data(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences ``(n, length, 2)`` (value, marker) and their targets ``(n, 1)``."""
    if length < 2:
        raise ValueError("the adding problem needs length >= 2")
    v = torch.rand(n, length, generator=generator)
    m = torch.zeros(n, length)
    half = length // 2
    rows = torch.arange(n)
    m[rows, torch.randint(0, half, (n,), generator=generator)] = 1.0
    m[rows, torch.randint(half, length, (n,), generator=generator)] = 1.0
    return torch.stack([v, m], dim=-1), (v * m).sum(1, keepdim=True)


class AddingModel(nn.Module):
    """``rnn -> Dense(1)`` on the last state."""

    def __init__(self, rnn: nn.Module, units: int):
        super().__init__()
        self.rnn, self.out = rnn, Dense(1, input_size=units)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.rnn(x))


def mse(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).mean()


CELLS = {
    "SimpleRNN tanh": lambda u: SimpleRNN(u, input_size=2),
    "SimpleRNN relu": lambda u: SimpleRNN(u, input_size=2, activation="relu"),
    "LSTM": lambda u: LSTM(u, input_size=2),
    "GRU": lambda u: GRU(u, input_size=2),
}


def _train_one(make, units: int, x: Tensor, y: Tensor, probe: tuple[Tensor, Tensor],
               test: tuple[Tensor, Tensor], *, epochs: int, optimizer: str, lr: float,
               clip_norm: float | None, seed: int) -> dict[str, Any]:
    seed_everything(seed)
    model = AddingModel(make(units), units)
    mon = GradientMonitor((probe[0],), probe[1], mse, every=10)
    start = time.perf_counter()
    diverged = False
    try:
        hist = fit(model, x, y, loss="mse", metrics=(), optimizer=optimizer, lr=lr,
                   batch_size=64, epochs=epochs, callbacks=[mon], clip_norm=clip_norm,
                   seed=seed, verbose=0)
        losses = hist.history["loss"]
    except TrainingDiverged:
        diverged, losses = True, []
    rep = gradient_report(model, (probe[0],), probe[1], mse).layers[0]
    with torch.no_grad():
        pred = model(test[0])
        err = float(mse(pred, test[1]))
        acc = float(((pred - test[1]).abs() < 0.04).float().mean())
    norms = [max((v for v in r["weights"].values() if v is not None), default=math.nan)
             for r in mon.records]
    return {"test_mse": err if math.isfinite(err) else None, "accuracy": acc,
            "loss": losses, "diverged": diverged, "grad_h": rep.h,
            "ratio_first_last": rep.ratio(), "grad_norm_during_training": norms,
            "seconds": round(time.perf_counter() - start, 1)}


def run_demo(out_dir: str | Path, lengths: tuple[int, ...] = (50, 200), units: int = 16,
             samples: int = 4000, epochs: int = 16, seed: int = 0, say=print) -> dict[str, Any]:
    """Train every cell at every length (Adam 1e-2, batch 64), then the relu RNN at the
    longest length with SGD at rate 1.0 with and without ``clip_norm=1``; write
    ``gradients.png`` and ``diagnose.json`` into ``out_dir`` and return the results."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"units": units, "samples": samples, "epochs": epochs,
                               "seed": seed, "lengths": {}, "clipping": {}}
    for length in lengths:
        g = torch.Generator().manual_seed(seed + length)
        x, y = adding_data(samples, length, g)
        test = adding_data(1000, length, g)
        probe = (test[0][:64], test[1][:64])
        rows = {}
        for name, make in CELLS.items():
            r = _train_one(make, units, x, y, probe, test, epochs=epochs, optimizer="adam",
                           lr=1e-2, clip_norm=None, seed=seed)
            rows[name] = r
            ratio = r["ratio_first_last"]
            mse_txt = "diverged" if r["test_mse"] is None else f"{r['test_mse']:.4f}"
            say(f"T={length:4d} {name:15} accuracy {r['accuracy']:.3f}  test MSE {mse_txt}  "
                f"||dL/dh_1|| / ||dL/dh_T|| = "
                f"{'n/a' if ratio is None else f'{ratio:.2e}'}  ({r['seconds']} s)")
        results["lengths"][str(length)] = rows
    length = max(lengths)
    g = torch.Generator().manual_seed(seed + length)
    x, y = adding_data(samples, length, g)
    test = adding_data(1000, length, g)
    probe = (test[0][:64], test[1][:64])
    for label, clip in (("no clipping", None), ("--clip-norm 1", 1.0)):
        r = _train_one(CELLS["SimpleRNN relu"], units, x, y, probe, test, epochs=4,
                       optimizer="sgd", lr=1.0, clip_norm=clip, seed=seed)
        results["clipping"][label] = r
        big = max((v for v in r["grad_norm_during_training"] if math.isfinite(v)), default=0)
        last = r["loss"][-1] if r["loss"] else math.nan
        say(f"T={length:4d} SimpleRNN relu, SGD lr 1.0, {label:13}: final train loss "
            f"{last:.4g}  largest gradient norm {big:.3g}  accuracy {r['accuracy']:.3f}")
    plot_demo(results, out_dir / "gradients.png")
    io.atomic_write_json(out_dir / "diagnose.json", io.json_safe(results))
    return results


def plot_demo(results: dict[str, Any], path: str | Path) -> Path:
    """One panel per length: ``||dL/dh_t||`` over t on a log scale, one curve per cell;
    a last panel: the gradient norm during training of the relu RNN with and without
    clipping."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = list(results["lengths"])
    fig = Figure(figsize=(5 * (len(lengths) + 1), 4))
    FigureCanvasAgg(fig)
    for i, length in enumerate(lengths):
        ax = fig.add_subplot(1, len(lengths) + 1, i + 1)
        for name, r in results["lengths"][length].items():
            h = [v if v and v > 0 else float("nan") for v in r["grad_h"]]
            ax.semilogy(range(1, len(h) + 1), h, label=f"{name} (acc {r['accuracy']:.2f})")
        ax.set_title(f"adding problem, T={length}: gradient reaching each step", fontsize=9)
        ax.set_xlabel("time step t")
        ax.set_ylabel("||dL/dh_t||")
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, len(lengths) + 1, len(lengths) + 1)
    for label, r in results["clipping"].items():
        n = [v if math.isfinite(v) and v > 0 else float("nan")
             for v in r["grad_norm_during_training"]]
        ax.semilogy([10 * k for k in range(len(n))], n, label=f"relu, SGD 1.0, {label}")
    ax.set_title("exploding gradient: relu RNN, largest weight gradient", fontsize=9)
    ax.set_xlabel("training batch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
