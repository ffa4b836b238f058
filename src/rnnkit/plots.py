"""Training curves: :func:`plot_history` draws loss and a metric per epoch, train vs validation.

Two panels side by side: left ``loss`` and ``val_loss``; right the metric (``accuracy`` by
default, else the first logged key that is not a loss) and its ``val_`` counterpart. Epochs
are numbered from 1 on the x axis. The PNG is written atomically (temporary file in the same
directory, then ``os.replace``) with matplotlib's Agg canvas (no pyplot), so it works
without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .callbacks import Callback, History
from .io import atomic_path


def _as_dict(history: History | dict[str, Any]) -> dict[str, list[float]]:
    if isinstance(history, History):
        return history.history
    if isinstance(history, dict) and isinstance(history.get("history"), dict):
        return history["history"]  # History.to_dict() / history.json layout
    if isinstance(history, dict):
        return history
    raise TypeError(f"history must be a History or a dict of lists, got {type(history).__name__}")


def plot_history(history: History | dict[str, Any], path: str | os.PathLike,
                 metric: str | None = None, title: str | None = None) -> Path:
    """Save a PNG of the loss and ``metric`` curves (train and validation) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    h = _as_dict(history)
    if "loss" not in h or not h["loss"]:
        raise ValueError(f"history has no 'loss' values to plot (keys: {sorted(h)})")
    if metric is None:
        candidates = [k for k in h if not k.startswith("val_") and k not in ("loss", "lr")
                      and "/" not in k]
        metric = "accuracy" if "accuracy" in h else (candidates[0] if candidates else None)
    elif metric not in h:
        raise ValueError(f"metric {metric!r} is not in the history (keys: {sorted(h)})")

    lr = h.get("lr") or []
    panels = ["loss"] + ([metric] if metric else []) + (["lr"] if len(set(lr)) > 1 else [])
    fig = Figure(figsize=(5 * len(panels), 4), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k, style, label in ((key, "o-", "train"), (f"val_{key}", "s--", "validation")):
            if k in h and h[k]:
                ax.plot(range(1, len(h[k]) + 1), h[k], style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


class HistoryPlot(Callback):
    """Redraw the history PNG at ``path`` after every epoch, so a long run can be watched."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self.logs: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for k, v in (logs or {}).items():
            self.logs.setdefault(k, []).append(float(v))
        if self.logs.get("loss"):
            plot_history(self.logs, self.path)
